//! The FUSE edge: a thin fuser 0.18 adapter over the vfs's [`Door`]. Each
//! request is decoded, handed to one door method with who asks
//! ([`Caller`]), and answered exactly once; every error's errno comes from
//! [`crate::Error::errno`]. The rules (the read-only history view,
//! set-id dropping, O_APPEND under the writeback cache) are the door's,
//! tested without a mount. No request can panic the process: bad offsets
//! and stale inodes are vfs errors.
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
//!   chown, truncate and unprivileged writes (see [`Door::setattr`])
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
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::tree::Kind;
use crate::vfs::{
    Attr, Caller, Door, Fh, Ino, NewNode, OpenMode, RenameMode, SetAttr, SetTime, XattrReply,
    XattrSet,
};
use attr::{file_attr, kind_of_mode, timestamp};
pub use mount::{clear_dead_mount, mount, MountOptions, Mounted, Unmounter};

/// How long the kernel may trust an entry or attribute it was given.
pub const TTL: Duration = Duration::from_secs(1);
const MAX_IO: u32 = 1 << 20;

/// The fuser filesystem: the vfs's door.
pub struct BackerFs {
    door: Door,
}

/// Logs a refused request at a level that fits (EIO is a failure of
/// ours, the rest are the caller's), and gives the errno to reply with.
fn refuse(op: &'static str, e: &Error) -> Errno {
    match e.errno() {
        libc::EIO => tracing::error!(op, error = %e, "request failed"),
        _ => tracing::debug!(op, error = %e, "request refused"),
    }
    Errno::from_i32(e.errno())
}

/// Who asks. The kernel tells us nothing of capabilities: root is taken
/// to hold CAP_FSETID (a write says it better, see [`BackerFs::write`]).
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        may_keep_setid: req.uid() == 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(s) => SetTime::At(timestamp(s)),
        TimeOrNow::Now => SetTime::Now,
    }
}

fn open_mode(flags: i32) -> OpenMode {
    OpenMode {
        write: flags & libc::O_ACCMODE != libc::O_RDONLY,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
    }
}

fn entry(reply: ReplyEntry, r: crate::Result<Attr>, op: &'static str) {
    match r {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(refuse(op, &e)),
    }
}

fn empty(reply: ReplyEmpty, r: crate::Result<()>, op: &'static str) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(refuse(op, &e)),
    }
}

fn attr_reply(reply: ReplyAttr, r: crate::Result<Attr>, op: &'static str) {
    match r {
        Ok(a) => reply.attr(&TTL, &file_attr(&a)),
        Err(e) => reply.error(refuse(op, &e)),
    }
}

fn xattr_reply(reply: ReplyXattr, r: crate::Result<XattrReply>, op: &'static str) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(refuse(op, &e)),
    }
}

fn open_reply(reply: ReplyOpen, r: crate::Result<Fh>, op: &'static str) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
        Err(e) => reply.error(refuse(op, &e)),
    }
}

/// The node a mknod's mode asks for (symlinks come by SYMLINK).
fn new_node(mode: u32, rdev: u32) -> crate::Result<NewNode> {
    match kind_of_mode(mode) {
        Some(Kind::File) => Ok(NewNode::File),
        Some(Kind::Dir) => Ok(NewNode::Dir),
        Some(k @ (Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev)) => {
            Ok(NewNode::Special(k, u64::from(rdev)))
        }
        Some(Kind::Symlink) | None => Err(Error::InvalidArgument("mknod of no known type")),
    }
}

