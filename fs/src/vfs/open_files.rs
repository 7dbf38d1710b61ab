//! The open files: the handles the kernel holds, and per open regular
//! file the state its handles share (bytes not yet folded into the
//! namespace, a pending mtime, what the background committer needs).
//!
//! Only memory, changed under the vfs lock. What an operation changes
//! here ahead of its transaction (a fold, a truncate, a setattr's mtime)
//! is kept to be put back if that transaction does not apply
//! ([`OpenFiles::keep_for_rollback`]), and it never drops an open file it
//! did not open (one whose close is pending holds unstored bytes);
//! what it changes because of its transaction (a close, a displacement)
//! runs once the transaction applied (`Inner::on_commit`). Handles are
//! the exception: the kernel forgets a released handle whatever the
//! store says, so a release drops it at once.

use std::collections::HashMap;

use super::file::FileData;
use super::{Fh, Ino};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::tree::Timestamp;

/// An open regular file's state, shared by all its handles.
#[derive(Clone, Debug)]
pub(super) struct OpenFile {
    pub(super) data: FileData,
    /// Open handles; the state is dropped at the last release (once that
    /// release's transaction applied: until then it stays, at zero).
    pub(super) opens: u32,
    /// Bytes or size changed since the last fold into the namespace.
    pub(super) dirty: bool,
    /// mtime of the last write, not yet in the inode record.
    pub(super) mtime: Option<Timestamp>,
    /// When bytes or size last changed while open (see [`super::Defer`]).
    pub(super) last_change: Option<Timestamp>,
    /// Since when the background committer has been leaving it out.
    pub(super) deferred_since: Option<Timestamp>,
    /// Written since the last flush (a flush with nothing written is the
    /// close of a duplicate, e.g. a shell's before `exec` of the writer).
    pub(super) wrote_since_flush: bool,
    /// Closed after writing: the bytes are whole, commit them once folded
    /// (at the release that follows the close; see [`super::Files::flush`]).
    pub(super) closed_whole: bool,
}

impl OpenFile {
    fn new(data: FileData) -> OpenFile {
        OpenFile {
            data,
            opens: 0,
            dirty: false,
            mtime: None,
            last_change: None,
            deferred_since: None,
            wrote_since_flush: false,
            closed_whole: false,
        }
    }

    /// Bytes or size changed at `now` by a write (or a copy into it).
    pub(super) fn written(&mut self, now: Timestamp) {
        self.dirty = true;
        self.mtime = Some(now);
        self.last_change = Some(now);
        self.wrote_since_flush = true;
    }
}

/// One open handle.
#[derive(Clone, Copy, Debug)]
pub(super) struct Handle {
    pub(super) ino: Ino,
    /// Every write goes to the end (O_APPEND without the writeback cache).
    pub(super) append: bool,
}

/// An open file whose name a peer's change took away (DESIGN.md, "Traps":
/// open files vs peer changes). At its last release, if it holds bytes
/// written here that no commit has (unflushed at the install, or written
/// after), it is linked back beside its old name as a conflict copy.
#[derive(Clone, Debug)]
pub(super) struct Displaced {
    pub(super) parent: Ino,
    pub(super) name: Vec<u8>,
    /// Its content hash when it was displaced.
    pub(super) hash: Hash,
    /// Whether it had unfolded writes then.
    pub(super) dirty: bool,
}

/// The open files and their handles.
pub(super) struct OpenFiles {
    open: HashMap<Ino, OpenFile>,
    displaced: HashMap<Ino, Displaced>,
    handles: HashMap<Fh, Handle>,
    next_fh: Fh,
    /// Open files as they were before the running operation changed them
    /// ahead of its transaction: put back if that transaction does not
    /// apply, so memory never claims what the store lacks.
    rollback: Vec<(Ino, OpenFile)>,
    /// Pending mtimes an operation dropped ahead of its transaction (a
    /// setattr's explicit mtime): put back if it does not apply. Kept
    /// apart from `rollback` because the writeback cache sends such a
    /// setattr again and again while a file is written, and a copy of the
    /// whole open file (its chunk map and buffers) each time is work that
    /// grows with the file.
    dropped_mtimes: Vec<(Ino, Timestamp)>,
    /// Open files the running operation opened (no handle held them
    /// before it): only those may its own or undone handles remove. A file
    /// whose close is pending (no handle, bytes not yet stored) is not
    /// among them, so a truncate or an open of it never drops its bytes.
    created: Vec<Ino>,
}

impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles {
            open: HashMap::new(),
            displaced: HashMap::new(),
            handles: HashMap::new(),
            next_fh: Fh(1),
            rollback: Vec::new(),
            dropped_mtimes: Vec::new(),
            created: Vec::new(),
        }
    }
}

impl OpenFiles {
    /// The open file `ino`, if open.
    pub(super) fn get(&self, ino: Ino) -> Option<&OpenFile> {
        self.open.get(&ino)
    }

    /// The open file `ino`, if open, to change.
    pub(super) fn get_mut(&mut self, ino: Ino) -> Option<&mut OpenFile> {
        self.open.get_mut(&ino)
    }

    /// Whether `ino` is open (an unlinked open file lives on as an orphan).
    pub(super) fn is_open(&self, ino: Ino) -> bool {
        self.open.contains_key(&ino)
    }

    /// Every open file.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Ino, &OpenFile)> {
        self.open.iter().map(|(i, of)| (*i, of))
    }

    /// Every open file, to change (nothing to put back: only what holds
    /// whatever the store says, such as cached chunk locations).
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut OpenFile> {
        self.open.values_mut()
    }

    /// The content hashes displaced files had (a collection keeps them).
    pub(super) fn displaced_hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        self.displaced.values().map(|d| d.hash)
    }

    /// Open files whose last handle is gone but whose close has not yet
    /// applied (see `Inner::finish_closes`).
    pub(super) fn closing(&self) -> Vec<Ino> {
        self.open
            .iter()
            .filter(|(_, of)| of.opens == 0)
            .map(|(i, _)| *i)
            .collect()
    }

    /// The handle `fh`.
    pub(super) fn handle(&self, fh: Fh) -> Result<Handle> {
        self.handles.get(&fh).copied().ok_or(Error::BadHandle)
    }

    /// The number the next handle gets (handles from it on are the
    /// running operation's, see [`OpenFiles::drop_handles_from`]).
    pub(super) fn next_fh(&self) -> Fh {
        self.next_fh
    }

    /// Opens a handle on `ino`, opening the file with `load`'s bytes if it
    /// is not open yet (then the running operation created the open file:
    /// see [`OpenFiles::drop_own_handle`]).
    pub(super) fn add_handle(
        &mut self,
        ino: Ino,
        append: bool,
        load: impl FnOnce() -> Result<FileData>,
    ) -> Result<Fh> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.open.entry(ino) {
            slot.insert(OpenFile::new(load()?));
            self.created.push(ino);
        }
        let of = self.open.get_mut(&ino).ok_or(Error::BadHandle)?;
        of.opens += 1;
        let fh = self.next_fh;
        self.next_fh.0 += 1;
        self.handles.insert(fh, Handle { ino, append });
        Ok(fh)
    }

    /// Drops the handle `fh`; returns it and whether it was its file's
    /// last. The open file itself stays (see `Inner::close_file`).
    pub(super) fn drop_handle(&mut self, fh: Fh) -> Result<(Handle, bool)> {
        let h = self.handles.remove(&fh).ok_or(Error::BadHandle)?;
        let last = match self.open.get_mut(&h.ino) {
            Some(of) => {
                of.opens = of.opens.saturating_sub(1);
                of.opens == 0
            }
            None => false,
        };
        Ok((h, last))
    }

    /// Drops the handle `fh` of an operation's own (a truncate's), and
    /// the open file if no other handle holds it and the running operation
    /// opened it (to fold it in its transaction). An open file that was
    /// there before stays, even at no handle: its close is pending
    /// (`Inner::finish_closes`) and it may hold the only copy of its bytes.
    pub(super) fn drop_own_handle(&mut self, fh: Fh) {
        if let Ok((h, true)) = self.drop_handle(fh) {
            if self.created.contains(&h.ino) {
                self.open.remove(&h.ino);
            }
        }
    }

    /// The close of `ino` applied: the open file goes (unless a handle
    /// holds it again), and so does what was known of its displacement.
    pub(super) fn closed(&mut self, ino: Ino) {
        if self.open.get(&ino).is_some_and(|of| of.opens == 0) {
            self.open.remove(&ino);
            self.displaced.remove(&ino);
        }
    }

    /// What is known of `ino`'s displacement, if a peer's change took its
    /// name.
    pub(super) fn displaced(&self, ino: Ino) -> Option<&Displaced> {
        self.displaced.get(&ino)
    }

    /// Notes that `ino` lost its name (its install applied).
    pub(super) fn displace(&mut self, ino: Ino, d: Displaced) {
        self.displaced.insert(ino, d);
    }

    /// Undoes the opens of an operation that failed (its transaction was
    /// not applied): handles from `first` on, and the open files they
    /// opened (see [`OpenFiles::drop_own_handle`]). The caller never learns those handle numbers, and such
    /// an open file would answer sizes and bytes (an O_TRUNC's empty
    /// file) that the store does not hold.
    pub(super) fn drop_handles_from(&mut self, first: Fh) {
        let made: Vec<Fh> = self
            .handles
            .keys()
            .filter(|fh| **fh >= first)
            .copied()
            .collect();
        for fh in made {
            self.drop_own_handle(fh);
        }
    }

    /// Drops `ino`'s pending mtime (an explicit one replaces it), to be
    /// put back if the running operation's transaction does not apply.
    pub(super) fn drop_pending_mtime(&mut self, ino: Ino) {
        if let Some(of) = self.open.get_mut(&ino) {
            if let Some(old) = of.mtime.take() {
                self.dropped_mtimes.push((ino, old));
            }
        }
    }

    /// Keeps `ino`'s open file as it is now, to be put back if the running
    /// operation's transaction does not apply: called before a change to
    /// it that the transaction's writes stand for (a fold moving buffered
    /// bytes into chunks, a truncate).
    pub(super) fn keep_for_rollback(&mut self, ino: Ino) {
        if let Some(of) = self.open.get(&ino) {
            self.rollback.push((ino, of.clone()));
        }
    }

    /// An operation's transaction begins or applied: nothing to put back,
    /// and no open file is the running operation's.
    pub(super) fn forget_rollback(&mut self) {
        self.rollback.clear();
        self.dropped_mtimes.clear();
        self.created.clear();
    }

    /// Puts back the open files [`OpenFiles::keep_for_rollback`] kept,
    /// oldest last so the state before the operation wins. The handle
    /// counts stay as they are: handles come and go with their own
    /// bookkeeping ([`OpenFiles::drop_handles_from`], which runs after
    /// this and still knows which open files the operation created). A
    /// kept file that went missing is put back too, unless the operation
    /// created it: its bytes may be stored nowhere else.
    pub(super) fn roll_back(&mut self) {
        // Mtimes first: a whole copy kept by the same operation is older
        // and wins.
        while let Some((ino, mtime)) = self.dropped_mtimes.pop() {
            if let Some(of) = self.open.get_mut(&ino) {
                of.mtime = Some(mtime);
            }
        }
        while let Some((ino, kept)) = self.rollback.pop() {
            if let Some(of) = self.open.get_mut(&ino) {
                let opens = of.opens;
                *of = kept;
                of.opens = opens;
            } else if !self.created.contains(&ino) {
                let opens = self.handles.values().filter(|h| h.ino == ino).count();
                let mut of = kept;
                of.opens = u32::try_from(opens).unwrap_or(u32::MAX);
                self.open.insert(ino, of);
            }
        }
    }
}
