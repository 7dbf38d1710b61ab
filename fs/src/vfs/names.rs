//! Operations on names: lookup, create, link, unlink, rename, readdir.

use super::records::{
    depth, kind_from_u8, ts_pair, u64_at, Dirent, InodeRecord, NamespaceTxn, FIRST_COOKIE,
};
use super::types::*;
use super::{commit, Inner, Vfs};
use crate::error::{Error, Result};
use crate::store::{Space, Txn};
use crate::tree::{dir, entry::validate_name, Kind, Timestamp};

const META_NEXT_INO: &[u8] = b"next_ino";

/// Creates the root directory of a new store.
pub(super) fn init_root(txn: &mut Txn<'_>, owner: Ctx, now: Timestamp) -> Result<()> {
    let mut rec = InodeRecord::new(Kind::Dir, 0o755, owner.uid, owner.gid, now);
    rec.nlink = 2;
    rec.parent = ROOT;
    rec.hash = dir::empty(&mut commit::TxnNodes(txn))?.0;
    txn.put_inode(ROOT, &rec)?;
    txn.put(
        Space::Meta,
        META_NEXT_INO,
        (ROOT.0 + 1).to_be_bytes().to_vec(),
    );
    Ok(())
}

/// A new inode number.
pub(super) fn alloc_ino(txn: &mut Txn<'_>) -> Result<Ino> {
    let next = match txn.get(Space::Meta, META_NEXT_INO)? {
        Some(b) => u64_at(&b, 0)?,
        None => ROOT.0 + 1,
    };
    txn.put(
        Space::Meta,
        META_NEXT_INO,
        (next + 1).to_be_bytes().to_vec(),
    );
    Ok(Ino(next))
}

/// A directory's record, or ENOTDIR.
fn dir_record(txn: &Txn<'_>, ino: Ino) -> Result<InodeRecord> {
    let rec = txn.inode(ino)?;
    if !rec.is_dir() {
        return Err(Error::NotDir);
    }
    Ok(rec)
}

/// Validates a name to create in `parent`.
fn check_new_name(parent: Ino, name: &[u8]) -> Result<()> {
    validate_name(name)?;
    if parent == ROOT && name == RESERVED_NAME {
        return Err(Error::Exists);
    }
    Ok(())
}

/// Whether `ino` is `ancestor` or beneath it.
fn is_within(txn: &Txn<'_>, mut ino: Ino, ancestor: Ino) -> Result<bool> {
    for _ in 0..=MAX_DEPTH + 1 {
        if ino == ancestor {
            return Ok(true);
        }
        if ino == ROOT {
            return Ok(false);
        }
        ino = txn.inode(ino)?.parent;
    }
    Err(Error::corrupt("directory parents form a loop"))
}

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewNode {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
    /// A fifo, socket or device (with its rdev).
    Special(Kind, u64),
}

/// The live namespace's requests (names, attributes, extended
/// attributes) on a [`Vfs`]: see [`Vfs::names`]. Each runs over one
/// transaction of the store, applied whole, under the vfs's one lock.
#[derive(Clone, Copy)]
pub struct Names<'v> {
    pub(super) vfs: &'v Vfs,
}

impl Vfs {
    /// The live namespace: names, attributes, extended attributes.
    pub fn names(&self) -> Names<'_> {
        Names { vfs: self }
    }
}

