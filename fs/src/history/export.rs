//! Writing a committed tree to a plain folder (`backer export`, `restore
//! --to`): folders, files with their bytes (holes stay holes), symlinks
//! with their targets, fifos; each with its permission bits and mtime (a
//! folder's after its children are written). Devices and sockets are
//! skipped with a warning. Files are streamed one chunk at a time.
//!
//! The tree is a committed root: immutable, so the export is consistent
//! even while a node goes on changing the live tree.

use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
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
    let mut ex = Exporter {
        store,
        progress: progress.map(|to| Tell { to, total, done: 0 }),
        stats: Exported::default(),
    };
    if let Some(root) = root {
        ex.run(Work::Dir(root, out.to_path_buf()))?;
    }
    Ok(ex.stats)
}

/// Writes the entry `e` (a file, folder, symlink...) as `dir/<its name>`
/// from `store`, as export writes it; returns what was written. `dir`
/// must exist and must not hold that name.
pub(crate) fn export_entry(store: &Store, e: Entry, dir: &Path) -> Result<Exported> {
    let mut ex = Exporter {
        store,
        progress: None,
        stats: Exported::default(),
    };
    ex.run(Work::Entry(e, dir.to_path_buf()))?;
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
    /// Write the entries of the folder tree into the folder.
    Dir(Hash, PathBuf),
    /// Write the entry into the folder.
    Entry(Entry, PathBuf),
    /// A folder's children are written: set its mode and mtime.
    Seal(PathBuf, u32, Timestamp),
}

/// Who hears of the progress, the bytes in all and the bytes written so
/// far.
struct Tell<'a> {
    to: &'a dyn Fn(u64, u64),
    total: u64,
    done: u64,
}

struct Exporter<'a> {
    store: &'a Store,
    progress: Option<Tell<'a>>,
    stats: Exported,
}

impl Exporter<'_> {
    fn run(&mut self, first: Work) -> Result<()> {
        let mut todo = vec![first];
        while let Some(work) = todo.pop() {
            match work {
                Work::Dir(hash, path) => {
                    for e in live_entries(self.store, hash)?.into_iter().rev() {
                        todo.push(Work::Entry(e, path.clone()));
                    }
                }
                Work::Entry(e, path) => {
                    if let Some(more) = self.entry(e, &path)? {
                        todo.extend(more);
                    }
                }
                Work::Seal(p, mode, mtime) => {
                    set_mode(&p, mode)?;
                    set_mtime(&p, mtime, false)?;
                    self.stats.dirs += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes the entry `e` into the folder `path`; for a folder, returns
    /// the work left (its children, then sealing it).
    fn entry(&mut self, e: Entry, path: &Path) -> Result<Option<[Work; 2]>> {
        if validate_name(&e.name).is_err() {
            self.warn(format!(
                "skipping a bad name {:?} in {}",
                String::from_utf8_lossy(&e.name),
                path.display()
            ));
            return Ok(None);
        }
        let p = path.join(OsStr::from_bytes(&e.name));
        match e.kind {
            Kind::Dir => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(|err| Error::io(format!("cannot create {}", p.display()), err))?;
                return Ok(Some([
                    Work::Seal(p.clone(), e.mode, e.mtime),
                    Work::Dir(e.hash, p),
                ]));
            }
            Kind::File => {
                self.file(&e, &p)?;
                set_mtime(&p, e.mtime, false)?;
                self.stats.files += 1;
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &p).map_err(|err| {
                    Error::io(format!("cannot create the symlink {}", p.display()), err)
                })?;
                set_mtime(&p, e.mtime, true)?;
                self.stats.symlinks += 1;
            }
            Kind::Fifo => {
                mkfifo(&p)?;
                set_mode(&p, e.mode)?;
                set_mtime(&p, e.mtime, false)?;
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
        Ok(None)
    }

    /// Writes the file `e` at `p`, chunk by chunk; holes are left
    /// unwritten (sparse), a trailing one by the final length.
    fn file(&mut self, e: &Entry, p: &Path) -> Result<()> {
        let cannot_write = |err| Error::io(format!("cannot write {}", p.display()), err);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .map_err(|err| Error::io(format!("cannot create {}", p.display()), err))?;
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
        set_mode(p, e.mode)?;
        self.stats.bytes += pos;
        Ok(())
    }

    fn warn(&mut self, line: String) {
        self.stats.warnings.push(line);
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidName)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("cannot set the mode of {}", p.display()), e))
}

fn mkfifo(p: &Path) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: mkfifo on a NUL-terminated path we own.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("cannot create the fifo {}", p.display()),
            e,
        ));
    }
    Ok(())
}

/// Sets the mtime of `p` (of the link itself with `nofollow`), leaving
/// the atime alone.
fn set_mtime(p: &Path, t: Timestamp, nofollow: bool) -> Result<()> {
    let c = cpath(p)?;
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
    // SAFETY: a NUL-terminated path and two initialised timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("cannot set the mtime of {}", p.display()),
            e,
        ));
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
        set_mtime(&link, when, true).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(&link).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
    }
}
