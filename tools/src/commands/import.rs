//! `backer mount DIR --import`: bring the files of a non-empty folder into
//! the store before mounting over it, so they are mirrored, not hidden.
//!
//! The store is mounted at a private folder inside it (`STORE/import`) by a
//! node of its own; the folder is copied in through that mount (names,
//! bytes, modes, times, symlinks; owners when root), every file read back
//! and compared, and the node stopped, which makes the last commit durable
//! (its exit status must say so). The folder is read through open folder
//! fds, never by path (see `folder`): other users writing in it cannot
//! make root's import copy what a swapped-in symlink points at. Only then,
//! and if no copied file changed meanwhile, are the originals moved aside, whole, to a sibling folder
//! `DIR.imported-YYYYMMDD-HHMMSS`: the mount point is empty again (a later
//! mount must not find it full), and nothing of the user's is deleted.
//!
//! A name that is already in the store with other content stops the import
//! before anything is copied: it is the user's call which one wins.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use backer_fs::history::printable;

use crate::node::MountArgs;

mod folder;

use folder::{Folder, Kind};

/// What an import brought in.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    /// Regular files copied (or found already identical).
    pub(crate) files: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Where the originals are now.
    pub(crate) originals: PathBuf,
}

/// Imports the files of `dir` into the store at `store` (no node may run
/// on it) and moves the originals aside; see the module documentation.
pub(crate) fn run(store: &Path, dir: &Path) -> Result<Imported> {
    if dir.starts_with(store) || store.starts_with(dir) {
        bail!(
            "cannot import {}: the store {} would be inside its own mount",
            dir.display(),
            store.display()
        );
    }
    let at = store.join("import");
    let _ = backer_fs::fuse::clear_dead_mount(&at);
    fs::create_dir_all(&at).with_context(|| format!("cannot create {}", at.display()))?;
    let args = MountArgs {
        dir: at.clone(),
        ..MountArgs::default()
    };
    // The import's own node serves no web page (the real mount will).
    let mut node = super::mount::start_daemon(store, &args, None, Some(""))?;
    let copied = copy_all(dir, &at);
    // Stopped whatever happened: the last commit is made durable. The
    // node is our child: its exit status says whether that commit was.
    let stopped = super::stop::stop(store).and_then(|_| {
        let status = node.wait().context("cannot wait for the import's node")?;
        if !status.success() {
            bail!(
                "the import's node failed at its last commit ({status}; see {}): the originals stay where they are",
                store.join("backer.log").display()
            );
        }
        Ok(())
    });
    let ((files, bytes), seen) = copied?;
    stopped?;
    let _ = fs::remove_dir(&at);
    recheck(&seen)?;
    let originals = move_aside(dir)?;
    Ok(Imported {
        files,
        bytes,
        originals,
    })
}

/// Checks, copies and verifies `from` into the mount `to`; returns the
/// regular files and bytes it holds, and what each original was (for the
/// re-check before they are moved aside).
fn copy_all(from: &Path, to: &Path) -> Result<((u64, u64), Vec<Seen>)> {
    let top = Folder::open(from)?;
    check(&top, to)?;
    let mut done = Done::default();
    copy(&top, to, &mut done, &mut |_| {})?;
    Ok((done.counts, done.seen))
}

/// A regular file as it was copied: it must be so still when the
/// originals are moved aside, or a change made during the import would
/// be moved away without being in the store.
#[derive(Debug)]
struct Seen {
    path: PathBuf,
    len: u64,
    mtime: (i64, i64),
}

/// What `copy` has done so far.
#[derive(Debug, Default)]
struct Done {
    /// Regular files and their bytes.
    counts: (u64, u64),
    seen: Vec<Seen>,
}