impl Filesystem for BackerFs {
    fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> io::Result<()> {
        if self.door.writeback()
            && cfg
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            self.door.set_writeback(false);
        }
        let _ = cfg.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // See the module doc; without it the kernel drops the bits itself.
        let _ = cfg.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let _ = cfg.set_max_write(MAX_IO);
        let _ = cfg.set_max_readahead(MAX_IO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.door.lookup(Ino(parent.0), name.as_bytes()),
            "lookup",
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.door.forget(Ino(ino.0), nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(reply, self.door.getattr(Ino(ino.0)), "getattr")
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
        // fuser 0.18 does not pass on the kernel's FATTR_KILL_SUIDGID:
        // the door decides from who asks.
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timestamp),
            ..SetAttr::default()
        };
        let r = self.door.setattr(&caller(req), Ino(ino.0), &set);
        attr_reply(reply, r, "setattr")
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.door.readlink(Ino(ino.0)) {
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
        let r = new_node(mode, rdev).and_then(|node| {
            self.door.mknod(
                &caller(req),
                Ino(parent.0),
                name.as_bytes(),
                node,
                mode,
                umask,
            )
        });
        entry(reply, r, "mknod")
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
        let r = self.door.mknod(
            &caller(req),
            Ino(parent.0),
            name.as_bytes(),
            NewNode::Dir,
            mode,
            umask,
        );
        entry(reply, r, "mkdir")
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.door.unlink(Ino(parent.0), name.as_bytes()),
            "unlink",
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.door.rmdir(Ino(parent.0), name.as_bytes()),
            "rmdir",
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.door.symlink(
            &caller(req),
            Ino(parent.0),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        entry(reply, r, "symlink")
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
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            Ok(RenameMode::Exchange)
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            Ok(RenameMode::NoReplace)
        } else if flags.is_empty() {
            Ok(RenameMode::Replace)
        } else {
            Err(Error::InvalidArgument("RENAME_WHITEOUT is overlayfs's"))
        };
        let r = mode.and_then(|mode| {
            self.door.rename(
                Ino(parent.0),
                name.as_bytes(),
                Ino(newparent.0),
                newname.as_bytes(),
                mode,
            )
        });
        empty(reply, r, "rename")
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self
            .door
            .link(Ino(ino.0), Ino(newparent.0), newname.as_bytes());
        entry(reply, r, "link")
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        open_reply(
            reply,
            self.door.open(Ino(ino.0), open_mode(flags.0)),
            "open",
        )
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
        thread_local! {
            /// This FUSE thread's read buffer (up to [`MAX_IO`] bytes).
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // A read that meets a chunk being healed is answered later, from
        // the heal's thread: this worker is free at once.
        let reply: crate::vfs::ReadReply = Box::new(move |r| match r {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(refuse("read", &e)),
        });
        READ_BUF.with_borrow_mut(|buf| {
            self.door
                .read_healing(Ino(ino.0), Fh(fh.0), offset, size.min(MAX_IO), buf, reply)
        })
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel says whether the writer lacks CAP_FSETID
        // (FUSE_WRITE_KILL_SUIDGID, sent with FUSE_HANDLE_KILLPRIV_V2).
        let who = Caller {
            may_keep_setid: !wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
            ..caller(req)
        };
        match self.door.write(&who, Ino(ino.0), Fh(fh.0), offset, data) {
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
        // The reply counts in 32 bits: a larger file is not copied whole.
        let len = len.min(u64::from(u32::MAX));
        let r = self.door.copy_file_range(
            &caller(req),
            (Ino(ino_in.0), Fh(fh_in.0), offset_in),
            (Ino(ino_out.0), Fh(fh_out.0), offset_out),
            len,
        );
        match r {
            Ok(Some(n)) => reply.written(n as u32),
            // Not a refusal: the kernel copies through READ and WRITE.
            Ok(None) => reply.error(Errno::from_i32(Error::NotSupported.errno())),
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
        empty(reply, self.door.flush(Ino(ino.0), Fh(fh.0)), "flush")
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
        let r = self.door.release(Ino(ino.0), Fh(fh.0));
        if let Err(e) = &r {
            // The fold of a closed file runs here (see `Files::flush`), and
            // the kernel drops a RELEASE's error: say it where it is seen.
            // The bytes stay in memory and the next commits retry them.
            tracing::error!(ino = ino.0, error = %e, "a closed file's last bytes could not be stored yet: retried at the next commit");
        }
        empty(reply, r, "release")
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.door.fsync(Ino(ino.0), Fh(fh.0)), "fsync")
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        open_reply(
            reply,
            self.door.opendir(Ino(ino.0)).map(|()| Fh(0)),
            "opendir",
        )
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.door.readdir(Ino(ino.0), offset, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino.0),
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
        let r = self.door.readdirplus(Ino(ino.0), offset, 256, |e, a| {
            reply.add(
                INodeNo(e.ino.0),
                e.cookie,
                OsStr::from_bytes(&e.name),
                &TTL,
                &file_attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
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
        empty(reply, self.door.fsyncdir(), "fsyncdir")
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.door.statfs() {
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
        let mode = match (flags, position) {
            (_, 1..) => Err(Error::InvalidArgument("xattr position: macOS only")),
            (0, _) => Ok(XattrSet::Any),
            (libc::XATTR_CREATE, _) => Ok(XattrSet::Create),
            (libc::XATTR_REPLACE, _) => Ok(XattrSet::Replace),
            _ => Err(Error::InvalidArgument("setxattr flags")),
        };
        let r = mode.and_then(|mode| self.door.setxattr(Ino(ino.0), name.as_bytes(), value, mode));
        empty(reply, r, "setxattr")
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.door.getxattr(Ino(ino.0), name.as_bytes(), size);
        xattr_reply(reply, r, "getxattr")
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, self.door.listxattr(Ino(ino.0), size), "listxattr")
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.door.removexattr(Ino(ino.0), name.as_bytes());
        empty(reply, r, "removexattr")
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self
            .door
            .access(&caller(req), Ino(ino.0), mask.bits() as u32);
        empty(reply, r, "access")
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
        let r = if kind_of_mode(mode).is_some_and(|k| k != Kind::File) {
            Err(Error::InvalidArgument("create of a non-file"))
        } else {
            self.door.create(
                &caller(req),
                Ino(parent.0),
                name.as_bytes(),
                mode,
                umask,
                open_mode(flags),
            )
        };
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh.0),
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
        empty(reply, self.door.fallocate(Ino(ino.0)), "fallocate")
    }
}
