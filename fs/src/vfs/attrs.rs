//! Attributes in the live namespace: getattr (an open file's size and
//! mtime come from its open state, ahead of the record), setattr
//! (truncate, mode, owners, times; set-id dropping as the door decides),
//! access checks, statfs.

use super::records::{ts, ts_pair, NamespaceTxn};
use super::types::*;
use super::{Inner, Names};
use crate::error::{Error, Result};
use crate::store::Txn;
use crate::tree::Kind;

impl Names<'_> {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        inner.attr(&txn, ino)
    }

    /// Changes attributes; `size` truncates (a file only).
    pub fn setattr(&self, ino: Ino, set: &SetAttr) -> Result<Attr> {
        self.vfs.write_op(|inner, txn, now| {
            let mut rec = txn.inode(ino)?;
            let kind = rec.kind()?;
            if let Some(size) = set.size {
                match kind {
                    Kind::File => {}
                    Kind::Dir => return Err(Error::IsDir),
                    _ => return Err(Error::InvalidArgument("truncate of a special file")),
                }
                if size > MAX_FILE_SIZE {
                    return Err(Error::FileTooLarge);
                }
                inner.truncate(txn, ino, &mut rec, size, now)?;
            }
            if let Some(mode) = set.mode {
                rec.perm = mode & 0o7777;
            }
            let setid_cleared = set.clear_setid && kind != Kind::Dir && {
                let before = rec.perm;
                rec.perm = without_setid(before);
                rec.perm != before
            };
            if let Some(uid) = set.uid {
                rec.uid = uid;
            }
            if let Some(gid) = set.gid {
                rec.gid = gid;
            }
            let at = |t: SetTime| match t {
                SetTime::At(t) => t,
                SetTime::Now => now,
            };
            if let Some(t) = set.atime {
                rec.atime = ts_pair(at(t));
            }
            if let Some(t) = set.mtime {
                rec.mtime = ts_pair(at(t));
                // Ahead of the transaction: put back if it does not apply.
                inner.files.drop_pending_mtime(ino);
            }
            rec.ctime = ts_pair(set.ctime.unwrap_or(now));
            txn.put_inode(ino, &rec)?;
            // Owners and atime are not in the hashed entry, and a truncate
            // marked its names when it folded: only mode and mtime need a
            // new entry (this spares the writeback cache's many mtime-free
            // setattrs a links scan).
            if set.mode.is_some() || setid_cleared || set.mtime.is_some() {
                inner.mark_names_dirty(txn, ino, &rec)?;
            }
            inner.attr(txn, ino)
        })
    }

    /// Before a write by someone without CAP_FSETID (FUSE's
    /// FUSE_WRITE_KILL_SUIDGID): drops setuid, and setgid if the group may
    /// execute. Changes nothing (and stores nothing) if neither is set.
    pub fn clear_setid(&self, ino: Ino) -> Result<()> {
        self.vfs.write_op(|inner, txn, now| {
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

    /// Answers statfs from the disk holding the store.
    pub fn statfs(&self) -> Result<StatFs> {
        let inner = self.vfs.lock();
        let store = inner.store.clone();
        let d = crate::store::packs::disk_space(store.dir())?;
        let bsize = 4096u64;
        let reserve = store.packs().reserve();
        Ok(StatFs {
            blocks: d.total / bsize,
            bfree: d.free / bsize,
            bavail: d.avail.saturating_sub(reserve) / bsize,
            files: d.files_free.max(1 << 20) * 2,
            ffree: d.files_free.max(1 << 20),
            bsize: bsize as u32,
            namelen: NAME_MAX as u32,
            frsize: bsize as u32,
        })
    }

    /// Checks `mask` (R_OK=4, W_OK=2, X_OK=1, F_OK=0) for `ctx` against the
    /// mode bits, as the kernel's `default_permissions` would.
    pub fn access(&self, ctx: Ctx, ino: Ino, mask: u32) -> Result<()> {
        check_access(ctx, &self.getattr(ino)?, mask)
    }
}

impl Inner {
    /// The attributes of `ino`: its record's, with an open file's size
    /// and mtime over them.
    pub(super) fn attr(&self, txn: &Txn<'_>, ino: Ino) -> Result<Attr> {
        let rec = txn.inode(ino)?;
        let kind = rec.kind()?;
        let mut attr = Attr {
            ino,
            kind,
            perm: rec.perm,
            nlink: rec.nlink,
            uid: rec.uid,
            gid: rec.gid,
            size: match kind {
                Kind::Dir => rec.entries,
                _ => rec.size,
            },
            blocks: rec.blocks,
            atime: ts(rec.atime),
            mtime: ts(rec.mtime),
            ctime: ts(rec.ctime),
            rdev: rec.rdev,
        };
        if let Some(of) = self.files.get(ino) {
            attr.size = of.data.size;
            attr.blocks = of.data.blocks();
            if let Some(m) = of.mtime {
                attr.mtime = m;
                attr.ctime = m.max(attr.ctime);
            }
        }
        Ok(attr)
    }
}

/// Whether `ctx` may access a file with attributes `attr` as `mask` asks
/// (`R_OK` 4, `W_OK` 2, `X_OK` 1): mode bits of owner, group or others;
/// root may do anything but execute a file no one may execute.
pub(crate) fn check_access(ctx: Ctx, attr: &Attr, mask: u32) -> Result<()> {
    let mask = mask & 7;
    if mask == 0 {
        return Ok(());
    }
    let bits = if ctx.uid == 0 {
        let exec_ok = attr.kind == Kind::Dir || attr.perm & 0o111 != 0;
        if exec_ok {
            7
        } else {
            6
        }
    } else if ctx.uid == attr.uid {
        (attr.perm >> 6) & 7
    } else if ctx.gid == attr.gid {
        (attr.perm >> 3) & 7
    } else {
        attr.perm & 7
    };
    if bits & mask == mask {
        Ok(())
    } else {
        Err(Error::AccessDenied)
    }
}
