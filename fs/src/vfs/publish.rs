//! The one "root published" event (DESIGN.md, "Traps": publishing a root,
//! kernel cache notifications): the observer given to
//! [`Vfs::observe_roots`] hears of a committed root only once the store
//! holds it durably, never with the vfs lock held, newest last, and, for
//! an installed merge, only after the install's [`Installed`] was let go
//! (on a mount, after the kernel was told to drop what it cached).
//!
//! Whoever makes the store durable publishes: [`Vfs::make_durable`] notes
//! the newest commit before it flushes, and [`Vfs::publish`] then tells
//! it. Commits that nobody flushed yet wait for the next flush (the
//! background committer's, an fsync's).
//!
//! [`Installed`]: super::Installed

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::{CommitInfo, Vfs};
use crate::error::Result;

/// Called with every new durable root (see [`Vfs::observe_roots`]).
pub type RootObserver = Arc<dyn Fn(&CommitInfo) + Send + Sync>;

/// A commit that is durable, not yet published (from
/// [`Vfs::make_durable`], for [`Vfs::publish`]).
#[must_use = "publish it, or peers hear of it only at the next flush"]
#[derive(Debug)]
pub struct Durable(Option<CommitInfo>);

/// Keeps an installed merge's root (and every later one) from being
/// published while it lives: it rides in [`super::Installed`], which the
/// caller lets go once the kernel's caches were told.
#[derive(Clone, Debug)]
pub struct Hold(#[allow(dead_code)] Arc<HoldToken>);

impl PartialEq for Hold {
    fn eq(&self, _: &Hold) -> bool {
        true
    }
}

impl Eq for Hold {}

#[derive(Debug)]
pub(super) struct HoldToken(Arc<AtomicU64>);

impl Drop for HoldToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The publishing state of a vfs.
#[derive(Default)]
pub(super) struct Announcer {
    /// The newest durable commit not yet told.
    offered: Mutex<Option<CommitInfo>>,
    /// Held by the one thread telling, for as long as it tells.
    telling: Mutex<()>,
    /// The observer and the last sequence number told: locked only to
    /// read or change them, never while the observer runs (which may
    /// replace itself).
    told: Mutex<Told>,
    /// Installs not yet let go.
    holds: Arc<AtomicU64>,
}

#[derive(Default)]
struct Told {
    seq: u64,
    observer: Option<RootObserver>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Announcer {
    /// A hold for an install (under the vfs lock, as it commits).
    pub(super) fn hold(&self) -> Hold {
        self.holds.fetch_add(1, Ordering::SeqCst);
        Hold(Arc::new(HoldToken(self.holds.clone())))
    }

    fn offer(&self, info: CommitInfo) {
        let mut o = lock(&self.offered);
        if o.as_ref().is_none_or(|o| o.seq < info.seq) {
            *o = Some(info);
        }
    }

    fn held(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    /// Tells the observer what was offered. One thread tells at a time,
    /// in order; another (or the observer itself, publishing from inside)
    /// leaves its offer to the one telling.
    ///
    /// An offer is taken first and the holds looked at after: an install
    /// takes its hold before it offers its root, so a root taken while
    /// its install is not let go is seen held, and put back for the next
    /// publish (looking first, then taking, could take a root held in
    /// between).
    fn tell(&self) {
        loop {
            let telling = match self.telling.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            loop {
                // Its own statement: the offer lock must not be held while
                // the observer runs (it may offer).
                let taken = lock(&self.offered).take();
                let Some(info) = taken else {
                    break;
                };
                if self.held() {
                    self.offer(info);
                    break;
                }
                let observer = {
                    let mut told = lock(&self.told);
                    if info.seq <= told.seq {
                        continue;
                    }
                    told.seq = info.seq;
                    told.observer.clone()
                };
                if let Some(f) = observer {
                    f(&info);
                }
            }
            drop(telling);
            // An offer made while this thread told but after it looked.
            if self.held() || lock(&self.offered).is_none() {
                return;
            }
        }
    }
}

impl Vfs {
    /// Calls `f` with every new committed root from now on, whoever made
    /// it (the committer, an fsync, an installed merge), once it is
    /// durable, with no vfs lock held, in commit order (a root committed
    /// and flushed right after another may be told alone: the newest is
    /// what counts). `f` may call the vfs; a durable commit it makes is
    /// told after it returns. Replaces any earlier observer (also when
    /// called from inside the observer: the next root goes to the new one).
    pub fn observe_roots(&self, f: impl Fn(&CommitInfo) + Send + Sync + 'static) {
        let seq = self.lock().head.seq;
        let mut told = lock(&self.announce.told);
        told.observer = Some(Arc::new(f));
        told.seq = told.seq.max(seq);
    }

    /// Makes the store durable (pack bytes, then the engine), and returns
    /// the newest commit made before, to [`Vfs::publish`].
    pub fn make_durable(&self) -> Result<Durable> {
        let (latest, store) = {
            let inner = self.lock();
            (inner.latest.clone(), inner.store.clone())
        };
        store.flush_durable()?;
        Ok(Durable(latest))
    }

    /// Tells the root observer of a commit [`Vfs::make_durable`] made
    /// durable (unless an install not yet let go holds it back; then the
    /// next publish tells it).
    pub fn publish(&self, durable: Durable) {
        if let Some(info) = durable.0 {
            self.announce.offer(info);
        }
        self.announce.tell();
    }

    /// [`Vfs::make_durable`], then [`Vfs::publish`].
    pub(super) fn flush_and_publish(&self) -> Result<()> {
        let d = self.make_durable()?;
        self.publish(d);
        Ok(())
    }
}
