//! The vfs's request and reply types: plain data, no FUSE types, so the
//! FUSE adapter converts at its edge and tests need no kernel.

use crate::tree::{Kind, Timestamp};

use serde::{Deserialize, Serialize};

/// An inode number (the live namespace's, or the history view's with
/// [`crate::vfs::VIEW_BIT`]). The root directory is [`ROOT`]. The FUSE
/// adapter converts from and to fuser's `INodeNo` at its edge.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ino(pub u64);

impl Ino {
    /// Big-endian bytes: store keys sort by inode number.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// A file handle returned by open/create (fuser's `FileHandle` at the
/// FUSE edge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fh(pub u64);

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: Ino = Ino(1);

/// The longest name (bytes), as on Linux.
pub const NAME_MAX: usize = 255;
/// The longest symlink target (bytes), as Linux's PATH_MAX minus the NUL.
pub const TARGET_MAX: usize = 4095;
/// The largest file: offsets and sizes beyond get EFBIG.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// The deepest directory nesting: a path under PATH_MAX cannot name
/// anything deeper ("a/" is two bytes), and recursive walks stay bounded.
pub const MAX_DEPTH: u32 = 2048;
/// The largest extended attribute value, as Linux's XATTR_SIZE_MAX.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// The reserved name in the root: the read-only history view.
pub const RESERVED_NAME: &[u8] = b".backer";

/// Who is asking: the caller's ids, for new files' owners and access().
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ctx {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// What getattr answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File type.
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub perm: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (directories: their entry count).
    pub size: u64,
    /// 512-byte blocks actually stored (holes excluded).
    pub blocks: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Device number for char/block devices.
    pub rdev: u64,
}

/// A time to set: a given time or "now" (utimensat's UTIME_NOW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// This time.
    At(Timestamp),
    /// The vfs clock's now.
    Now,
}

/// setattr's fields; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// Truncate (down or up) to this size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// New change time.
    pub ctime: Option<Timestamp>,
    /// Drop setuid, and setgid if the group may execute (as Linux does on
    /// a chown, and on a truncate by someone without CAP_FSETID), after
    /// any new `mode`. Folders keep theirs.
    pub clear_setid: bool,
}

/// `perm` without the bits a write or chown drops: setuid, and setgid
/// when group-executable (setgid without it marks mandatory locking and
/// stays).
pub fn without_setid(perm: u32) -> u32 {
    if perm & 0o010 != 0 {
        perm & !0o6000
    } else {
        perm & !0o4000
    }
}

/// One readdir entry. `cookie` is the offset to pass back to continue
/// after it: stable while the directory changes (new names get larger
/// cookies; removing a name does not move the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: Ino,
    /// Its type.
    pub kind: Kind,
    /// Its name.
    pub name: Vec<u8>,
    /// Where the next readdir continues.
    pub cookie: u64,
}

/// How rename treats an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RenameMode {
    /// Replace the target if it exists (plain rename(2)).
    #[default]
    Replace,
    /// Fail with EEXIST if the target exists (RENAME_NOREPLACE).
    NoReplace,
    /// Swap source and target, which must both exist (RENAME_EXCHANGE).
    Exchange,
}

/// setxattr's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XattrSet {
    /// Create or replace.
    #[default]
    Any,
    /// Fail with EEXIST if present (XATTR_CREATE).
    Create,
    /// Fail with ENODATA if absent (XATTR_REPLACE).
    Replace,
}

/// getxattr/listxattr's answer: with a zero-sized buffer the caller asks
/// only for the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The size the value (or list) needs.
    Size(u32),
    /// The value (or the NUL-separated list).
    Data(Vec<u8>),
}

/// statfs's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `bsize` on the store's disk.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users (minus the store's reserve).
    pub bavail: u64,
    /// Inodes in use plus free.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// What a commit made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Sequence number in this store's log (1 is the first commit).
    pub seq: u64,
    /// The commit's id.
    pub id: crate::Hash,
    /// The new root hash.
    pub root: crate::Hash,
    /// How many entries changed.
    pub changed: usize,
}

/// How long the background committer leaves out a file that is open and
/// being written ([`crate::vfs::Vfs::commit_background`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defer {
    /// A file unchanged this long is folded and committed though open.
    pub quiet: std::time::Duration,
    /// A file is never left out longer than this (a log written forever
    /// still reaches peers).
    pub max: std::time::Duration,
}

impl Default for Defer {
    fn default() -> Self {
        Defer {
            quiet: std::time::Duration::from_secs(2),
            max: std::time::Duration::from_secs(10),
        }
    }
}
