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
//! No privilege comes from a copy: setuid and setgid bits are dropped
//! from files, and device nodes are skipped, unless the caller is root and
//! asks for them ([`WriteOptions::keep_setid`]). Everything written
//! belongs to the caller, unless root asks for the owners
//! ([`WriteOptions::keep_owners`]): the tree records none per commit, so
//! they are the live tree's owners of the same paths ([`Source::owner`]).

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

    /// The (uid, gid) the live tree gives the path `names`, if it has it
    /// (for [`WriteOptions::keep_owners`]); none by default.
    fn owner(&self, names: &[Vec<u8>]) -> Result<Option<(u32, u32)>> {
        let _ = names;
        Ok(None)
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

    fn owner(&self, names: &[Vec<u8>]) -> Result<Option<(u32, u32)>> {
        let mut at = ROOT;
        let mut ids = None;
        for name in names {
            match self.vfs.names().lookup(at, name) {
                Ok(a) => {
                    at = a.ino;
                    ids = Some((a.uid, a.gid));
                }
                Err(Error::NotFound | Error::NotDir) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }
}

/// How a tree is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Keep setuid and setgid bits and create device nodes: root only
    /// (refused otherwise), for a full restore of a system folder.
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

    /// The permission bits a `kind` written from `mode` gets.
    fn mode(&self, kind: Kind, mode: u32) -> u32 {
        let mode = mode & 0o7777;
        match kind {
            _ if self.keep_setid => mode,
            // Setgid on a folder is inheritance, not privilege.
            Kind::Dir => mode & !0o4000,
            _ => mode & !SETID,
        }
    }
}

/// Writes the entries `todo` (in order, in the tree's folder `base`) into
/// the folder `dir`, nodes and chunks from `src`; `progress` hears (bytes
/// written, `total`).
pub(crate) fn write_entries(
    src: &impl Source,
    dir: &Path,
    base: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    opts: WriteOptions,
    progress: Option<Tell<'_>>,
) -> Result<Exported> {
    opts.check()?;
    let mut w = Writer::new(src, dir, opts, progress)?;
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
    /// A writer into the folder `dir`.
    fn new(
        src: &'a S,
        dir: &Path,
        opts: WriteOptions,
        progress: Option<Tell<'a>>,
    ) -> Result<Writer<'a, S>> {
        let cur = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
        Ok(Writer {
            src,
            opts,
            progress,
            stats: Exported::default(),
            cur: cur.into(),
            path: dir.to_path_buf(),
            up: Vec::new(),
            names: Vec::new(),
        })
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
                    fchmod(&self.cur, self.opts.mode(Kind::Dir, mode), &p)?;
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
        let owner = if self.opts.keep_owners {
            self.names.push(e.name.clone());
            let ids = self.src.owner(&self.names);
            self.names.pop();
            ids?
        } else {
            None
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
                fchmod(&f, self.opts.mode(Kind::File, e.mode), &p)?;
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
                fchmod(&f, self.opts.mode(Kind::Fifo, e.mode), &p)?;
                futimens(&f, e.mtime, &p)?;
                self.stats.fifos += 1;
            }
            Kind::CharDev | Kind::BlockDev if self.opts.keep_setid => {
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
                if let Some(ids) = owner {
                    chown_at(&self.cur, &c, ids, &p)?;
                }
                set_mode_at(&self.cur, &c, self.opts.mode(e.kind, e.mode), &p)?;
                set_mtime_at(&self.cur, &c, e.mtime, &p)?;
                self.stats.devices += 1;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Socket => {
                let what = match e.kind {
                    Kind::CharDev => "character device (only root's --keep-setid makes devices)",
                    Kind::BlockDev => "block device (only root's --keep-setid makes devices)",
                    _ => "socket",
                };
                self.warn(format!("skipping the {what} {}", p.display()));
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
                        let data = self.src.chunk(&hash)?;
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

    fn warn(&mut self, line: String) {
        self.stats.warnings.push(line);
    }
}

/// A name as C wants it (validated names hold no NUL).
fn cname(name: &[u8]) -> Result<CString> {
    CString::new(name).map_err(|_| Error::InvalidName)
}

/// The last OS error, saying what we were doing.
fn last_error(doing: String) -> Error {
    Error::io(doing, std::io::Error::last_os_error())
}

/// Opens `name` in `dir` (shown as `p`) with `flags`, never through a
/// symlink; new files are made 0600.
fn open_at(dir: &OwnedFd, name: &CString, flags: libc::c_int, p: &Path) -> Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat on an open folder and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(last_error(format!("cannot open {}", p.display())));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the folder `name` in `dir` (shown as `p`), not through a symlink.
fn open_dir_at(dir: &OwnedFd, name: &CString, p: &Path) -> Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, p)
}

/// The `stat` of an open file.
fn fstat(fd: &impl AsRawFd, p: &Path) -> Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a stat to fill.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error(format!("cannot stat {}", p.display())));
    }
    Ok(st)
}

/// The (device, inode) of an open file.
fn dev_ino(fd: &impl AsRawFd, p: &Path) -> Result<(u64, u64)> {
    let st = fstat(fd, p)?;
    #[allow(clippy::unnecessary_cast)] // the widths differ between systems
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The file type bits of an open file.
fn kind_of(fd: &impl AsRawFd, p: &Path) -> Result<libc::mode_t> {
    Ok(fstat(fd, p)?.st_mode & libc::S_IFMT)
}

/// Sets the permission bits of an open file.
fn fchmod(fd: &impl AsRawFd, mode: u32, p: &Path) -> Result<()> {
    // SAFETY: an open descriptor.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(last_error(format!(
            "cannot set the mode of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Gives an open file the owner `ids` (before its mode: a chown drops
/// set-id bits).
fn fchown(fd: &impl AsRawFd, ids: (u32, u32), p: &Path) -> Result<()> {
    // SAFETY: an open descriptor.
    if unsafe { libc::fchown(fd.as_raw_fd(), ids.0, ids.1) } != 0 {
        return Err(last_error(format!(
            "cannot set the owner of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Gives `name` in `dir` itself (a symlink's own) the owner `ids`.
fn chown_at(dir: &OwnedFd, name: &CString, ids: (u32, u32), p: &Path) -> Result<()> {
    // SAFETY: fchownat on an open folder and a NUL-terminated name.
    let r = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ids.0,
            ids.1,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the owner of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Sets the permission bits of `name` in `dir`, failing rather than
/// following it if it is a symlink (for device nodes, which are not
/// opened).
fn set_mode_at(dir: &OwnedFd, name: &CString, mode: u32, p: &Path) -> Result<()> {
    // SAFETY: fchmodat on an open folder and a NUL-terminated name.
    let r = unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the mode of {}",
            p.display()
        )));
    }
    Ok(())
}

/// The times `futimens` and `utimensat` take: the atime left alone.
fn mtime_only(t: Timestamp) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        },
    ]
}

/// Sets the mtime of an open file.
fn futimens(fd: &impl AsRawFd, t: Timestamp, p: &Path) -> Result<()> {
    let times = mtime_only(t);
    // SAFETY: an open descriptor and two initialised timespecs.
    if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(last_error(format!(
            "cannot set the mtime of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Sets the mtime of `name` in `dir` itself (a symlink's own), leaving
/// the atime alone.
fn set_mtime_at(dir: &OwnedFd, name: &CString, t: Timestamp, p: &Path) -> Result<()> {
    let times = mtime_only(t);
    // SAFETY: an open folder, a NUL-terminated name and two initialised
    // timespecs.
    let r = unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the mtime of {}",
            p.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
