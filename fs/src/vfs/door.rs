//! The door a mount's requests come through: one method per request,
//! each given who asks ([`Caller`]) where that matters. The rules that
//! are the file system's and not the kernel protocol's live here, so
//! they are tested without a mount (`fs/tests/it/door.rs`):
//! - the read-only history view (`.backer/snapshots`, `vfs/snapshots.rs`)
//!   against the live namespace: which one answers a request, and
//!   [`Error::ReadOnly`] (`EROFS`) for every write that names the view;
//! - setuid/setgid dropping, which the mount takes from the kernel
//!   (FUSE_HANDLE_KILLPRIV_V2, see `fuse.rs`): a chown always drops them
//!   (as Linux does), a truncate, write or copy into a file when the caller
//!   lacks CAP_FSETID ([`Caller::may_keep_setid`]); folders keep theirs;
//! - O_APPEND under the kernel's writeback cache, where the kernel
//!   computes append offsets itself and we must write where it says.
//!
//! The FUSE adapter only decodes a request, calls one method here, and
//! replies with the answer or [`Error::errno`].

mod heal_read;

use std::sync::Arc;

pub use heal_read::ReadReply;

use super::{
    is_view, Attr, Ctx, DirEntry, Fh, Files, History, Ino, Names, NewNode, RenameMode, SetAttr,
    StatFs, Vfs, XattrReply, XattrSet,
};
use crate::error::{Error, Result};
use crate::tree::Kind;

/// Who makes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id (for logs).
    pub pid: u32,
    /// Holds CAP_FSETID: its truncates, writes and copies leave a file's
    /// setuid/setgid bits alone.
    pub may_keep_setid: bool,
}

impl Caller {
    /// The ids new files are owned by and access() checks.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// What an open(2) asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
    /// O_APPEND.
    pub append: bool,
}

/// A mount's way into a [`Vfs`].
#[derive(Clone)]
pub struct Door {
    vfs: Arc<Vfs>,
    /// The kernel caches writes (writeback cache): it computes O_APPEND
    /// offsets itself, and its writes must land where it says.
    writeback: bool,
}

impl Door {
    /// A door into `vfs`; `writeback` says whether the kernel caches
    /// writes (see [`Door::set_writeback`]).
    pub fn new(vfs: Arc<Vfs>, writeback: bool) -> Door {
        Door { vfs, writeback }
    }

    /// The kernel does (or does not, when it refused the capability)
    /// cache writes.
    pub fn set_writeback(&mut self, on: bool) {
        self.writeback = on;
    }

    /// Whether the kernel caches writes.
    pub fn writeback(&self) -> bool {
        self.writeback
    }

