//! Writing a committed tree to a plain folder (`backer export`, `restore
//! --to`): folders, files with their bytes (holes stay holes), symlinks
//! with their targets, fifos; each with its permission bits and mtime (a
//! folder's after its children are written). Devices and sockets are
//! skipped with a warning. Files are streamed one chunk at a time. Names
//! are created relative to their open folder (`openat`, `O_NOFOLLOW`),
//! so any depth works and nothing is written through a symlink.
//!
//! The tree is a committed root: immutable, so the export is consistent
//! even while a node goes on changing the live tree.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions, Permissions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::head;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::content::{self, Extent};
use crate::tree::entry::validate_name;
use crate::tree::{dir, Entry, Kind, Timestamp};
use crate::Hash;

/// How much of a file's content list is read at a time: bounds the memory
/// a huge file's extent list takes.
const WINDOW: u64 = 1 << 30;

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// Regular files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Folders written.
    pub dirs: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Fifos written.
    pub fifos: u64,
    /// Devices and sockets skipped.
    pub skipped: u64,
    /// What was skipped or looked wrong, one line each.
    pub warnings: Vec<String>,
}

/// Checks that `out` is an empty folder or does not exist (returns
/// whether it exists).
///
/// Errors: [`Error::Request`] for anything else.
pub fn check_target(out: &Path) -> Result<bool> {
    let no = |why: String| Err(Error::Request(why));
    match fs::metadata(out) {
        Ok(m) if !m.is_dir() => no(format!("{} exists and is not a folder", out.display())),
        Ok(_) => {
            let mut list = fs::read_dir(out)
                .map_err(|e| Error::io(format!("cannot list {}", out.display()), e))?;
            if list.next().is_some() {
                return no(format!(
                    "{} is not empty (export into a new or empty folder)",
                    out.display()
                ));
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => no(format!("{}: {e}", out.display())),
    }
}

/// Exports the newest committed tree of `store` into `out` (a new or empty
/// folder). `progress` hears (bytes written, bytes in all) as files are
/// written.
pub fn export(store: &Store, out: &Path, progress: Option<&dyn Fn(u64, u64)>) -> Result<Exported> {
    let exists = check_target(out)?;
    let root = head(store)?.map(|c| Hash(c.root));
    if !exists {
        fs::create_dir_all(out)
            .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    }
    let total = match (root, progress) {
        (Some(root), Some(_)) => tree_bytes(store, root)?,
        _ => 0,
    };
    let tell = progress.map(|to| Tell { to, total, done: 0 });
    let mut ex = Exporter::new(store, out, tell)?;
    if let Some(root) = root {
        let mut todo = Vec::new();
        for e in live_entries(store, root)?.into_iter().rev() {
            todo.push(Work::Entry(e));
        }
        ex.run(todo)?;
    }
    Ok(ex.stats)
}

/// Writes the entry `e` (a file, folder, symlink...) as `dir/<its name>`
/// from `store`, as export writes it; returns what was written. `dir`
/// must exist and must not hold that name.
pub(crate) fn export_entry(store: &Store, e: Entry, dir: &Path) -> Result<Exported> {
    let mut ex = Exporter::new(store, dir, None)?;
    ex.run(vec![Work::Entry(e)])?;
    Ok(ex.stats)
}

/// The live entries of the folder tree `hash`.
fn live_entries(nodes: &Store, hash: Hash) -> Result<Vec<Entry>> {
    let mut list = dir::entries(nodes, hash)?;
    list.retain(|e| !e.deleted);
    Ok(list)
}

/// The bytes of every live file under the folder tree `root`.
fn tree_bytes(nodes: &Store, root: Hash) -> Result<u64> {
    let mut total = 0u64;
    let mut folders = vec![root];
    while let Some(hash) = folders.pop() {
        for e in live_entries(nodes, hash)? {
            match e.kind {
                Kind::File => total = total.saturating_add(e.size),
                Kind::Dir => folders.push(e.hash),
                _ => {}
            }
        }
    }
    Ok(total)
}

/// One step of an export, on an explicit stack (trees may be deeper than
/// a thread's stack allows).
enum Work {
    /// Write the entry into the current folder.
    Entry(Entry),
    /// The current folder's children are written: go back up to its
    /// parent and set the folder's (this name's) mode and mtime.
    Leave(Vec<u8>, u32, Timestamp),
}

/// Who hears of the progress, the bytes in all and the bytes written so
/// far.
struct Tell<'a> {
    to: &'a dyn Fn(u64, u64),
    total: u64,
    done: u64,
}

/// Writes entries relative to an open folder, one level at a time: no
/// path grows past `PATH_MAX` however deep the tree, and no name is
/// followed if it is a symlink.
struct Exporter<'a> {
    store: &'a Store,
    progress: Option<Tell<'a>>,
    stats: Exported,
    /// The folder being written.
    cur: OwnedFd,
    /// Its path, for messages.
    path: PathBuf,
}