impl Names<'_> {
    /// Finds `name` in `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        let prec = dir_record(&txn, parent)?;
        let ino = match name {
            b"." => parent,
            b".." => prec.parent,
            _ => txn.dirent(parent, name)?.ok_or(Error::NotFound)?.ino,
        };
        inner.attr(&txn, ino)
    }

    /// Creates a file, directory, symlink or special file.
    pub fn mknod(
        &self,
        ctx: Ctx,
        parent: Ino,
        name: &[u8],
        node: NewNode,
        perm: u32,
    ) -> Result<Attr> {
        self.vfs.write_op(|inner, txn, now| {
            let ino = inner.make(txn, ctx, parent, name, node, perm, now)?;
            inner.attr(txn, ino)
        })
    }

    /// Creates a directory.
    pub fn mkdir(&self, ctx: Ctx, parent: Ino, name: &[u8], perm: u32) -> Result<Attr> {
        self.mknod(ctx, parent, name, NewNode::Dir, perm)
    }

    /// Creates a symbolic link.
    pub fn symlink(&self, ctx: Ctx, parent: Ino, name: &[u8], target: &[u8]) -> Result<Attr> {
        self.mknod(ctx, parent, name, NewNode::Symlink(target.to_vec()), 0o777)
    }

    /// Creates a regular file and opens it (EEXIST if the name exists).
    pub fn create(
        &self,
        ctx: Ctx,
        parent: Ino,
        name: &[u8],
        perm: u32,
        append: bool,
    ) -> Result<(Attr, Fh)> {
        self.vfs.write_op(|inner, txn, now| {
            let ino = inner.make(txn, ctx, parent, name, NewNode::File, perm, now)?;
            let rec = txn.inode(ino)?;
            let fh = inner.open_handle(txn, ino, &rec, append)?;
            // A new file about to be written: the background committer
            // waits for its bytes rather than sending peers an empty file.
            if let Some(of) = inner.files.get_mut(ino) {
                of.last_change = Some(now);
            }
            Ok((inner.attr(txn, ino)?, fh))
        })
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        let rec = txn.inode(ino)?;
        if rec.kind()? != Kind::Symlink {
            return Err(Error::NotSymlink);
        }
        Ok(rec.target)
    }

    /// Adds the name `newname` in `newparent` for `ino` (a hard link).
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        self.vfs.write_op(|inner, txn, now| {
            check_new_name(newparent, newname)?;
            let mut rec = txn.inode(ino)?;
            if rec.is_dir() {
                return Err(Error::NotPermitted);
            }
            if rec.nlink == 0 {
                return Err(Error::NotFound);
            }
            let mut prec = dir_record(txn, newparent)?;
            if txn.dirent(newparent, newname)?.is_some() {
                return Err(Error::Exists);
            }
            rec.nlink += 1;
            rec.ctime = ts_pair(now);
            txn.add_name(ino, &mut rec, newparent, newname);
            txn.put_inode(ino, &rec)?;
            txn.add_dirent(newparent, &mut prec, newname, ino, rec.kind()?);
            touch(&mut prec, now);
            txn.put_inode(newparent, &prec)?;
            inner.attr(txn, ino)
        })
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.vfs.write_op(|inner, txn, now| {
            validate_name(name)?;
            let mut prec = dir_record(txn, parent)?;
            let d = txn.dirent(parent, name)?.ok_or(Error::NotFound)?;
            if d.kind == Kind::Dir {
                return Err(Error::IsDir);
            }
            txn.remove_dirent(parent, &mut prec, name, &d);
            touch(&mut prec, now);
            txn.put_inode(parent, &prec)?;
            inner.drop_link(txn, d.ino, (parent, name), now)
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.vfs.write_op(|_, txn, now| {
            match name {
                b"." => return Err(Error::InvalidArgument("rmdir of .")),
                b".." => return Err(Error::NotEmpty),
                _ => validate_name(name)?,
            }
            let mut prec = dir_record(txn, parent)?;
            let d = txn.dirent(parent, name)?.ok_or(Error::NotFound)?;
            if d.kind != Kind::Dir {
                return Err(Error::NotDir);
            }
            let rec = txn.inode(d.ino)?;
            if rec.entries > 0 {
                return Err(Error::NotEmpty);
            }
            txn.remove_dirent(parent, &mut prec, name, &d);
            prec.nlink = prec.nlink.saturating_sub(1);
            touch(&mut prec, now);
            txn.put_inode(parent, &prec)?;
            txn.remove_inode(d.ino)
        })
    }

    /// Renames `name` in `parent` to `newname` in `newparent`.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<()> {
        self.vfs.write_op(|inner, txn, now| {
            inner.rename(txn, parent, name, newparent, newname, mode, now)
        })
    }

    /// Entries of a directory after `cookie` (0 to start; "." and ".."
    /// come first), at most `limit`.
    pub fn readdir(&self, ino: Ino, cookie: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        let rec = dir_record(&txn, ino)?;
        let mut out = Vec::new();
        if cookie < 1 && out.len() < limit {
            out.push(DirEntry {
                ino,
                kind: Kind::Dir,
                name: b".".to_vec(),
                cookie: 1,
            });
        }
        if cookie < 2 && out.len() < limit {
            out.push(DirEntry {
                ino: rec.parent,
                kind: Kind::Dir,
                name: b"..".to_vec(),
                cookie: 2,
            });
        }
        if out.len() < limit {
            let after = super::records::cookie_key(ino, cookie.max(FIRST_COOKIE - 1));
            let page = txn.scan(
                Space::Cookies,
                &ino.to_be_bytes(),
                Some(&after),
                limit - out.len(),
            )?;
            for (k, v) in page {
                if v.len() < 9 {
                    return Err(Error::corrupt("readdir cookie record"));
                }
                out.push(DirEntry {
                    ino: super::records::ino_at(&v, 0)?,
                    kind: kind_from_u8(v[8])?,
                    name: v[9..].to_vec(),
                    cookie: u64_at(&k, 8)?,
                });
            }
        }
        Ok(out)
    }
}

