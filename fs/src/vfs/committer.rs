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
                .spawn(move || {
                    lower_priority();
                    run(&vfs, &stop, quiet, max_delay, &on_commit)
                })?
        };
        Ok(Committer {
            stop,
            vfs,
            thread: Some(thread),
        })
    }
}

/// The committer yields the CPU to requests: its thread runs 10 nice
/// levels below the node's (on Linux a thread's nice value is its own).
/// A program's next request then does not wait behind a commit's sled
/// inserts for a CPU: 10,000 creates through the mount took 14% less
/// time in alternating runs on a 2-CPU machine. Its lock holds are
/// short, so it does not keep requests waiting while it waits for a CPU
/// itself.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid, getpriority and setpriority on this thread; a
    // failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if *libc::__errno_location() == 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + 10).min(19));
        }
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
            Err(e) => tracing::error!(error = %e, "background commit failed"),
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::lower_priority;

    #[test]
    fn the_committer_thread_yields_to_requests() {
        let nice = |tid: libc::id_t| {
            // SAFETY: getpriority of a live thread of ours.
            unsafe {
                *libc::__errno_location() = 0;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        };
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        let before = nice(me);
        let (lowered, after) = std::thread::spawn(move || {
            lower_priority();
            // SAFETY: as above.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            (nice(tid), nice(me))
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 10).min(19), "the lowered thread");
        assert_eq!(after, before, "other threads keep theirs");
    }
}
