//! The requests on open files: open, read, write, close (flush), fsync
//! and release. Bytes gather in the file's `FileData` and are chunked
//! into the store without the vfs lock where the shape allows (a stream
//! written front to back, a closed file), under it otherwise.

use super::records::{ts_pair, NamespaceTxn};
use super::{file, without_setid, Fh, Ino, Vfs, MAX_FILE_SIZE};
use crate::error::{Error, Result};
use crate::tree::Kind;

/// What a write leaves to do once the vfs lock is released.
enum AfterWrite {
    Done,
    /// Run the fold it began.
    StreamFold(file::StreamFold),
    /// Wait for the file's fold under way to end.
    WaitForFold,
}

impl Vfs {
    /// Opens a regular file. `truncate` is O_TRUNC; `append` makes every
    /// write of this handle go to the end (O_APPEND).
    pub fn open(&self, ino: Ino, truncate: bool, append: bool) -> Result<Fh> {
        self.write_op(|inner, txn, now| {
            let mut rec = txn.inode(ino)?;
            match rec.kind()? {
                Kind::File => {}
                Kind::Dir => return Err(Error::IsDir),
                // Special files are opened by the kernel, never by us.
                _ => return Err(Error::NotSupported),
            }
            let fh = inner.open_handle(txn, ino, &rec, append)?;
            if truncate && inner.open[&ino].data.size > 0 {
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

    /// [`Vfs::read`] into `buf`, which is grown if need be and whose first
    /// bytes (the count returned) are the result: a caller that keeps one
    /// buffer per thread spares each read a fresh zeroed allocation.
    pub fn read_into(&self, fh: Fh, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
        let (plan, store) = {
            let mut inner = self.lock();
            let h = inner.handle(fh)?;
            let store = inner.store.clone();
            let of = inner.open.get_mut(&h.ino).ok_or(Error::BadHandle)?;
            (of.data.plan_read(&store, offset, u64::from(size))?, store)
        };
        // The disk reads run without the lock.
        let n = plan.len();
        if buf.len() < n {
            buf.resize(n, 0);
        }
        plan.run_into(&store, &mut buf[..n])?;
        Ok(n)
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
        self.write_op(|inner, txn, now| {
            let (src, dst) = (inner.handle(fh_in)?.ino, inner.handle(fh_out)?);
            if off_in != 0 || off_out != 0 || src == dst.ino || dst.append {
                return Ok(None);
            }
            let (Some(s), Some(d)) = (inner.open.get(&src), inner.open.get(&dst.ino)) else {
                return Err(Error::BadHandle);
            };
            if len < s.data.size || !d.data.is_empty() || s.data.fold_under_way() {
                return Ok(None);
            }
            if s.data.overlay_bytes() > 0 {
                inner.fold_file(txn, src)?;
            }
            let Some(data) = inner.open.get(&src).and_then(|s| s.data.clone_content()) else {
                return Ok(None);
            };
            let size = data.size;
            let of = inner.open.get_mut(&dst.ino).ok_or(Error::BadHandle)?;
            of.data = data;
            of.dirty = true;
            of.mtime = Some(now);
            of.last_change = Some(now);
            of.wrote_since_flush = true;
            Ok(Some(size))
        })
    }

    /// Before a write by someone without CAP_FSETID (FUSE's
    /// FUSE_WRITE_KILL_SUIDGID): drops setuid, and setgid if the group may
    /// execute. Changes nothing (and stores nothing) if neither is set.
    pub fn clear_setid(&self, ino: Ino) -> Result<()> {
        self.write_op(|inner, txn, now| {
            let mut rec = txn.inode(ino)?;
            let perm = without_setid(rec.perm);
            if perm == rec.perm || rec.kind()? == Kind::Dir {
                return Ok(());
            }
            rec.perm = perm;
            rec.ctime = ts_pair(now);
            txn.put_inode(ino, &rec)?;
            inner.mark_names_dirty(txn, ino, &rec)
        })
    }

    /// Writes `data` at `offset` (at the end for an append handle).
    /// Returns the bytes written.
    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, next) = self.write_op(|inner, txn, now| {
            let h = inner.handle(fh)?;
            let store = inner.store.clone();
            let of = inner.open.get_mut(&h.ino).ok_or(Error::BadHandle)?;
            let offset = if h.append { of.data.size } else { offset };
            let end = offset
                .checked_add(data.len() as u64)
                .ok_or(Error::FileTooLarge)?;
            if end > MAX_FILE_SIZE {
                return Err(Error::FileTooLarge);
            }
            of.data.write(offset, data);
            of.dirty = true;
            of.mtime = Some(now);
            of.last_change = Some(now);
            of.wrote_since_flush = true;
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
        self.write_op(|inner, txn, _| {
            let h = inner.handle(fh)?;
            let store = inner.store.clone();
            let Some(of) = inner.open.get_mut(&h.ino) else {
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
        self.write_op(|inner, txn, _| {
            let h = inner.handle(fh)?;
            inner.fold_file(txn, h.ino)
        })?;
        self.sync()
    }

    /// Closes a handle; the last close of an unlinked file frees it. The
    /// handle is gone even when the fold fails (ENOSPC): the error tells
    /// the caller those bytes were not stored. The open file is dropped
    /// only once the transaction that stores it applied; until then it
    /// stays, with no handle, for the next commit to finish the close
    /// (`Inner::close_file`).
    pub fn release(&self, fh: Fh) -> Result<()> {
        // Chunk, hash and store what the file holds without the lock, so
        // the requests for a program's next file (a RELEASE is async: they
        // arrive meanwhile) do not wait behind it. Whatever this leaves,
        // e.g. after an error, the fold under the lock below stores.
        let _ = self.store_without_lock(fh);
        let mut wake = false;
        let out = self.write_op(|inner, txn, now| {
            let h = inner.handle(fh)?;
            // The kernel forgets the handle whatever happens here; a
            // handle has no part in the store, so it goes now.
            inner.handles.remove(&fh);
            let last = match inner.open.get_mut(&h.ino) {
                Some(of) => {
                    of.opens = of.opens.saturating_sub(1);
                    of.opens == 0
                }
                None => false,
            };
            wake = inner.fold_closed(txn, h.ino)?;
            if last {
                // Left out while open: whole now, so commit it.
                wake |= inner.close_file(txn, h.ino, now)?;
            }
            Ok(())
        });
        // The background committer may be leaving this file out: closed,
        // it is whole now, so have it committed without waiting.
        if wake {
            self.note_change();
        }
        out
    }

    /// Stores a handle's file's written bytes as chunks without holding
    /// the lock through the hashing and the pack writes (a fold without
    /// the lock that ends the run, if the file has that shape).
    fn store_without_lock(&self, fh: Fh) -> Result<()> {
        let begun = {
            let mut inner = self.lock();
            let store = inner.store.clone();
            let h = inner.handle(fh)?;
            match inner.open.get_mut(&h.ino) {
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
