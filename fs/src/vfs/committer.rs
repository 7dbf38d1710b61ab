//! The background committer: coalesces bursts of operations into one root.
//!
//! It sleeps until an operation changes something, then waits for a quiet
//! period (no change for `quiet`) but never longer than `max_delay` after
//! the first change, and commits. An untar becomes a root or two per
//! second, not one per file; a single save is committed `quiet` later.
//! A file open and being written is left out until it is closed, synced
//! or quiet ([`Vfs::commit_background`]): no half-written versions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CommitInfo, Defer, Vfs};
use crate::error::Error;

/// How long the final commit at unmount waits for a full disk to get
/// room before it gives up (then what was not saved is named in the log).
/// Bounded: a shutdown must end (systemd kills a stop after 90 s).
pub(crate) const FINAL_WAIT: Duration = Duration::from_secs(60);

/// How often the final commit looks again while it waits.
const FINAL_RETRY: Duration = Duration::from_millis(250);

/// Whether `e` is a full disk (the store's reserve or the engine's own
/// failure): worth waiting for, and said once, not at every retry.
fn is_full_disk(e: &Error) -> bool {
    e.errno() == libc::ENOSPC
}

/// A running committer thread; stops (after a last commit) when dropped.
pub struct Committer {
    stop: Arc<AtomicBool>,
    vfs: Arc<Vfs>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts committing `vfs` in the background; `on_commit` is called
    /// (on the committer thread, holding no vfs lock) after each commit.
    pub fn spawn(
        vfs: Arc<Vfs>,
        quiet: Duration,
        max_delay: Duration,
        on_commit: impl Fn(&CommitInfo) + Send + 'static,
    ) -> std::io::Result<Committer> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (vfs, stop) = (vfs.clone(), stop.clone());
            std::thread::Builder::new()
                .name("backer-commit".into())
                .spawn(move || run(&vfs, &stop, quiet, max_delay, &on_commit))?
        };
        Ok(Committer {
            stop,
            vfs,
            thread: Some(thread),
        })
    }
}

fn run(
    vfs: &Vfs,
    stop: &AtomicBool,
    quiet: Duration,
    max_delay: Duration,
    on_commit: &dyn Fn(&CommitInfo),
) {
    let mut committed = 0u64;
    let defer = Defer::default();
    let mut retry: Option<Duration> = None;
    // Whether the last commit failed (a full disk is said once, not at
    // every retry).
    let mut failing = false;
    loop {
        // Sleep until something changed. Operations wake us only while we
        // sleep here (`committer_asleep`): waking a thread per operation
        // cost as much as the operations themselves on two CPUs.
        {
            let mut g = vfs.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            let since = Instant::now();
            loop {
                vfs.committer_asleep.store(true, Ordering::SeqCst);
                if vfs.change_count() != committed || stop.load(Ordering::SeqCst) {
                    break;
                }
                // Something was left out: look again once it may be quiet.
                if let Some(after) = retry {
                    let left = after.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    g = vfs
                        .wake
                        .1
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                g = vfs.wake.1.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            vfs.committer_asleep.store(false, Ordering::SeqCst);
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Wait until no change for `quiet`, bounded by max_delay: sleep
        // exactly until `quiet` after the last change (only a stop ends a
        // wait early).
        let first = Instant::now();
        loop {
            let left = max_delay.saturating_sub(first.elapsed());
            let calm = vfs.since_last_change();
            if left.is_zero() || calm >= quiet || stop.load(Ordering::SeqCst) {
                break;
            }
            let g = vfs.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            let _ = vfs.wake.1.wait_timeout(g, (quiet - calm).min(left));
        }
        let seen = vfs.change_count();
        committed = seen;
        retry = None;
        match vfs.commit_background(defer) {
            Ok((info, left_out)) => {
                if failing {
                    tracing::info!("committing works again");
                    failing = false;
                }
                if let Some(info) = info {
                    on_commit(&info);
                }
                if left_out {
                    retry = Some(defer.quiet);
                }
            }
            Err(e) => {
                // Try again at the pace of a left-out file (not at once:
                // a failing disk would make it a hot loop).
                if !failing || !is_full_disk(&e) {
                    tracing::error!(error = %e, "background commit failed: retried");
                }
                failing = true;
                // What operations changed is in the live namespace: make
                // that durable even when no commit can be made (it uses
                // the reserve the gate kept for this); the next commit
                // folds it.
                let _ = vfs.store().flush_durable();
                retry = Some(defer.quiet);
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.vfs.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            self.vfs.wake.1.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        final_commit(&self.vfs, FINAL_WAIT);
    }
}

/// The last commit before the node stops: on a full disk it waits, up to
/// `wait`, for room (one log line), since what is not saved now is lost
/// with the process. A commit that cannot be made still saves the live
/// namespace (a remount folds it).
pub(crate) fn final_commit(vfs: &Vfs, wait: Duration) {
    let start = Instant::now();
    let mut said = false;
    loop {
        let e = match vfs.commit_durable() {
            Ok(_) => {
                if said {
                    tracing::info!("the disk has room again: the last changes are saved");
                }
                return;
            }
            Err(e) => e,
        };
        if is_full_disk(&e) && start.elapsed() < wait {
            if !said {
                tracing::warn!(
                    error = %e,
                    "the disk is full: waiting up to {}s for free space to save the last changes \
                     (free some space on the disk holding the store)",
                    wait.as_secs()
                );
                said = true;
            }
            std::thread::sleep(FINAL_RETRY);
            continue;
        }
        // Not a commit: the namespace alone, so operations that were
        // acknowledged reach the disk even without a new root.
        let saved = vfs.store().flush_durable();
        tracing::error!(
            error = %e,
            namespace_saved = saved.is_ok(),
            "final commit failed: changes since the last commit are {}",
            if saved.is_ok() {
                "saved and will be committed at the next mount"
            } else {
                "lost"
            }
        );
        return;
    }
}
