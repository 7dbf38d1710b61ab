//! The writer of `export` and `restore --to`: a committed tree written
//! into a plain folder by the process that runs it (the command, with its
//! caller's own permissions; never the node on a caller's behalf).
//!
//! Where the tree comes from is a [`Source`]: the store opened here, or a
//! running node asked over its socket; either way every node and chunk is
//! checked against its hash before it is used.
//!
//! Every write is made relative to an open folder (`openat`, `mkdirat`,
//! `O_NOFOLLOW`), and modes and times are set on open descriptors
//! (`fchmod`, `futimens`), so a name swapped for a symlink meanwhile
//! changes nothing outside the target, and any depth works (no path
//! grows past `PATH_MAX`). A folder's way back up (`..`) is checked to be
//! the folder it came from.
//!
//! No privilege comes from a copy. Setuid and setgid bits are dropped
//! and device nodes skipped, unless the caller is root and asks for them
//! ([`WriteOptions::keep_setid`]), and even then only where this machine
//! vouches for them ([`Source::live`]): the tree's modes and devices are
//! whatever a peer sent or any local user committed, so they alone never
//! make a privilege. The rule:
//!
//! - a set-id bit is kept only if the live tree has the same version of
//!   the file at that path (kind, size, mtime) carrying that bit, and its
//!   live owner (uid for setuid, gid for setgid) is the owner the written
//!   file has: a tree installed from a peer never carries set-id bits
//!   live, and only the file's owner or root can set them, so no one
//!   gains a privilege they did not hold; every bit dropped is a warning;
//! - a device node is made only when root asks `--keep-setid` and
//!   `--keep-owners`, the live tree has the same device (kind and number)
//!   at that path owned by root (only root makes devices), and it gets
//!   the live owner and no more permission than the live device has.
//!   (On a mount root shares with peers, a device a trusted peer sent is
//!   live too: the flags trust root's own peers.)
//!
//! Everything written belongs to the caller, unless root asks for the
//! owners ([`WriteOptions::keep_owners`]): the tree records none per
//! commit, so they are the live tree's owners of the same paths.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::export::Exported;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::content::{self, Extent};
use crate::tree::entry::validate_name;
use crate::tree::{dir, Entry, Kind, NodeStore, Timestamp};
use crate::vfs::{Vfs, ROOT};
use crate::Hash;

/// How much of a file's content list is read at a time: bounds the memory
/// a huge file's extent list takes.
const WINDOW: u64 = 1 << 30;

/// The set-id bits: a privilege when a file carries them.
const SETID: u32 = 0o6000;

/// Where a tree's nodes and chunks come from. Nodes are checked against
/// their hash as the tree is decoded; [`Source::chunk`] must return only
/// bytes that hash to the chunk's hash.
pub trait Source: NodeStore {
    /// The bytes of the chunk `hash`, checked against it.
    fn chunk(&self, hash: &Hash) -> Result<Vec<u8>>;

    /// What the live tree has at the path `names`, if it has it (for
    /// root's [`WriteOptions`]); none by default, so nothing is vouched
    /// for.
    fn live(&self, names: &[Vec<u8>]) -> Result<Option<LiveFile>> {
        let _ = names;
        Ok(None)
    }
}

/// What the live tree has at a path: local facts (owners, and set-id bits
/// set on this machine) that the writer trusts where the tree's own modes
/// cannot be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveFile {
    /// What kind of file it is.
    #[serde(with = "super::log::kind_name")]
    pub kind: Kind,
    /// Its permission bits (`& 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last content change (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Device number (devices only).
    pub rdev: u64,
}

impl LiveFile {
    /// Whether `e` is the version the live tree has (the same kind, size
    /// and mtime; for devices, the same number).
    fn same_version(&self, e: &Entry) -> bool {
        self.kind == e.kind
            && self.size == e.size
            && self.mtime == (e.mtime.secs, e.mtime.nanos)
            && self.rdev == e.rdev
    }
}

impl Source for Store {
    fn chunk(&self, hash: &Hash) -> Result<Vec<u8>> {
        self.read_chunk(hash)
    }
}

/// The store of a live tree, with the live tree's owners.
pub struct LiveTree<'a> {
    vfs: &'a Vfs,
    store: std::sync::Arc<Store>,
}

impl<'a> LiveTree<'a> {
    /// The store and owners of `vfs`.
    pub fn new(vfs: &'a Vfs) -> LiveTree<'a> {
        LiveTree {
            vfs,
            store: vfs.store(),
        }
    }
}

impl NodeStore for LiveTree<'_> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.store.get_node(hash)
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(Error::ReadOnly)
    }
}

