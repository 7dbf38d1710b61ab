//! History on a live vfs: collections (`vfs/gc.rs`), restores
//! (`vfs/restore.rs`) and the read-only snapshot view
//! (`vfs/snapshots.rs`), reached through [`Vfs::history`]. Their state
//! (the view's inode table, what collections share) is theirs, apart
//! from the live namespace's and the open files'; they read the
//! namespace, and a restore changes it, under the vfs's one lock. The
//! commit log itself is read with [`super::read_log`], and the typed
//! history the command line prints is [`crate::history`].

use super::{gc, snapshots, Vfs};

/// History's part of a vfs.
#[derive(Default)]
pub(super) struct HistoryState {
    /// The read-only history view's inodes (`.backer/snapshots`).
    pub(super) view: snapshots::View,
    /// What collections share ([`History::gc`]).
    pub(super) gc: gc::GcState,
}

/// The history requests on a [`Vfs`]: see [`Vfs::history`].
#[derive(Clone, Copy)]
pub struct History<'v> {
    pub(super) vfs: &'v Vfs,
}

impl Vfs {
    /// History: collections, restores and the snapshot view.
    pub fn history(&self) -> History<'_> {
        History { vfs: self }
    }
}

impl<'v> History<'v> {
    /// History's own state.
    pub(super) fn state(&self) -> &'v HistoryState {
        &self.vfs.history
    }
}