    /// The vfs behind the door.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// The live namespace's part of the vfs.
    fn names(&self) -> Names<'_> {
        self.vfs.names()
    }

    /// The open files' part.
    fn files(&self) -> Files<'_> {
        self.vfs.files()
    }

    /// History's part (the snapshot view).
    fn history(&self) -> History<'_> {
        self.vfs.history()
    }

    /// Whether `name` in `parent` is (or is in) the history view.
    fn names_view(&self, parent: Ino, name: &[u8]) -> bool {
        self.history().in_view(parent, name)
    }

    /// [`Error::ReadOnly`] if `ino` is in the history view.
    fn writable(ino: Ino) -> Result<()> {
        if is_view(ino) {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// [`Error::ReadOnly`] if a write names the history view.
    fn writable_name(&self, parent: Ino, name: &[u8]) -> Result<()> {
        if self.names_view(parent, name) {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Finds `name` in `parent`. A view inode found counts one kernel
    /// reference ([`Door::forget`] gives it back).
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if self.names_view(parent, name) {
            self.history().view_lookup(parent, name)
        } else {
            self.names().lookup(parent, name)
        }
    }

    /// The kernel dropped `n` references to `ino` (only the view keeps
    /// per-reference state).
    pub fn forget(&self, ino: Ino, n: u64) {
        if is_view(ino) {
            self.history().view_forget(ino, n);
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        if is_view(ino) {
            self.history().view_getattr(ino)
        } else {
            self.names().getattr(ino)
        }
    }

    /// Changes attributes, dropping setuid/setgid on a chown, and on a
    /// truncate by a caller without CAP_FSETID (`set.clear_setid` is
    /// decided here, whatever the caller passed).
    pub fn setattr(&self, caller: &Caller, ino: Ino, set: &SetAttr) -> Result<Attr> {
        Self::writable(ino)?;
        let chown = set.uid.is_some() || set.gid.is_some();
        let set = SetAttr {
            clear_setid: chown || (set.size.is_some() && !caller.may_keep_setid),
            ..set.clone()
        };
        self.names().setattr(ino, &set)
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        if is_view(ino) {
            self.history().view_readlink(ino)
        } else {
            self.names().readlink(ino)
        }
    }

    /// Creates a node with `mode` less `umask`.
    pub fn mknod(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        node: NewNode,
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        self.writable_name(parent, name)?;
        self.names()
            .mknod(caller.ctx(), parent, name, node, mode & !umask & 0o7777)
    }

    /// Creates a symbolic link.
    pub fn symlink(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<Attr> {
        self.writable_name(parent, name)?;
        self.names().symlink(caller.ctx(), parent, name, target)
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.writable_name(parent, name)?;
        self.names().unlink(parent, name)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.writable_name(parent, name)?;
        self.names().rmdir(parent, name)
    }

    /// Renames; neither name may be in the view.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<()> {
        self.writable_name(parent, name)?;
        self.writable_name(newparent, newname)?;
        self.names().rename(parent, name, newparent, newname, mode)
    }

    /// Adds a hard link to `ino`.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        Self::writable(ino)?;
        self.writable_name(newparent, newname)?;
        self.names().link(ino, newparent, newname)
    }

    /// Opens a file. A write or truncate in the view is refused.
    pub fn open(&self, ino: Ino, how: OpenMode) -> Result<Fh> {
        if is_view(ino) {
            return self.history().view_open(ino, how.write || how.truncate);
        }
        self.files().open(ino, how.truncate, self.appends(how))
    }

    /// Whether writes through a handle opened `how` go to the end: with
    /// the writeback cache the kernel already put them there.
    fn appends(&self, how: OpenMode) -> bool {
        how.append && !self.writeback
    }

    /// Creates a regular file (`mode` less `umask`) and opens it.
    pub fn create(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        how: OpenMode,
    ) -> Result<(Attr, Fh)> {
        self.writable_name(parent, name)?;
        self.names().create(
            caller.ctx(),
            parent,
            name,
            mode & !umask & 0o7777,
            self.appends(how),
        )
    }

    /// Reads up to `size` bytes at `offset` of `ino` through `fh` into
    /// `buf` (grown if need be); returns the count.
    pub fn read(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        if !is_view(ino) {
            return self.files().read_into(fh, offset, size, buf);
        }
        let d = self.history().view_read(ino, offset, size)?;
        buf.clear();
        buf.extend_from_slice(&d);
        Ok(d.len())
    }

    /// Writes `data` at `offset`, first dropping setuid/setgid when the
    /// caller lacks CAP_FSETID.
    pub fn write(
        &self,
        caller: &Caller,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
    ) -> Result<u32> {
        Self::writable(ino)?;
        if !caller.may_keep_setid {
            self.names().clear_setid(ino)?;
        }
        self.files().write(fh, offset, data)
    }

    /// copy_file_range ([`super::Files::copy_whole_file`]): `None` for a copy the
    /// caller must do byte by byte (also any copy out of the view). A
    /// copier without CAP_FSETID drops the destination's setuid/setgid,
    /// as a write would.
    pub fn copy_file_range(
        &self,
        caller: &Caller,
        (ino_in, fh_in, off_in): (Ino, Fh, u64),
        (ino_out, fh_out, off_out): (Ino, Fh, u64),
        len: u64,
    ) -> Result<Option<u64>> {
        Self::writable(ino_out)?;
        if is_view(ino_in) {
            return Ok(None);
        }
        let n = self
            .files()
            .copy_whole_file(fh_in, off_in, fh_out, off_out, len)?;
        if n.is_some() && !caller.may_keep_setid {
            self.names().clear_setid(ino_out)?;
        }
        Ok(n)
    }

    /// A close of `fh` (a snapshot's: nothing to do).
    pub fn flush(&self, ino: Ino, fh: Fh) -> Result<()> {
        if is_view(ino) {
            return Ok(());
        }
        self.files().flush(fh)
    }

    /// The last close of `fh`.
    pub fn release(&self, ino: Ino, fh: Fh) -> Result<()> {
        if is_view(ino) {
            return Ok(());
        }
        self.files().release(fh)
    }

    /// fsync of `fh`.
    pub fn fsync(&self, ino: Ino, fh: Fh) -> Result<()> {
        if is_view(ino) {
            return Ok(());
        }
        self.files().fsync(fh)
    }

    /// Opens a folder ([`Error::NotDir`] for anything else).
    pub fn opendir(&self, ino: Ino) -> Result<()> {
        match self.getattr(ino)?.kind {
            Kind::Dir => Ok(()),
            _ => Err(Error::NotDir),
        }
    }

    /// Lists `ino` from `cookie` (see [`super::Names::readdir`]).
    pub fn readdir(&self, ino: Ino, cookie: u64, limit: usize) -> Result<Vec<DirEntry>> {
        if is_view(ino) {
            self.history().view_readdir(ino, cookie, limit)
        } else {
            self.names().readdir(ino, cookie, limit)
        }
    }

    /// Lists `ino` from `cookie` with each entry's attributes, handing
    /// them to `add` until it answers that the reply is full. Each entry
    /// the kernel took (other than "." and "..", which it takes no
    /// reference to) counts as a lookup of a view inode. Names removed
    /// meanwhile are skipped.
    pub fn readdirplus(
        &self,
        ino: Ino,
        cookie: u64,
        limit: usize,
        mut add: impl FnMut(&DirEntry, &Attr) -> bool,
    ) -> Result<()> {
        for e in self.readdir(ino, cookie, limit)? {
            let Ok(attr) = self.getattr(e.ino) else {
                continue;
            };
            if add(&e, &attr) {
                break;
            }
            if is_view(e.ino) && e.name != b"." && e.name != b".." {
                self.history().view_ref(e.ino);
            }
        }
        Ok(())
    }

    /// fsync of a folder: everything is made durable.
    pub fn fsyncdir(&self) -> Result<()> {
        self.vfs.sync()
    }

    /// statfs.
    pub fn statfs(&self) -> Result<StatFs> {
        self.names().statfs()
    }

    /// Sets an extended attribute.
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], mode: XattrSet) -> Result<()> {
        Self::writable(ino)?;
        self.names().setxattr(ino, name, value, mode)
    }

    /// An extended attribute (snapshots keep none).
    pub fn getxattr(&self, ino: Ino, name: &[u8], size: u32) -> Result<XattrReply> {
        if is_view(ino) {
            return Err(Error::NoAttribute);
        }
        self.names().getxattr(ino, name, size)
    }

    /// The names of the extended attributes (snapshots keep none).
    pub fn listxattr(&self, ino: Ino, size: u32) -> Result<XattrReply> {
        if !is_view(ino) {
            return self.names().listxattr(ino, size);
        }
        Ok(if size == 0 {
            XattrReply::Size(0)
        } else {
            XattrReply::Data(Vec::new())
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        Self::writable(ino)?;
        self.names().removexattr(ino, name)
    }

    /// Checks `mask` (R_OK 4, W_OK 2, X_OK 1) for the caller.
    pub fn access(&self, caller: &Caller, ino: Ino, mask: u32) -> Result<()> {
        if is_view(ino) {
            self.history().view_access(caller.ctx(), ino, mask)
        } else {
            self.names().access(caller.ctx(), ino, mask)
        }
    }

    /// fallocate: preallocation means nothing to a content-addressed
    /// store ([`Error::NotSupported`]; the view is read-only).
    pub fn fallocate(&self, ino: Ino) -> Result<()> {
        Self::writable(ino)?;
        Err(Error::NotSupported)
    }
}
