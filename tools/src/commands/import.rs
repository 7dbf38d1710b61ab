//! `backer mount DIR --import`: bring the files of a non-empty folder into
//! the store before mounting over it, so they are mirrored, not hidden.
//!
//! The store is mounted at a private folder inside it (`STORE/import`) by a
//! node of its own; the folder is copied in through that mount (names,
//! bytes, modes, times, symlinks; owners when root), every file read back
//! and compared, and the node stopped, which makes the last commit durable.
//! Only then are the originals moved aside, whole, to a sibling folder
//! `DIR.imported-YYYYMMDD-HHMMSS`: the mount point is empty again (a later
//! mount must not find it full), and nothing of the user's is deleted.
//!
//! A name that is already in the store with other content stops the import
//! before anything is copied: it is the user's call which one wins.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use backer_fs::history::printable;

use crate::node::MountArgs;

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
    super::mount::start_daemon(store, &args, None, Some(""))?;
    let copied = copy_all(dir, &at);
    // Stopped whatever happened: the last commit is made durable.
    let stopped = super::stop::stop(store);
    let (files, bytes) = copied?;
    stopped?;
    let _ = fs::remove_dir(&at);
    let originals = move_aside(dir)?;
    Ok(Imported {
        files,
        bytes,
        originals,
    })
}

/// Checks, copies and verifies `from` into the mount `to`; returns the
/// regular files and bytes it holds.
fn copy_all(from: &Path, to: &Path) -> Result<(u64, u64)> {
    check(from, to)?;
    let mut counts = (0, 0);
    copy(from, to, &mut counts)?;
    verify(from, to)?;
    Ok(counts)
}

/// The entries of `dir`, sorted by name (so errors are reproducible).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = e?.path();
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        out.push((path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Fails if a name of `from` is in the store already with other content.
fn check(from: &Path, to: &Path) -> Result<()> {
    for (src, meta) in entries(from)? {
        let dst = to.join(src.file_name().unwrap_or_default());
        let Ok(there) = fs::symlink_metadata(&dst) else {
            continue;
        };
        let same = match (meta.file_type(), there.file_type()) {
            (a, b) if a.is_dir() && b.is_dir() => {
                check(&src, &dst)?;
                true
            }
            (a, b) if a.is_file() && b.is_file() => same_bytes(&src, &dst)?,
            (a, b) if a.is_symlink() && b.is_symlink() => {
                fs::read_link(&src)? == fs::read_link(&dst)?
            }
            _ => false,
        };
        if !same {
            bail!(
                "cannot import {}: the store already has {} with other content (move one of them)",
                printable(&src.display().to_string()),
                printable(&dst.strip_prefix(to).unwrap_or(&dst).display().to_string())
            );
        }
    }
    Ok(())
}

/// Copies `from` into `to` (both folders).
fn copy(from: &Path, to: &Path, counts: &mut (u64, u64)) -> Result<()> {
    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    for (src, meta) in entries(from)? {
        let dst = to.join(src.file_name().unwrap_or_default());
        let shown = || printable(&src.display().to_string()).into_owned();
        let kind = meta.file_type();
        if kind.is_dir() {
            if fs::symlink_metadata(&dst).is_err() {
                fs::create_dir(&dst).with_context(|| format!("cannot import {}", shown()))?;
            }
            copy(&src, &dst, counts)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            set_mtime(&dst, &meta);
        } else if kind.is_file() {
            if fs::symlink_metadata(&dst).is_err() {
                fs::copy(&src, &dst).with_context(|| format!("cannot import {}", shown()))?;
                set_mtime(&dst, &meta);
            }
            counts.0 += 1;
            counts.1 += meta.len();
        } else if kind.is_symlink() {
            if fs::symlink_metadata(&dst).is_err() {
                std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)
                    .with_context(|| format!("cannot import {}", shown()))?;
            }
        } else {
            // Sockets, pipes, devices: not content; they stay with the
            // originals.
            eprintln!(
                "backer: warning: not imported (not a file, folder or symlink): {}",
                shown()
            );
            continue;
        }
        if root {
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))
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

/// Reads every file of `from` back from `to` and compares.
fn verify(from: &Path, to: &Path) -> Result<()> {
    for (src, meta) in entries(from)? {
        let dst = to.join(src.file_name().unwrap_or_default());
        let ok = if meta.is_dir() {
            verify(&src, &dst)?;
            true
        } else if meta.is_file() {
            same_bytes(&src, &dst)?
        } else if meta.file_type().is_symlink() {
            fs::read_link(&dst).ok() == Some(fs::read_link(&src)?)
        } else {
            true
        };
        if !ok {
            bail!(
                "the import of {} did not verify: the store's copy differs",
                printable(&src.display().to_string())
            );
        }
    }
    Ok(())
}

/// Whether the files `a` and `b` hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("cannot read {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
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
