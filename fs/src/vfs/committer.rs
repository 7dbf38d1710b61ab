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
                tracing::error!(error = %e, "background commit failed: retried");
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
        if let Err(e) = self.vfs.commit_durable() {
            tracing::error!(error = %e, "final commit failed");
        }
    }
}
