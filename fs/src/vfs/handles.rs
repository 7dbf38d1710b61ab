//! The requests on open files: open, read, write, close (flush), fsync
//! and release. Bytes gather in the file's `FileData` and are chunked
//! into the store without the vfs lock where the shape allows (a stream
//! written front to back, a closed file), under it otherwise.

use super::commit;
use super::file::{self, FileData};
use super::open_files::Displaced;
use super::records::{self, ts, ts_pair, InodeRecord, NamespaceTxn};
use super::{Fh, Inner, Ino, Vfs, MAX_FILE_SIZE, ROOT};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::{Space, Txn};
use crate::tree::{Kind, Timestamp};

/// What a write leaves to do once the vfs lock is released.
enum AfterWrite {
    Done,
    /// Run the fold it began.
    StreamFold(file::StreamFold),
    /// Wait for the file's fold under way to end.
    WaitForFold,
}

/// The open files' requests (open, read, write, close, fsync, release)
/// on a [`Vfs`]: see [`Vfs::files`]. Their state is the vfs's
/// (`vfs/open_files.rs`), under its one lock, as a fold writes the
/// namespace's records in the same transaction.
#[derive(Clone, Copy)]
pub struct Files<'v> {
    pub(super) vfs: &'v Vfs,
}

impl Vfs {
    /// The open files: handles and the bytes written through them.
    pub fn files(&self) -> Files<'_> {
        Files { vfs: self }
    }
}