/// Fails if a name of `from` is in the store already with other content.
fn check(from: &Folder, to: &Path) -> Result<()> {
    for e in from.entries()? {
        let dst = to.join(&e.name);
        let Ok(there) = fs::symlink_metadata(&dst) else {
            continue;
        };
        let same = match e.kind {
            Kind::Dir if there.is_dir() => {
                check(&from.open_dir(&e)?.0, &dst)?;
                true
            }
            Kind::File if there.is_file() => same_bytes(&mut from.open_file(&e)?.0, &dst)?,
            Kind::Symlink if there.file_type().is_symlink() => {
                from.read_link(&e)? == fs::read_link(&dst)?
            }
            _ => false,
        };
        if !same {
            bail!(
                "cannot import {}: the store already has {} with other content (move one of them)",
                printable(&e.path.display().to_string()),
                printable(&dst.strip_prefix(to).unwrap_or(&dst).display().to_string())
            );
        }
    }
    Ok(())
}

/// Copies `from` into `to` (both folders), reading every file back from
/// the mount and comparing it with the open original. `listed` is called
/// with each folder's path once it is listed (tests swap names there).
fn copy(from: &Folder, to: &Path, done: &mut Done, listed: &mut dyn FnMut(&Path)) -> Result<()> {
    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    let list = from.entries()?;
    listed(from.path());
    for e in list {
        let dst = to.join(&e.name);
        let shown = || printable(&e.path.display().to_string()).into_owned();
        let exists = fs::symlink_metadata(&dst).is_ok();
        // Mode, times and owner come from the open original, never from
        // the path.
        let owner = match e.kind {
            Kind::Dir => {
                let (sub, meta) = from.open_dir(&e)?;
                if !exists {
                    fs::create_dir(&dst).with_context(|| format!("cannot import {}", shown()))?;
                }
                copy(&sub, &dst, done, listed)?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                set_mtime(&dst, &meta);
                (meta.uid(), meta.gid())
            }
            Kind::File => {
                let (mut src, meta) = from.open_file(&e)?;
                if !exists {
                    let mut out = File::create_new(&dst)
                        .with_context(|| format!("cannot import {}", shown()))?;
                    std::io::copy(&mut src, &mut out)
                        .with_context(|| format!("cannot import {}", shown()))?;
                    drop(out);
                    fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                    set_mtime(&dst, &meta);
                }
                src.seek(SeekFrom::Start(0))?;
                if !same_bytes(&mut src, &dst)? {
                    bail!(
                        "the import of {} did not verify: the store's copy differs",
                        shown()
                    );
                }
                done.counts.0 += 1;
                done.counts.1 += meta.len();
                done.seen.push(Seen {
                    path: e.path.clone(),
                    len: meta.len(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                });
                (meta.uid(), meta.gid())
            }
            Kind::Symlink => {
                let target = from.read_link(&e)?;
                if !exists {
                    std::os::unix::fs::symlink(&target, &dst)
                        .with_context(|| format!("cannot import {}", shown()))?;
                }
                if fs::read_link(&dst).ok().as_ref() != Some(&target) {
                    bail!(
                        "the import of {} did not verify: the store's copy differs",
                        shown()
                    );
                }
                // A link is not opened: its owner as listed, relative to
                // the open folder (`read_link` checked it is that link).
                e.owner
            }
            Kind::Other => {
                // Sockets, pipes, devices: not content; they stay with the
                // originals.
                eprintln!(
                    "backer: warning: not imported (not a file, folder or symlink): {}",
                    shown()
                );
                continue;
            }
        };
        if root {
            std::os::unix::fs::lchown(&dst, Some(owner.0), Some(owner.1))
                .with_context(|| format!("cannot give {} its owner", shown()))?;
        }
    }
    Ok(())
}

/// Gives `path` the modification time of `meta` (best effort: a time is
/// not content).
fn set_mtime(path: &Path, meta: &fs::Metadata) {
    if let (Ok(f), Ok(t)) = (File::open(path), meta.modified()) {
        let _ = f.set_modified(t);
    }
}

/// Fails if a regular file copied has changed or gone since (its size or
/// modification time): moving it aside now would lose that change.
fn recheck(seen: &[Seen]) -> Result<()> {
    for s in seen {
        let now = fs::symlink_metadata(&s.path).ok();
        let same = now.is_some_and(|m| {
            m.is_file() && m.len() == s.len && (m.mtime(), m.mtime_nsec()) == s.mtime
        });
        if !same {
            bail!(
                "{} changed during the import: the originals stay where they are (the store has the copy made before; import again or copy it in)",
                printable(&s.path.display().to_string())
            );
        }
    }
    Ok(())
}

/// Whether the open file `a` (read from where it stands) and the file `b`
/// hold the same bytes.
fn same_bytes(fa: &mut File, b: &Path) -> Result<bool> {
    let mut fb = File::open(b).with_context(|| format!("cannot read {}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Moves `dir` to `DIR.imported-YYYYMMDD-HHMMSS` and makes `dir` again,
/// empty, with its mode; returns where the originals are.
fn move_aside(dir: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(dir)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = backer_fs::tree::civil::civil_utc(secs as i64);
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no name", dir.display()))?;
    let mut aside_name = name.to_os_string();
    aside_name.push(format!(".imported-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}"));
    let aside = dir.with_file_name(aside_name);
    fs::rename(dir, &aside).with_context(|| {
        format!(
            "imported, but cannot move the originals to {}",
            aside.display()
        )
    })?;
    fs::create_dir(dir).with_context(|| format!("cannot make {} again", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    // SAFETY: getuid cannot fail.
    if meta.uid() != unsafe { libc::getuid() } {
        let _ = std::os::unix::fs::chown(dir, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file swapped for a symlink after the listing (what a user who can
    /// write in the folder can do to root's import) is not followed: the
    /// import stops and the symlink's target is not copied.
    #[test]
    fn a_file_swapped_for_a_symlink_after_the_listing_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(&from).unwrap();
        fs::create_dir_all(&to).unwrap();
        let secret = tmp.path().join("secret");
        fs::write(&secret, b"the secret").unwrap();
        fs::write(from.join("a"), b"harmless").unwrap();
        let mut done = Done::default();
        let top = Folder::open(&from).unwrap();
        let result = copy(&top, &to, &mut done, &mut |dir| {
            fs::remove_file(dir.join("a")).unwrap();
            std::os::unix::fs::symlink(&secret, dir.join("a")).unwrap();
        });
        let err = result.expect_err("the swap went unnoticed").to_string();
        assert!(err.contains("replaced while being imported"), "{err}");
        assert_ne!(fs::read(to.join("a")).ok(), Some(b"the secret".to_vec()));
    }

    /// The same for a folder swapped for a symlink to another folder: its
    /// files are not copied, and nothing is given their owners.
    #[test]
    fn a_folder_swapped_for_a_symlink_after_the_listing_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(from.join("d")).unwrap();
        fs::create_dir_all(&to).unwrap();
        let secrets = tmp.path().join("secrets");
        fs::create_dir_all(&secrets).unwrap();
        fs::write(secrets.join("shadow"), b"the secret").unwrap();
        let mut done = Done::default();
        let top = Folder::open(&from).unwrap();
        let result = copy(&top, &to, &mut done, &mut |dir| {
            if dir == from {
                fs::remove_dir(dir.join("d")).unwrap();
                std::os::unix::fs::symlink(&secrets, dir.join("d")).unwrap();
            }
        });
        assert!(result.is_err(), "the swap went unnoticed");
        assert!(!to.join("d/shadow").exists());
    }

    /// A file changed after it was copied keeps the originals in place.
    #[test]
    fn a_file_changed_after_its_copy_stops_the_move_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(&from).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("a"), b"one").unwrap();
        let mut done = Done::default();
        copy(&Folder::open(&from).unwrap(), &to, &mut done, &mut |_| {}).unwrap();
        assert_eq!(fs::read(to.join("a")).unwrap(), b"one");
        recheck(&done.seen).unwrap();
        fs::write(from.join("a"), b"one more").unwrap();
        let err = recheck(&done.seen).unwrap_err().to_string();
        assert!(err.contains("changed during the import"), "{err}");
    }
}