impl Source for LiveTree<'_> {
    fn chunk(&self, hash: &Hash) -> Result<Vec<u8>> {
        self.store.read_chunk(hash)
    }

    fn live(&self, names: &[Vec<u8>]) -> Result<Option<LiveFile>> {
        let mut at = None;
        for name in names {
            match self
                .vfs
                .names()
                .lookup(at.as_ref().map_or(ROOT, |a: &crate::vfs::Attr| a.ino), name)
            {
                Ok(a) => at = Some(a),
                Err(Error::NotFound | Error::NotDir) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(at.map(|a| LiveFile {
            kind: a.kind,
            perm: a.perm & 0o7777,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            mtime: (a.mtime.secs, a.mtime.nanos),
            rdev: a.rdev,
        }))
    }
}

/// How a tree is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Keep setuid and setgid bits and create device nodes where this
    /// machine vouches for them (see the module's doc): root only
    /// (refused otherwise), for a restore of a system folder.
    pub keep_setid: bool,
    /// Give each name the owner the live tree gives its path (root only;
    /// else, and for paths the live tree lacks, the caller owns it).
    pub keep_owners: bool,
}

impl WriteOptions {
    /// Checks that the process may write as these options ask.
    ///
    /// Errors: [`Error::Request`] for `keep_setid` when not root.
    pub fn check(&self) -> Result<()> {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if self.keep_setid && !root {
            return Err(Error::Request(
                "--keep-setid is for root only: a copy made by another user never carries setuid, setgid or devices".into(),
            ));
        }
        if self.keep_owners && !root {
            return Err(Error::Request(
                "--keep-owners is for root only: what you write is yours".into(),
            ));
        }
        Ok(())
    }

    /// The permission bits a folder written from `mode` gets: setgid on
    /// a folder is inheritance, not privilege, and setuid means nothing.
    fn dir_mode(&self, mode: u32) -> u32 {
        mode & 0o7777 & !0o4000
    }
}

/// Writes the entries `todo` (in order, in the tree's folder `base`) into
/// the open folder `dir` (shown as `shown`: [`open_target`]), nodes and
/// chunks from `src`; `progress` hears (bytes written, `total`).
pub(crate) fn write_entries(
    src: &impl Source,
    dir: OwnedFd,
    shown: &Path,
    base: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    opts: WriteOptions,
    progress: Option<Tell<'_>>,
) -> Result<Exported> {
    opts.check()?;
    let mut w = Writer::new(src, dir, shown, opts, progress);
    w.names = base;
    let todo = entries.into_iter().rev().map(Work::Entry).collect();
    w.run(todo)?;
    Ok(w.stats)
}

/// The live entries of the folder tree `hash`.
pub(crate) fn live_entries(nodes: &impl NodeStore, hash: Hash) -> Result<Vec<Entry>> {
    let mut list = dir::entries(nodes, hash)?;
    list.retain(|e| !e.deleted);
    Ok(list)
}

/// One step of a write, on an explicit stack (trees may be deeper than
/// a thread's stack allows).
enum Work {
    /// Write the entry into the current folder.
    Entry(Entry),
    /// The current folder's children are written: set its owner, mode
    /// and mtime and go back up to its parent.
    Leave(Option<(u32, u32)>, u32, Timestamp),
}

/// Who hears of the progress, the bytes in all and the bytes written so
/// far.
pub(crate) struct Tell<'a> {
    to: &'a dyn Fn(u64, u64),
    total: u64,
    done: u64,
}

impl<'a> Tell<'a> {
    /// `to` hears (bytes written, `total`).
    pub(crate) fn new(to: &'a dyn Fn(u64, u64), total: u64) -> Tell<'a> {
        Tell { to, total, done: 0 }
    }
}

/// Writes entries relative to an open folder, one level at a time.
struct Writer<'a, S> {
    src: &'a S,
    opts: WriteOptions,
    progress: Option<Tell<'a>>,
    stats: Exported,
    /// The folder being written.
    cur: OwnedFd,
    /// Its path, for messages.
    path: PathBuf,
    /// The (device, inode) of each folder above `cur`: the way back up
    /// must lead to them.
    up: Vec<(u64, u64)>,
    /// The names of `cur` in the tree, from its root.
    names: Vec<Vec<u8>>,
}