impl Files<'_> {
    /// Opens a regular file. `truncate` is O_TRUNC; `append` makes every
    /// write of this handle go to the end (O_APPEND).
    pub fn open(&self, ino: Ino, truncate: bool, append: bool) -> Result<Fh> {
        self.vfs.write_op(|inner, txn, now| {
            let mut rec = txn.inode(ino)?;
            match rec.kind()? {
                Kind::File => {}
                Kind::Dir => return Err(Error::IsDir),
                // Special files are opened by the kernel, never by us.
                _ => return Err(Error::NotSupported),
            }
            let fh = inner.open_handle(txn, ino, &rec, append)?;
            if truncate && inner.files.get(ino).is_some_and(|of| of.data.size > 0) {
                inner.truncate(txn, ino, &mut rec, 0, now)?;
                rec.ctime = ts_pair(now);
                txn.put_inode(ino, &rec)?;
            }
            Ok(fh)
        })
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: Fh, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.read_into(fh, offset, size, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// [`Files::read`] into `buf`, which is grown if need be and whose first
    /// bytes (the count returned) are the result: a caller that keeps one
    /// buffer per thread spares each read a fresh zeroed allocation.
    pub fn read_into(&self, fh: Fh, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
        let (plan, store, ino) = {
            let mut inner = self.vfs.lock();
            let h = inner.files.handle(fh)?;
            let store = inner.store.clone();
            let of = inner.files.get_mut(h.ino).ok_or(Error::BadHandle)?;
            (
                of.data.plan_read(&store, offset, u64::from(size)),
                store,
                h.ino,
            )
        };
        // The disk reads run without the lock.
        let read = plan.and_then(|plan| {
            let n = plan.len();
            if buf.len() < n {
                buf.resize(n, 0);
            }
            plan.run_into(&store, &mut buf[..n]).map(|()| n)
        });
        if let Err(Error::BadChunk(chunk)) = &read {
            let path = super::records::path_for_log(&store, ino);
            tracing::error!(path, %chunk, offset, "a read met a damaged or missing chunk: EIO");
        }
        read
    }

    /// copy_file_range, when it copies a whole file: `len` bytes from 0 of
    /// `fh_in` cover its content and `fh_out` is empty, so the destination
    /// takes the source's chunks and nothing is read, hashed or written
    /// (bytes the source holds unchunked are folded first). Returns the
    /// bytes copied, or `None` for any other copy (a range, into a file
    /// with content, between a file and itself): the caller copies those
    /// byte by byte.
    pub fn copy_whole_file(
        &self,
        fh_in: Fh,
        off_in: u64,
        fh_out: Fh,
        off_out: u64,
        len: u64,
    ) -> Result<Option<u64>> {
        self.vfs.write_op(|inner, txn, now| {
            let (src, dst) = (inner.files.handle(fh_in)?.ino, inner.files.handle(fh_out)?);
            if off_in != 0 || off_out != 0 || src == dst.ino || dst.append {
                return Ok(None);
            }
            let (Some(s), Some(d)) = (inner.files.get(src), inner.files.get(dst.ino)) else {
                return Err(Error::BadHandle);
            };
            if len < s.data.size || !d.data.is_empty() || s.data.fold_under_way() {
                return Ok(None);
            }
            if s.data.overlay_bytes() > 0 {
                inner.fold_file(txn, src)?;
            }
            let Some(data) = inner.files.get(src).and_then(|s| s.data.clone_content()) else {
                return Ok(None);
            };
            let size = data.size;
            let of = inner.files.get_mut(dst.ino).ok_or(Error::BadHandle)?;
            of.data = data;
            of.written(now);
            Ok(Some(size))
        })
    }

    /// Writes `data` at `offset` (at the end for an append handle).
    /// Returns the bytes written.
    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, next) = self.vfs.write_op(|inner, txn, now| {
            let h = inner.files.handle(fh)?;
            let store = inner.store.clone();
            let of = inner.files.get_mut(h.ino).ok_or(Error::BadHandle)?;
            let offset = if h.append { of.data.size } else { offset };
            let end = offset
                .checked_add(data.len() as u64)
                .ok_or(Error::FileTooLarge)?;
            if end > MAX_FILE_SIZE {
                return Err(Error::FileTooLarge);
            }
            of.data.write(offset, data);
            of.written(now);
            let over = of.data.overlay_bytes();
            if over <= file::FOLD_THRESHOLD {
                return Ok((h.ino, AfterWrite::Done));
            }
            if let Some(t) = of.data.begin_stream_fold(&store, false)? {
                return Ok((h.ino, AfterWrite::StreamFold(t)));
            }
            if !of.data.stream_folding() {
                // Not the streaming shape: fold here, under the lock.
                of.data.fold(&store, txn, false)?;
            } else if over > 4 * file::FOLD_THRESHOLD {
                // Far ahead of the fold under way: hold this writer back
                // (without the lock) until it ends, bounding memory.
                return Ok((h.ino, AfterWrite::WaitForFold));
            }
            Ok((h.ino, AfterWrite::Done))
        })?;
        match next {
            AfterWrite::Done => {}
            AfterWrite::StreamFold(t) => self.finish_stream_fold(ino, t)?,
            AfterWrite::WaitForFold => self.wait_for_stream_fold(ino),
        }
        Ok(data.len() as u32)
    }

    /// close(2) of a handle. The fold into the namespace waits for the
    /// release: the kernel sends RELEASE without making the closer wait,
    /// so chunking, hashing and storing the bytes overlap the program's
    /// next file (`tar x`, `cp -r`) instead of adding to each close. The
    /// bytes are in memory either way (durable only at fsync), and other
    /// openers share them. Unless the disk has ample room for them
    /// ([`crate::store::Packs::has_ample_room`]): then the fold runs
    /// here, so close(2) reports ENOSPC. (The kernel drops a RELEASE's
    /// error: an I/O error of a fold there is only logged, and fsync,
    /// which folds itself, is what reports one.)
    pub fn flush(&self, fh: Fh) -> Result<()> {
        self.vfs.write_op(|inner, txn, _| {
            let h = inner.files.handle(fh)?;
            let store = inner.store.clone();
            let Some(of) = inner.files.get_mut(h.ino) else {
                return Ok(());
            };
            // Closed after writing: what it wrote is whole. (A close with
            // nothing written, such as a shell's copy of the descriptor it
            // hands to the writer, says nothing.)
            if std::mem::take(&mut of.wrote_since_flush) {
                of.closed_whole = true;
            }
            // Room unknown (statvfs failed): fold now, to be safe.
            if of.dirty
                && !store
                    .has_ample_room(of.data.overlay_bytes())
                    .unwrap_or(false)
            {
                inner.fold_closed(txn, h.ino)?;
            }
            Ok(())
        })
    }

    /// Folds the file, commits a root holding it and makes it durable.
    pub fn fsync(&self, fh: Fh) -> Result<()> {
        self.vfs.write_op(|inner, txn, _| {
            let h = inner.files.handle(fh)?;
            inner.fold_file(txn, h.ino)
        })?;
        self.vfs.sync()
    }

    /// Closes a handle; the last close of an unlinked file frees it. The
    /// handle is gone even when the fold fails (ENOSPC): the error tells
    /// the caller those bytes were not stored. The open file is dropped
    /// only once the transaction that stores it applied; until then it
    /// stays, with no handle, for the next commit to finish the close
    /// (`Inner::finish_closes`); the committer is woken for it.
    pub fn release(&self, fh: Fh) -> Result<()> {
        // Chunk, hash and store what the file holds without the lock, so
        // the requests for a program's next file (a RELEASE is async: they
        // arrive meanwhile) do not wait behind it. Whatever this leaves,
        // e.g. after an error, the fold under the lock below stores.
        let _ = self.store_without_lock(fh);
        let mut wake = false;
        let out = self.vfs.write_op(|inner, txn, now| {
            // The kernel forgets the handle whatever happens here; a
            // handle has no part in the store, so it goes now.
            let (h, last) = inner.files.drop_handle(fh)?;
            wake = inner.fold_closed(txn, h.ino)?;
            if last {
                // Left out while open: whole now, so commit it.
                wake |= inner.close_file(txn, h.ino, now)?;
            }
            Ok(())
        });
        // The background committer may be leaving this file out: closed,
        // it is whole now, so have it committed without waiting. A failed
        // release leaves its close to a commit: wake the committer for it
        // (it retries at its own pace, see `vfs/committer.rs`).
        if wake || out.as_ref().is_err_and(|e| !matches!(e, Error::BadHandle)) {
            self.vfs.note_change();
        }
        out
    }

    /// Stores a handle's file's written bytes as chunks without holding
    /// the lock through the hashing and the pack writes (a fold without
    /// the lock that ends the run, if the file has that shape).
    fn store_without_lock(&self, fh: Fh) -> Result<()> {
        let begun = {
            let mut inner = self.vfs.lock();
            let store = inner.store.clone();
            let h = inner.files.handle(fh)?;
            match inner.files.get_mut(h.ino) {
                Some(of) if of.dirty => of.data.begin_stream_fold(&store, true)?,
                _ => None,
            }
            .map(|t| (h.ino, t))
        };
        match begun {
            Some((ino, t)) => self.finish_stream_fold(ino, t),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Remembers, once the install applied, that the open file `ino`,
    /// named `name` in `parent`, lost its name to a peer's version.
    pub(super) fn displace(&mut self, ino: Ino, parent: Ino, name: &[u8], hash: Hash) {
        if let Some(of) = self.files.get(ino) {
            let d = Displaced {
                parent,
                name: name.to_vec(),
                hash,
                dirty: of.dirty,
            };
            self.on_commit(move |inner| {
                inner.files.displace(ino, d);
            });
        }
    }

    /// The last handle of `ino` was released: stages what that means for
    /// the store (an unlinked file goes; one a peer displaced that holds
    /// writes made here becomes a conflict copy) and drops the open file
    /// once that applied. Until then (a transaction that does not apply)
    /// the open file stays, with no handle, and the next commit finishes
    /// the close ([`Inner::finish_closes`]): its bytes are not lost.
    /// Returns whether background commits were leaving the file out.
    pub(super) fn close_file(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        now: Timestamp,
    ) -> Result<bool> {
        let Some(of) = self.files.get(ino) else {
            return Ok(false);
        };
        let left_out = of.last_change.is_some();
        if let Some(rec) = txn.inode_opt(ino)? {
            if rec.nlink == 0 {
                match self.files.displaced(ino).cloned() {
                    Some(d) if d.dirty || rec.hash() != d.hash => {
                        self.keep_as_conflict(txn, ino, rec, d, now)?;
                    }
                    _ => txn.remove_inode(ino)?,
                }
            }
        }
        self.on_commit(move |inner| inner.files.closed(ino));
        Ok(left_out)
    }

    /// Finishes the closes whose transaction did not apply (open files
    /// with no handle, see [`Inner::close_file`]), each in a transaction
    /// of its own: folds it and closes it. One that fails again is logged
    /// and stays pending for the next commit; it holds up neither the
    /// others nor the commit. Returns whether some close is still pending.
    pub(super) fn finish_closes(&mut self, now: Timestamp) -> bool {
        let store = self.store.clone();
        let mut pending = false;
        for ino in self.files.closing() {
            let mut txn = Txn::new(store.kv());
            self.begin();
            let done = self
                .fold_file(&mut txn, ino)
                .and_then(|()| self.close_file(&mut txn, ino, now).map(drop))
                .and_then(|()| txn.commit());
            if let Err(e) = self.settle(done) {
                let path = records::path_for_log(&store, ino);
                tracing::warn!(path, error = %e, "storing a released file failed again: retried at the next commit");
                pending = true;
            }
        }
        pending
    }

    /// Links the released orphan `ino` beside its old name as a conflict
    /// copy (in the root if its directory is gone), to be committed and
    /// replicated like any new file.
    pub(super) fn keep_as_conflict(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        mut rec: records::InodeRecord,
        d: Displaced,
        now: Timestamp,
    ) -> Result<()> {
        use records::NamespaceTxn;
        let parent = match txn.inode_opt(d.parent)? {
            Some(p) if p.is_dir() && p.nlink > 0 => d.parent,
            _ => ROOT,
        };
        let me = self.store.node_id();
        let mut attempt = 1;
        let name = loop {
            let n =
                crate::tree::conflict::conflict_name(&d.name, records::ts(rec.mtime), me, attempt);
            if txn.dirent(parent, &n)?.is_none() {
                break n;
            }
            attempt += 1;
        };
        let mut prec = txn.inode(parent)?;
        txn.add_dirent(parent, &mut prec, &name, ino, crate::tree::Kind::File);
        prec.mtime = records::ts_pair(now);
        prec.ctime = records::ts_pair(now);
        txn.put_inode(parent, &prec)?;
        rec.nlink = 1;
        rec.ctime = records::ts_pair(now);
        txn.add_name(ino, &mut rec, parent, &name);
        txn.put_inode(ino, &rec)?;
        txn.remove(Space::Orphans, ino.to_be_bytes().to_vec());
        tracing::warn!(
            name = %String::from_utf8_lossy(&name),
            "a file open here was changed by a peer: local writes kept as a conflict copy"
        );
        Ok(())
    }

    /// Opens a handle on `ino` (whose record is `rec`).
    pub(super) fn open_handle(
        &mut self,
        txn: &Txn<'_>,
        ino: Ino,
        rec: &InodeRecord,
        append: bool,
    ) -> Result<Fh> {
        self.files.add_handle(ino, append, || {
            let extents = commit::load_extents(txn, rec.hash())?;
            let mut data = FileData::new(extents);
            // The content tree holds the bytes; the record's size may be
            // larger after a truncate up (a trailing hole).
            data.size = rec.size.max(data.size);
            Ok(data)
        })
    }

    /// Truncates an open or closed file, folding the result.
    pub(super) fn truncate(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        rec: &mut InodeRecord,
        size: u64,
        now: Timestamp,
    ) -> Result<()> {
        let fh = self.open_handle(txn, ino, rec, false)?;
        self.files.keep_for_rollback(ino);
        let store = self.store.clone();
        let res = (|| {
            let of = self.files.get_mut(ino).ok_or(Error::BadHandle)?;
            of.data.truncate(&store, size)?;
            of.dirty = true;
            of.mtime = Some(now);
            of.last_change = Some(now);
            self.fold_into(txn, ino, rec)
        })();
        self.files.drop_own_handle(fh);
        res
    }

    /// [`Inner::fold_file`], and if a handle was closed after writing,
    /// stops leaving the file out of background commits (its bytes are
    /// whole). Returns whether it did that.
    pub(super) fn fold_closed(&mut self, txn: &mut Txn<'_>, ino: Ino) -> Result<bool> {
        self.fold_file(txn, ino)?;
        let Some(of) = self.files.get_mut(ino) else {
            return Ok(false);
        };
        if !std::mem::take(&mut of.closed_whole) {
            return Ok(false);
        }
        of.last_change = None;
        of.deferred_since = None;
        Ok(true)
    }

    /// Folds an open file's bytes into chunks and its record.
    pub(super) fn fold_file(&mut self, txn: &mut Txn<'_>, ino: Ino) -> Result<()> {
        if !self.files.get(ino).is_some_and(|of| of.dirty) {
            return Ok(());
        }
        let mut rec = txn.inode(ino)?;
        self.fold_into(txn, ino, &mut rec)?;
        txn.put_inode(ino, &rec)
    }

    pub(super) fn fold_into(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        rec: &mut InodeRecord,
    ) -> Result<()> {
        let store = self.store.clone();
        if !self.files.get(ino).is_some_and(|of| of.dirty) {
            return Ok(());
        }
        self.files.keep_for_rollback(ino);
        let Some(of) = self.files.get_mut(ino) else {
            return Ok(());
        };
        of.data.fold(&store, txn, true)?;
        let (hash, len) = commit::store_content(txn, &of.data.extents())?;
        debug_assert_eq!(len, of.data.size);
        rec.hash = hash.0;
        rec.size = of.data.size;
        rec.blocks = of.data.blocks();
        // Every write sets `of.mtime`; None means a setattr gave the file
        // an explicit time after its last write (`cp -p`, `tar x` with the
        // writeback cache: WRITE, SETATTR(mtime), then FLUSH): keep it.
        if let Some(mtime) = of.mtime.take() {
            rec.mtime = ts_pair(mtime);
            rec.ctime = ts_pair(mtime.max(ts(rec.ctime)));
        }
        of.dirty = false;
        self.mark_names_dirty(txn, ino, rec)
    }
}