/// A directory's contents changed now.
fn touch(rec: &mut InodeRecord, now: Timestamp) {
    rec.mtime = ts_pair(now);
    rec.ctime = ts_pair(now);
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        txn: &mut Txn<'_>,
        ctx: Ctx,
        parent: Ino,
        name: &[u8],
        node: NewNode,
        perm: u32,
        now: Timestamp,
    ) -> Result<Ino> {
        check_new_name(parent, name)?;
        let mut prec = dir_record(txn, parent)?;
        if prec.nlink == 0 {
            return Err(Error::NotFound);
        }
        if txn.dirent(parent, name)?.is_some() {
            return Err(Error::Exists);
        }
        let kind = match &node {
            NewNode::File => Kind::File,
            NewNode::Dir => Kind::Dir,
            NewNode::Symlink(_) => Kind::Symlink,
            NewNode::Special(k, _) => *k,
        };
        let mut rec = InodeRecord::new(kind, perm, ctx.uid, ctx.gid, now);
        match node {
            NewNode::File => {
                rec.hash = commit::store_content(txn, &[])?.0 .0;
            }
            NewNode::Dir => {
                if depth(txn, parent)? + 1 > MAX_DEPTH {
                    return Err(Error::TooDeep);
                }
                rec.nlink = 2;
                rec.parent = parent;
                rec.name = name.to_vec();
                rec.hash = dir::empty(&mut commit::TxnNodes(txn))?.0;
                prec.nlink += 1;
            }
            NewNode::Symlink(target) => {
                if target.is_empty() {
                    return Err(Error::NotFound);
                }
                if target.len() > TARGET_MAX {
                    return Err(Error::NameTooLong);
                }
                if target.contains(&0) {
                    return Err(Error::InvalidArgument("NUL in symlink target"));
                }
                rec.size = target.len() as u64;
                rec.target = target;
            }
            NewNode::Special(k, rdev) => match k {
                Kind::Fifo | Kind::Socket => {}
                Kind::CharDev | Kind::BlockDev => rec.rdev = rdev,
                _ => return Err(Error::InvalidArgument("mknod of a file or directory kind")),
            },
        }
        let ino = alloc_ino(txn)?;
        if kind != Kind::Dir {
            txn.add_name(ino, &mut rec, parent, name);
        }
        txn.put_inode(ino, &rec)?;
        txn.add_dirent(parent, &mut prec, name, ino, kind);
        touch(&mut prec, now);
        txn.put_inode(parent, &prec)?;
        Ok(ino)
    }

    /// The name `gone` (parent, name) of the non-directory `ino` is gone:
    /// drop a link, free it at the last one unless it is open (then it
    /// lives on as an orphan until release).
    pub(super) fn drop_link(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        gone: (Ino, &[u8]),
        now: Timestamp,
    ) -> Result<()> {
        let mut rec = txn.inode(ino)?;
        txn.drop_name(ino, &mut rec, gone.0, gone.1);
        rec.nlink = rec.nlink.saturating_sub(1);
        rec.ctime = ts_pair(now);
        if rec.nlink == 0 {
            if self.files.is_open(ino) {
                txn.put(Space::Orphans, ino.to_be_bytes().to_vec(), Vec::new());
            } else {
                return txn.remove_inode(ino);
            }
        } else {
            // The other names' entries keep the inode; nothing to mark.
        }
        txn.put_inode(ino, &rec)
    }

    #[allow(clippy::too_many_arguments)]
    fn rename(
        &mut self,
        txn: &mut Txn<'_>,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        mode: RenameMode,
        now: Timestamp,
    ) -> Result<()> {
        validate_name(name)?;
        check_new_name(newparent, newname)?;
        dir_record(txn, parent)?;
        dir_record(txn, newparent)?;
        let src = txn.dirent(parent, name)?.ok_or(Error::NotFound)?;
        let dst = txn.dirent(newparent, newname)?;
        if src.kind == Kind::Dir && is_within(txn, newparent, src.ino)? {
            return Err(Error::Loop);
        }
        match (mode, dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(Error::Exists),
            (RenameMode::Exchange, None) => return Err(Error::NotFound),
            (RenameMode::Exchange, Some(dst)) => {
                if dst.kind == Kind::Dir && is_within(txn, parent, dst.ino)? {
                    return Err(Error::Loop);
                }
                return self.exchange(txn, (parent, name, src), (newparent, newname, dst), now);
            }
            (_, Some(dst)) if dst.ino == src.ino => return Ok(()), // same file: POSIX says no-op
            (_, Some(dst)) => {
                match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                    (true, false) => return Err(Error::NotDir),
                    (false, true) => return Err(Error::IsDir),
                    (true, true) if txn.inode(dst.ino)?.entries > 0 => return Err(Error::NotEmpty),
                    _ => {}
                }
                let mut nprec = txn.inode(newparent)?;
                txn.remove_dirent(newparent, &mut nprec, newname, &dst);
                if dst.kind == Kind::Dir {
                    nprec.nlink = nprec.nlink.saturating_sub(1);
                    txn.put_inode(newparent, &nprec)?;
                    txn.remove_inode(dst.ino)?;
                } else {
                    txn.put_inode(newparent, &nprec)?;
                    self.drop_link(txn, dst.ino, (newparent, newname), now)?;
                }
            }
            (_, None) => {}
        }
        if src.kind == Kind::Dir && parent != newparent && depth(txn, newparent)? + 1 > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let mut prec = txn.inode(parent)?;
        txn.remove_dirent(parent, &mut prec, name, &src);
        touch(&mut prec, now);
        if src.kind == Kind::Dir && parent != newparent {
            prec.nlink = prec.nlink.saturating_sub(1);
        }
        txn.put_inode(parent, &prec)?;
        let mut nprec = txn.inode(newparent)?;
        txn.add_dirent(newparent, &mut nprec, newname, src.ino, src.kind);
        touch(&mut nprec, now);
        if src.kind == Kind::Dir && parent != newparent {
            nprec.nlink += 1;
        }
        txn.put_inode(newparent, &nprec)?;
        let mut rec = txn.inode(src.ino)?;
        rec.ctime = ts_pair(now);
        if rec.is_dir() {
            rec.parent = newparent;
            rec.name = newname.to_vec();
        } else {
            txn.drop_name(src.ino, &mut rec, parent, name);
            txn.add_name(src.ino, &mut rec, newparent, newname);
        }
        txn.put_inode(src.ino, &rec)
    }

    fn exchange(
        &mut self,
        txn: &mut Txn<'_>,
        a: (Ino, &[u8], Dirent),
        b: (Ino, &[u8], Dirent),
        now: Timestamp,
    ) -> Result<()> {
        let (pa, na, da) = a;
        let (pb, nb, db) = b;
        if da.ino == db.ino {
            return Ok(());
        }
        let mut prec = txn.inode(pa)?;
        txn.remove_dirent(pa, &mut prec, na, &da);
        txn.add_dirent(pa, &mut prec, na, db.ino, db.kind);
        touch(&mut prec, now);
        txn.put_inode(pa, &prec)?;
        let mut prec = txn.inode(pb)?;
        txn.remove_dirent(pb, &mut prec, nb, &db);
        txn.add_dirent(pb, &mut prec, nb, da.ino, da.kind);
        touch(&mut prec, now);
        txn.put_inode(pb, &prec)?;
        if pa != pb {
            let dirs_a = u32::from(da.kind == Kind::Dir);
            let dirs_b = u32::from(db.kind == Kind::Dir);
            for (p, gain, lose) in [(pa, dirs_b, dirs_a), (pb, dirs_a, dirs_b)] {
                let mut r = txn.inode(p)?;
                r.nlink = (r.nlink + gain).saturating_sub(lose);
                txn.put_inode(p, &r)?;
            }
        }
        for (ino, (op, on), (p, n)) in [(da.ino, (pa, na), (pb, nb)), (db.ino, (pb, nb), (pa, na))]
        {
            let mut r = txn.inode(ino)?;
            r.ctime = ts_pair(now);
            if r.is_dir() {
                r.parent = p;
                r.name = n.to_vec();
            } else {
                txn.drop_name(ino, &mut r, op, on);
                txn.add_name(ino, &mut r, p, n);
            }
            txn.put_inode(ino, &r)?;
        }
        Ok(())
    }
}