impl<'a, S: Source> Writer<'a, S> {
    /// A writer into the open folder `dir` (shown as `shown`).
    fn new(
        src: &'a S,
        dir: OwnedFd,
        shown: &Path,
        opts: WriteOptions,
        progress: Option<Tell<'a>>,
    ) -> Writer<'a, S> {
        Writer {
            src,
            opts,
            progress,
            stats: Exported::default(),
            cur: dir,
            path: shown.to_path_buf(),
            up: Vec::new(),
            names: Vec::new(),
        }
    }

    fn run(&mut self, mut todo: Vec<Work>) -> Result<()> {
        while let Some(work) = todo.pop() {
            match work {
                Work::Entry(e) => self.entry(e, &mut todo)?,
                Work::Leave(owner, mode, mtime) => {
                    let p = self.path.clone();
                    if let Some(ids) = owner {
                        fchown(&self.cur, ids, &p)?;
                    }
                    fchmod(&self.cur, self.opts.dir_mode(mode), &p)?;
                    futimens(&self.cur, mtime, &p)?;
                    let parent = open_dir_at(&self.cur, &cname(b"..")?, &p)?;
                    let want = self.up.pop();
                    if want != Some(dev_ino(&parent, &p)?) {
                        return Err(Error::Request(format!(
                            "{} was moved while it was written: stopped",
                            p.display()
                        )));
                    }
                    self.cur = parent;
                    self.path.pop();
                    self.names.pop();
                    self.stats.dirs += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes the entry `e` into the current folder; a folder is entered,
    /// its children and the way back up pushed on `todo`.
    fn entry(&mut self, e: Entry, todo: &mut Vec<Work>) -> Result<()> {
        if validate_name(&e.name).is_err() {
            self.warn(format!(
                "skipping a bad name {:?} in {}",
                String::from_utf8_lossy(&e.name),
                self.path.display()
            ));
            return Ok(());
        }
        let c = cname(&e.name)?;
        let p = self.path.join(OsStr::from_bytes(&e.name));
        let live = if self.opts.keep_owners || self.opts.keep_setid {
            self.names.push(e.name.clone());
            let live = self.src.live(&self.names);
            self.names.pop();
            live?
        } else {
            None
        };
        let owner = match &live {
            Some(l) if self.opts.keep_owners => Some((l.uid, l.gid)),
            _ => None,
        };
        match e.kind {
            Kind::Dir => {
                // SAFETY: mkdirat on an open folder and a NUL-terminated name.
                if unsafe { libc::mkdirat(self.cur.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                    return Err(last_error(format!("cannot create {}", p.display())));
                }
                let inner = open_dir_at(&self.cur, &c, &p)?;
                let here = dev_ino(&self.cur, &self.path)?;
                todo.push(Work::Leave(owner, e.mode, e.mtime));
                for child in live_entries(self.src, e.hash)?.into_iter().rev() {
                    todo.push(Work::Entry(child));
                }
                self.up.push(here);
                self.names.push(e.name);
                self.cur = inner;
                self.path = p;
            }
            Kind::File => {
                let f = self.file(&e, &c, &p)?;
                if let Some(ids) = owner {
                    fchown(&f, ids, &p)?;
                }
                let perm = self.perm(&e, live.as_ref(), &f, &p)?;
                fchmod(&f, perm, &p)?;
                futimens(&f, e.mtime, &p)?;
                self.stats.files += 1;
            }
            Kind::Symlink => {
                let target = CString::new(e.target.clone()).map_err(|_| Error::InvalidName)?;
                // SAFETY: two NUL-terminated strings and an open folder.
                if unsafe { libc::symlinkat(target.as_ptr(), self.cur.as_raw_fd(), c.as_ptr()) }
                    != 0
                {
                    return Err(last_error(format!(
                        "cannot create the symlink {}",
                        p.display()
                    )));
                }
                if let Some(ids) = owner {
                    chown_at(&self.cur, &c, ids, &p)?;
                }
                set_mtime_at(&self.cur, &c, e.mtime, &p)?;
                self.stats.symlinks += 1;
            }
            Kind::Fifo => {
                // SAFETY: mkfifoat on an open folder and a NUL-terminated name.
                if unsafe { libc::mkfifoat(self.cur.as_raw_fd(), c.as_ptr(), 0o600) } != 0 {
                    return Err(last_error(format!(
                        "cannot create the fifo {}",
                        p.display()
                    )));
                }
                // A fifo opens at once for reading without blocking; the
                // open descriptor is the fifo just made, or the open fails.
                let f = open_at(&self.cur, &c, libc::O_RDONLY | libc::O_NONBLOCK, &p)?;
                if kind_of(&f, &p)? != libc::S_IFIFO {
                    return Err(Error::Request(format!(
                        "{} was replaced while it was written: stopped",
                        p.display()
                    )));
                }
                if let Some(ids) = owner {
                    fchown(&f, ids, &p)?;
                }
                let perm = self.perm(&e, live.as_ref(), &f, &p)?;
                fchmod(&f, perm, &p)?;
                futimens(&f, e.mtime, &p)?;
                self.stats.fifos += 1;
            }
            Kind::CharDev | Kind::BlockDev => {
                let Some(live) = self.vouched_device(&e, live.as_ref()) else {
                    self.warn(format!(
                        "skipping the device {}: only root's --keep-setid --keep-owners makes \
                         devices, and only those the live tree has the same, made by root",
                        p.display()
                    ));
                    self.stats.skipped += 1;
                    return Ok(());
                };
                let kind = if e.kind == Kind::CharDev {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                // SAFETY: mknodat on an open folder and a NUL-terminated
                // name. Only root gets here (WriteOptions::check).
                let made = unsafe {
                    libc::mknodat(
                        self.cur.as_raw_fd(),
                        c.as_ptr(),
                        kind | 0o600,
                        e.rdev as libc::dev_t,
                    )
                };
                if made != 0 {
                    return Err(last_error(format!("cannot create {}", p.display())));
                }
                chown_at(&self.cur, &c, (live.uid, live.gid), &p)?;
                // No more permission than the live device has.
                let perm = e.mode & live.perm & 0o777;
                set_mode_at(&self.cur, &c, perm, &p)?;
                set_mtime_at(&self.cur, &c, e.mtime, &p)?;
                self.stats.devices += 1;
            }
            Kind::Socket => {
                self.warn(format!("skipping the socket {}", p.display()));
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    /// Writes the file `e` as `name` (shown as `p`), chunk by chunk; holes
    /// are left unwritten (sparse), a trailing one by the final length.
    /// Returns it open, still 0600.
    fn file(&mut self, e: &Entry, name: &CString, p: &Path) -> Result<File> {
        let cannot_write = |err| Error::io(format!("cannot write {}", p.display()), err);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let f = File::from(open_at(&self.cur, name, flags, p)?);
        let mut pos = 0u64;
        if e.size > 0 || e.hash != Hash::ZERO {
            loop {
                let window =
                    content::extents_in(self.src, e.hash, pos, pos.saturating_add(WINDOW))?;
                if window.is_empty() {
                    break;
                }
                for (at, ext) in window {
                    if at < pos {
                        continue; // written whole with the previous window
                    }
                    if let Extent::Data { hash, .. } = ext {
                        let data = match self.src.chunk(&hash) {
                            Ok(d) => d,
                            Err(err) => {
                                // No partial file is left behind as if whole.
                                // SAFETY: a name relative to a folder we hold open.
                                unsafe { libc::unlinkat(self.cur.as_raw_fd(), name.as_ptr(), 0) };
                                return Err(Error::corrupt(format!("{}: {err}", p.display())));
                            }
                        };
                        f.write_all_at(&data, at).map_err(cannot_write)?;
                    }
                    pos = at + ext.len();
                    if let Some(t) = &mut self.progress {
                        t.done += ext.len();
                        (t.to)(t.done, t.total);
                    }
                }
            }
        }
        if pos != e.size {
            self.warn(format!(
                "{}: the content holds {pos} bytes, the entry says {}",
                p.display(),
                e.size
            ));
        }
        f.set_len(pos).map_err(cannot_write)?;
        self.stats.bytes += pos;
        Ok(f)
    }

    /// The permission bits of `e` written as the open file `f`: the
    /// tree's, less every set-id bit this machine does not vouch for (see
    /// the module's doc), each one dropped so warned about.
    fn perm(
        &mut self,
        e: &Entry,
        live: Option<&LiveFile>,
        f: &impl AsRawFd,
        p: &Path,
    ) -> Result<u32> {
        let mode = e.mode & 0o7777;
        let asked = mode & SETID;
        if asked == 0 {
            return Ok(mode);
        }
        if !self.opts.keep_setid {
            return Ok(mode & !SETID);
        }
        // The owner the file really has (the folder's setgid, a chown).
        let st = fstat(f, p)?;
        let mut kept = 0;
        if let Some(l) = live.filter(|l| l.same_version(e)) {
            if l.perm & 0o4000 != 0 && l.uid == st.st_uid {
                kept |= 0o4000;
            }
            if l.perm & 0o2000 != 0 && l.gid == st.st_gid {
                kept |= 0o2000;
            }
        }
        kept &= asked;
        if kept != asked {
            self.warn(format!(
                "{}: set-id bits dropped: the live tree does not have this version \
                 with them, owned as it is written",
                p.display()
            ));
        }
        Ok(mode & !SETID | kept)
    }

    /// The live device that vouches for the device `e`, if root asked for
    /// devices and owners and the live tree has the same one, made by root.
    fn vouched_device(&self, e: &Entry, live: Option<&LiveFile>) -> Option<LiveFile> {
        if !(self.opts.keep_setid && self.opts.keep_owners) {
            return None;
        }
        live.filter(|l| l.same_version(e) && l.uid == 0).cloned()
    }

    fn warn(&mut self, line: String) {
        self.stats.warnings.push(line);
    }
}

mod sys;
mod target;

use sys::*;
pub(crate) use target::{exists_at, open_target};

#[cfg(test)]
mod tests;
