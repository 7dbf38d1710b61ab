//! The FUSE edge: a thin fuser 0.18 adapter over [`Vfs`]. Every request is
//! converted, handed to the vfs, and answered exactly once; every error's
//! errno comes from [`crate::Error::errno`]. No request can panic the
//! process: bad offsets and stale inodes are vfs errors.
//!
//! The read-only history view (`.backer/snapshots/<time>/`, see
//! `vfs/snapshots.rs`) has its own inode numbers (`vfs::is_view`): requests
//! on them go to the vfs's `view_*` calls, and every write that names
//! something in it is answered `EROFS` here.
//!
//! Kernel cache settings, chosen for speed (each FUSE request costs ~50 µs
//! on our kind of machine, so the number of requests is what matters):
//! - entry and attribute TTL [`TTL`] (1 s): `stat` and path walks are
//!   answered by the kernel; peers' changes will invalidate explicitly
//!   (fuser `Notifier`), so the TTL bounds staleness only for what nothing
//!   told the kernel about.
//! - writeback cache: the kernel gathers small writes into large ones
//!   (tar's 13,569 writes became 2,097 in the floor's measurements) and
//!   answers size/mtime itself; it may read through write-only handles, so
//!   the vfs enforces no access modes on handles.
//! - max_write and max_readahead 1 MiB: fewer, larger requests; the node
//!   then raises the mount's read-ahead to 8 MiB (more READs in flight).
//! - 2 threads: one request can wait on the disk while another is served,
//!   and the work of an async RELEASE (storing a closed file's bytes)
//!   overlaps the program's next requests.
//! - FUSE_HANDLE_KILLPRIV_V2: the file system drops setuid/setgid on
//!   chown, truncate and unprivileged writes (see [`SetAttr::clear_setid`])
//!   instead of the kernel. In return the kernel marks inodes S_NOSEC once
//!   checked, so it stops asking GETXATTR(security.capability) before every
//!   write(2), and a chown no longer costs a GETATTR first (it needed fresh
//!   mode bits to drop them itself). Capabilities are still dropped by the
//!   kernel (through GETXATTR and REMOVEXATTR). An untar sends 29,729
//!   requests instead of 35,463 (the floor: 25,013).
//! - the requests we cannot avoid: with xattrs supported the kernel still
//!   asks GETXATTR(security.capability) at a file's first write and at
//!   each chown (the floor answers ENOSYS once and is never asked again);
//!   with `default_permissions` it asks GETATTR of a folder after each
//!   change in it, before its next permission check. A create loop sends
//!   8 requests a file where the floor sends 6, an untar 2 per file more.
//!   Those answers are kept cheap (no record decode for GETXATTR).

mod attr;
mod mount;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::tree::Kind;
use crate::vfs::{is_view, Ctx, NewNode, RenameMode, SetAttr, SetTime, Vfs, XattrReply, XattrSet};
use attr::{file_attr, kind_of_mode, timestamp};
pub use mount::{clear_dead_mount, mount, MountOptions, Mounted, Unmounter};

/// How long the kernel may trust an entry or attribute it was given.
pub const TTL: Duration = Duration::from_secs(1);
const MAX_IO: u32 = 1 << 20;

/// The fuser filesystem: a handle on the vfs.
pub struct BackerFs {
    vfs: Arc<Vfs>,
    writeback: bool,
}

fn errno(e: &crate::Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Logs a refused request at a level that fits (EIO is a failure of
/// ours, the rest are the caller's), and gives the errno to reply with.
fn refuse(op: &'static str, e: &crate::Error) -> Errno {
    match e.errno() {
        libc::EIO => tracing::error!(op, error = %e, "request failed"),
        _ => tracing::debug!(op, error = %e, "request refused"),
    }
    errno(e)
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(s) => SetTime::At(timestamp(s)),
        TimeOrNow::Now => SetTime::Now,
    }
}

impl BackerFs {
    fn entry(&self, reply: ReplyEntry, r: crate::Result<crate::vfs::Attr>, op: &'static str) {
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(refuse(op, &e)),
        }
    }

    /// Attributes from the live namespace or the history view.
    fn attr_of(&self, ino: u64) -> crate::Result<crate::vfs::Attr> {
        if is_view(ino) {
            self.vfs.view_getattr(ino)
        } else {
            self.vfs.getattr(ino)
        }
    }

    /// Whether a write naming `name` in `parent` touches the history view
    /// (`.backer` or anything under it), which is read-only.
    fn view_name(&self, parent: INodeNo, name: &OsStr) -> bool {
        self.vfs.in_view(parent.0, name.as_bytes())
    }

    fn empty(&self, reply: ReplyEmpty, r: crate::Result<()>, op: &'static str) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(op, &e)),
        }
    }
}