impl<'a> Exporter<'a> {
    /// An exporter writing into the folder `dir`.
    fn new(store: &'a Store, dir: &Path, progress: Option<Tell<'a>>) -> Result<Exporter<'a>> {
        let cur = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
        Ok(Exporter {
            store,
            progress,
            stats: Exported::default(),
            cur: cur.into(),
            path: dir.to_path_buf(),
        })
    }

    fn run(&mut self, mut todo: Vec<Work>) -> Result<()> {
        while let Some(work) = todo.pop() {
            match work {
                Work::Entry(e) => self.entry(e, &mut todo)?,
                Work::Leave(name, mode, mtime) => {
                    let up = cname(b"..")?;
                    self.cur = open_dir_at(&self.cur, &up, &self.path)?;
                    self.path.pop();
                    let c = cname(&name)?;
                    let p = self.path.join(OsStr::from_bytes(&name));
                    set_mode_at(&self.cur, &c, mode, &p)?;
                    set_mtime_at(&self.cur, &c, mtime, false, &p)?;
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
        match e.kind {
            Kind::Dir => {
                // SAFETY: mkdirat on an open folder and a NUL-terminated name.
                if unsafe { libc::mkdirat(self.cur.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                    return Err(last_error(format!("cannot create {}", p.display())));
                }
                let inner = open_dir_at(&self.cur, &c, &p)?;
                todo.push(Work::Leave(e.name.clone(), e.mode, e.mtime));
                for child in live_entries(self.store, e.hash)?.into_iter().rev() {
                    todo.push(Work::Entry(child));
                }
                self.cur = inner;
                self.path = p;
            }
            Kind::File => {
                self.file(&e, &c, &p)?;
                set_mtime_at(&self.cur, &c, e.mtime, false, &p)?;
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
                set_mtime_at(&self.cur, &c, e.mtime, true, &p)?;
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
                set_mode_at(&self.cur, &c, e.mode, &p)?;
                set_mtime_at(&self.cur, &c, e.mtime, false, &p)?;
                self.stats.fifos += 1;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Socket => {
                let what = match e.kind {
                    Kind::CharDev => "character device",
                    Kind::BlockDev => "block device",
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
    fn file(&mut self, e: &Entry, name: &CString, p: &Path) -> Result<()> {
        let cannot_write = |err| Error::io(format!("cannot write {}", p.display()), err);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // SAFETY: openat on an open folder and a NUL-terminated name; the
        // fd returned is owned by the File below.
        let fd = unsafe {
            libc::openat(
                self.cur.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(last_error(format!("cannot create {}", p.display())));
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut pos = 0u64;
        if e.size > 0 || e.hash != Hash::ZERO {
            loop {
                let window =
                    content::extents_in(self.store, e.hash, pos, pos.saturating_add(WINDOW))?;
                if window.is_empty() {
                    break;
                }
                for (at, ext) in window {
                    if at < pos {
                        continue; // written whole with the previous window
                    }
                    if let Extent::Data { hash, .. } = ext {
                        let data = self.store.read_chunk(&hash)?;
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
        f.set_permissions(Permissions::from_mode(e.mode))
            .map_err(|err| Error::io(format!("cannot set the mode of {}", p.display()), err))?;
        self.stats.bytes += pos;
        Ok(())
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

/// Opens the folder `name` in `dir` (shown as `p`), not through a symlink.
fn open_dir_at(dir: &OwnedFd, name: &CString, p: &Path) -> Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat on an open folder and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_error(format!("cannot open {}", p.display())));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the permission bits of `name` in `dir` (shown as `p`).
fn set_mode_at(dir: &OwnedFd, name: &CString, mode: u32, p: &Path) -> Result<()> {
    // SAFETY: fchmodat on an open folder and a NUL-terminated name.
    if unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) } != 0 {
        return Err(last_error(format!(
            "cannot set the mode of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Sets the mtime of `name` in `dir` (of the link itself with
/// `nofollow`), leaving the atime alone.
fn set_mtime_at(
    dir: &OwnedFd,
    name: &CString,
    t: Timestamp,
    nofollow: bool,
    p: &Path,
) -> Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: an open folder, a NUL-terminated name and two initialised
    // timespecs.
    if unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) } != 0 {
        return Err(last_error(format!(
            "cannot set the mtime of {}",
            p.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_must_be_missing_or_an_empty_folder() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_target(t.path()).unwrap());
        assert!(!check_target(&t.path().join("new")).unwrap());
        fs::write(t.path().join("f"), b"x").unwrap();
        let e = check_target(t.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let e = check_target(&t.path().join("f")).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
    }

    #[test]
    fn mtimes_are_set_on_links_themselves() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("l");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        let when = Timestamp {
            secs: 1_000_000_000,
            nanos: 5,
        };
        let dir: OwnedFd = File::open(t.path()).unwrap().into();
        set_mtime_at(&dir, &cname(b"l").unwrap(), when, true, &link).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(&link).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
    }
}
