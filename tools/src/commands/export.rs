//! `backer export DIR`: write the store's current committed tree to a plain
//! folder: folders, files with their bytes (holes stay holes), symlinks
//! with their targets, fifos; each with its permission bits and mtime
//! (a folder's after its children are written). Devices and sockets are
//! skipped with a warning. Files are streamed one chunk at a time.
//!
//! The store is opened directly, so no node may be running on it.

use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use backer_fs::store::Store;
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::entry::validate_name;
use backer_fs::tree::{dir, Entry, Kind, Timestamp};
use backer_fs::{Error, Hash};
use indicatif::{ProgressBar, ProgressStyle};

/// How much of a file's content list is read at a time: bounds the memory
/// a huge file's extent list takes.
const WINDOW: u64 = 1 << 30;

/// Exports the committed tree of the store at `store_dir` into `out`.
pub(crate) fn run(store_dir: &Path, out: &Path) -> Result<()> {
    let store_dir = super::require_store(store_dir)?;
    let exists = check_target(out)?;
    if let Some(status) = crate::control::ask(&store_dir, "status")? {
        return Err(node_running(&store_dir, Some(&status)));
    }
    let store = Store::open(&store_dir).map_err(|e| match e {
        Error::Locked => node_running(&store_dir, None),
        other => anyhow!("cannot open the store at {}: {other}", store_dir.display()),
    })?;
    let root = backer_fs::vfs::read_log(store.kv(), 1)
        .map_err(|e| anyhow!("cannot read the commit log: {e}"))?
        .first()
        .map(|c| Hash(c.root));
    if !exists {
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    let nodes: &Store = &store;
    let progress = match root {
        Some(root) if std::io::stderr().is_terminal() => {
            Some(progress_bar(total_bytes(nodes, root)?))
        }
        _ => None,
    };
    let mut ex = Exporter {
        store: &store,
        nodes,
        progress,
        stats: Stats::default(),
    };
    if let Some(root) = root {
        ex.dir(root, out)?;
    }
    if let Some(pb) = &ex.progress {
        pb.finish_and_clear();
    }
    let s = &ex.stats;
    println!(
        "Exported {} files ({} bytes), {} folders, {} symlinks, {} fifos to {}{}",
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks,
        s.fifos,
        out.display(),
        if s.skipped > 0 {
            format!(" ({} skipped)", s.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Checks that `out` is an empty folder or does not exist (returns
/// whether it exists).
fn check_target(out: &Path) -> Result<bool> {
    match fs::metadata(out) {
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a folder", out.display()),
        Ok(_) => {
            let mut list =
                fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
            if list.next().is_some() {
                bail!(
                    "{} is not empty (export into a new or empty folder)",
                    out.display()
                );
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => bail!("{}: {e}", out.display()),
    }
}

/// The error for a store held by a running node.
fn node_running(store: &Path, status: Option<&serde_json::Value>) -> anyhow::Error {
    let pid = status.and_then(|s| s["pid"].as_u64());
    let mount = status.and_then(|s| s["mount"].as_str());
    let how = match (mount, pid) {
        (Some(m), _) => format!("'fusermount3 -u {m}'"),
        (None, Some(pid)) => format!("'kill {pid}'"),
        (None, None) => "unmount it or stop the replica".to_string(),
    };
    anyhow!(
        "a node is running on the store at {}: stop it first ({how}), then export",
        store.display()
    )
}

/// The live entries of the folder tree `hash`.
fn live_entries(nodes: &Store, hash: Hash, path: &Path) -> Result<Vec<Entry>> {
    let mut list = dir::entries(nodes, hash)
        .map_err(|e| anyhow!("cannot read the folder {}: {e}", path.display()))?;
    list.retain(|e| !e.deleted);
    Ok(list)
}

/// The bytes of every live file under the folder tree `hash`.
fn total_bytes(nodes: &Store, hash: Hash) -> Result<u64> {
    let mut total = 0u64;
    for e in live_entries(nodes, hash, Path::new("."))? {
        total = total.saturating_add(match e.kind {
            Kind::File => e.size,
            Kind::Dir => total_bytes(nodes, e.hash)?,
            _ => 0,
        });
    }
    Ok(total)
}

fn progress_bar(total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "exporting {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(total).with_style(style)
}

/// Writes the entry `e` (a file, folder, symlink...) as `dir/<its name>`
/// from the store `store`, as export writes it; returns what was written.
/// `dir` must exist and must not hold that name.
pub(crate) fn write_entry(store: &Store, e: Entry, dir: &Path) -> Result<Stats> {
    let mut ex = Exporter {
        store,
        nodes: store,
        progress: None,
        stats: Stats::default(),
    };
    ex.entry(e, dir)?;
    Ok(ex.stats)
}

/// What was written.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) dirs: u64,
    pub(crate) symlinks: u64,
    pub(crate) fifos: u64,
    pub(crate) skipped: u64,
}

struct Exporter<'a> {
    store: &'a Store,
    nodes: &'a Store,
    progress: Option<ProgressBar>,
    stats: Stats,
}

impl Exporter<'_> {
    /// Writes the entries of the folder tree `hash` into the folder `path`.
    fn dir(&mut self, hash: Hash, path: &Path) -> Result<()> {
        for e in live_entries(self.nodes, hash, path)? {
            self.entry(e, path)?;
        }
        Ok(())
    }

    /// Writes the entry `e` into the folder `path`.
    fn entry(&mut self, e: Entry, path: &Path) -> Result<()> {
        if validate_name(&e.name).is_err() {
            self.warn(&format!(
                "skipping a bad name {:?} in {}",
                String::from_utf8_lossy(&e.name),
                path.display()
            ));
            return Ok(());
        }
        let p = path.join(OsStr::from_bytes(&e.name));
        match e.kind {
            Kind::Dir => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                self.dir(e.hash, &p)?;
                set_mode(&p, e.mode)?;
                set_mtime(&p, e.mtime, false)?;
                self.stats.dirs += 1;
            }
            Kind::File => {
                self.file(&e, &p)?;
                set_mtime(&p, e.mtime, false)?;
                self.stats.files += 1;
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &p)
                    .with_context(|| format!("cannot create the symlink {}", p.display()))?;
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
                self.warn(&format!("skipping the {what} {}", p.display()));
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    /// Writes the file `e` at `p`, chunk by chunk; holes are left
    /// unwritten (sparse), a trailing one by the final length.
    fn file(&mut self, e: &Entry, p: &Path) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        let mut pos = 0u64;
        if e.size > 0 || e.hash != Hash::ZERO {
            loop {
                let window =
                    content::extents_in(self.nodes, e.hash, pos, pos.saturating_add(WINDOW))
                        .map_err(|err| {
                            anyhow!("cannot read the content of {}: {err}", p.display())
                        })?;
                if window.is_empty() {
                    break;
                }
                for (at, ext) in window {
                    if at < pos {
                        continue; // written whole with the previous window
                    }
                    if let Extent::Data { hash, .. } = ext {
                        let data = self.store.read_chunk(&hash).map_err(|err| {
                            anyhow!("cannot read a chunk of {} at {at}: {err}", p.display())
                        })?;
                        f.write_all_at(&data, at)
                            .with_context(|| format!("cannot write {}", p.display()))?;
                    }
                    pos = at + ext.len();
                    if let Some(pb) = &self.progress {
                        pb.inc(ext.len());
                    }
                }
            }
        }
        if pos != e.size {
            self.warn(&format!(
                "{}: the content holds {pos} bytes, the entry says {}",
                p.display(),
                e.size
            ));
        }
        f.set_len(pos)
            .with_context(|| format!("cannot write {}", p.display()))?;
        f.set_permissions(Permissions::from_mode(e.mode))
            .with_context(|| format!("cannot set the mode of {}", p.display()))?;
        self.stats.bytes += pos;
        Ok(())
    }

    /// A warning on stderr, above the progress bar if there is one.
    fn warn(&self, msg: &str) {
        let line = format!("backer: warning: {msg}");
        match &self.progress {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("{}: NUL in path", p.display()))
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", p.display()))
}

fn mkfifo(p: &Path) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: mkfifo on a NUL-terminated path we own.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot create the fifo {}: {e}", p.display());
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
        bail!("cannot set the mtime of {}: {e}", p.display());
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