impl Filesystem for BackerFs {
    fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> io::Result<()> {
        if self.writeback
            && cfg
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            self.writeback = false;
        }
        let _ = cfg.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // See the module doc; without it the kernel drops the bits itself.
        let _ = cfg.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let _ = cfg.set_max_write(MAX_IO);
        let _ = cfg.set_max_readahead(MAX_IO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = if self.vfs.in_view(parent.0, name.as_bytes()) {
            self.vfs.view_lookup(parent.0, name.as_bytes())
        } else {
            self.vfs.lookup(parent.0, name.as_bytes())
        };
        self.entry(reply, r, "lookup")
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // The live namespace keeps no per-lookup state; the view does.
        if is_view(ino.0) {
            self.vfs.view_forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(refuse("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if is_view(ino.0) {
            return reply.error(Errno::EROFS);
        }
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timestamp),
            // FUSE_HANDLE_KILLPRIV_V2 leaves this to us, and fuser 0.18
            // does not pass on the kernel's FATTR_KILL_SUIDGID: a chown
            // always drops them (as Linux does), a truncate when not by
            // root (Linux: by someone without CAP_FSETID).
            clear_setid: uid.is_some() || gid.is_some() || (size.is_some() && req.uid() != 0),
        };
        match self.vfs.setattr(ino.0, &set) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(refuse("setattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = if is_view(ino.0) {
            self.vfs.view_readlink(ino.0)
        } else {
            self.vfs.readlink(ino.0)
        };
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(refuse("readlink", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if self.view_name(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let node = match kind_of_mode(mode) {
            Some(Kind::File) => NewNode::File,
            Some(Kind::Dir) => NewNode::Dir,
            Some(k @ (Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev)) => {
                NewNode::Special(k, u64::from(rdev))
            }
            Some(Kind::Symlink) | None => return reply.error(Errno::EINVAL),
        };
        let r = self.vfs.mknod(
            ctx(req),
            parent.0,
            name.as_bytes(),
            node,
            mode & !umask & 0o7777,
        );
        self.entry(reply, r, "mknod")
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if self.view_name(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let r = self
            .vfs
            .mkdir(ctx(req), parent.0, name.as_bytes(), mode & !umask & 0o7777);
        self.entry(reply, r, "mkdir")
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.view_name(parent, name) {
            return reply.error(Errno::EROFS);
        }
        self.empty(reply, self.vfs.unlink(parent.0, name.as_bytes()), "unlink")
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.view_name(parent, name) {
            return reply.error(Errno::EROFS);
        }
        self.empty(reply, self.vfs.rmdir(parent.0, name.as_bytes()), "rmdir")
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if self.view_name(parent, link_name) {
            return reply.error(Errno::EROFS);
        }
        let r = self.vfs.symlink(
            ctx(req),
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        self.entry(reply, r, "symlink")
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.view_name(parent, name) || self.view_name(newparent, newname) {
            return reply.error(Errno::EROFS);
        }
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(Errno::EINVAL); // RENAME_WHITEOUT: overlayfs only
        };
        let r = self.vfs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            mode,
        );
        self.empty(reply, r, "rename")
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if is_view(ino.0) || self.view_name(newparent, newname) {
            return reply.error(Errno::EROFS);
        }
        self.entry(
            reply,
            self.vfs.link(ino.0, newparent.0, newname.as_bytes()),
            "link",
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if is_view(ino.0) {
            let write = truncate || flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            return match self.vfs.view_open(ino.0, write) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(refuse("open", &e)),
            };
        }
        // With writeback caching the kernel computes append offsets itself.
        let append = !self.writeback && flags.0 & libc::O_APPEND != 0;
        match self.vfs.open(ino.0, truncate, append) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(refuse("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if is_view(ino.0) {
            return match self.vfs.view_read(ino.0, offset, size.min(MAX_IO)) {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(refuse("read", &e)),
            };
        }
        thread_local! {
            /// This FUSE thread's read buffer (up to [`MAX_IO`] bytes).
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        READ_BUF.with_borrow_mut(|buf| {
            match self.vfs.read_into(fh.0, offset, size.min(MAX_IO), buf) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(refuse("read", &e)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if is_view(ino.0) {
            return reply.error(Errno::EROFS);
        }
        // Sent (FUSE_HANDLE_KILLPRIV_V2) for a writer without CAP_FSETID.
        if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = self.vfs.clear_setid(ino.0) {
                return reply.error(refuse("write", &e));
            }
        }
        match self.vfs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(refuse("write", &e)),
        }
    }

    /// A whole file copied (`cp` of coreutils 9 asks this first) shares
    /// the source's chunks; any other copy gets EOPNOTSUPP, on which the
    /// kernel copies through READ and WRITE itself. The kernel has written
    /// back both files' cached pages in the range before asking, and drops
    /// the destination's after.
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if is_view(ino_out.0) {
            return reply.error(Errno::EROFS);
        }
        if is_view(ino_in.0) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        // The reply counts in 32 bits: a larger file is not copied whole.
        let len = len.min(u64::from(u32::MAX));
        let r = self
            .vfs
            .copy_whole_file(fh_in.0, offset_in, fh_out.0, offset_out, len);
        // As for a write (the kernel leaves it to us, HANDLE_KILLPRIV_V2):
        // a copier other than root drops the destination's setuid/setgid.
        let r = match r {
            Ok(Some(n)) if req.uid() != 0 => self.vfs.clear_setid(ino_out.0).map(|()| Some(n)),
            r => r,
        };
        match r {
            Ok(Some(n)) => reply.written(n as u32),
            Ok(None) => reply.error(Errno::EOPNOTSUPP),
            Err(e) => reply.error(refuse("copy_file_range", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        if is_view(ino.0) {
            return reply.ok();
        }
        self.empty(reply, self.vfs.flush(fh.0), "flush")
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if is_view(ino.0) {
            return reply.ok();
        }
        let r = self.vfs.release(fh.0);
        if let Err(e) = &r {
            // The fold of a closed file runs here (see `Vfs::flush`), and
            // the kernel drops a RELEASE's error: say it where it is seen.
            tracing::error!(ino = ino.0, error = %e, "a closed file's last bytes could not be stored");
        }
        self.empty(reply, r, "release")
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if is_view(ino.0) {
            return reply.ok();
        }
        self.empty(reply, self.vfs.fsync(fh.0), "fsync")
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.attr_of(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(refuse("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = if is_view(ino.0) {
            self.vfs.view_readdir(ino.0, offset, 512)
        } else {
            self.vfs.readdir(ino.0, offset, 512)
        };
        match r {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.cookie,
                        attr::file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(refuse("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = if is_view(ino.0) {
            self.vfs.view_readdir(ino.0, offset, 256)
        } else {
            self.vfs.readdir(ino.0, offset, 256)
        };
        match r {
            Ok(entries) => {
                for e in entries {
                    // "." and ".." are listed too (the kernel emits them and
                    // takes no lookup reference for them).
                    let Ok(attr) = self.attr_of(e.ino) else {
                        continue; // removed meanwhile
                    };
                    if reply.add(
                        INodeNo(e.ino),
                        e.cookie,
                        OsStr::from_bytes(&e.name),
                        &TTL,
                        &file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                    if is_view(e.ino) && e.name != b"." && e.name != b".." {
                        self.vfs.view_ref(e.ino);
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(refuse("readdirplus", &e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, self.vfs.sync(), "fsyncdir")
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.vfs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(refuse("statfs", &e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if is_view(ino.0) {
            return reply.error(Errno::EROFS);
        }
        if position != 0 {
            return reply.error(Errno::EINVAL); // macOS resource forks only
        }
        let mode = match flags {
            0 => XattrSet::Any,
            libc::XATTR_CREATE => XattrSet::Create,
            libc::XATTR_REPLACE => XattrSet::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        self.empty(
            reply,
            self.vfs.setxattr(ino.0, name.as_bytes(), value, mode),
            "setxattr",
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if is_view(ino.0) {
            // Snapshots keep no extended attributes.
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        match self.vfs.getxattr(ino.0, name.as_bytes(), size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(refuse("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if is_view(ino.0) {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        }
        match self.vfs.listxattr(ino.0, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(refuse("listxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_view(ino.0) {
            return reply.error(Errno::EROFS);
        }
        self.empty(
            reply,
            self.vfs.removexattr(ino.0, name.as_bytes()),
            "removexattr",
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = if is_view(ino.0) {
            self.vfs.view_access(ctx(req), ino.0, mask.bits() as u32)
        } else {
            self.vfs.access(ctx(req), ino.0, mask.bits() as u32)
        };
        self.empty(reply, r, "access")
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.view_name(parent, name) {
            return reply.error(Errno::EROFS);
        }
        if kind_of_mode(mode).is_some_and(|k| k != Kind::File) {
            return reply.error(Errno::EINVAL);
        }
        let append = !self.writeback && flags & libc::O_APPEND != 0;
        match self.vfs.create(
            ctx(req),
            parent.0,
            name.as_bytes(),
            mode & !umask & 0o7777,
            append,
        ) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(refuse("create", &e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        if is_view(ino.0) {
            return reply.error(Errno::EROFS);
        }
        // Preallocation means nothing to a content-addressed store.
        reply.error(Errno::from_i32(libc::EOPNOTSUPP))
    }
}
