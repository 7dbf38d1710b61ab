//! The store is its owner's alone (DESIGN.md, "Local security"): every
//! folder in it 0700, every file 0600, whatever the caller's umask.
//!
//! Three layers make that hold: a program that runs a node calls
//! [`restrict_umask`] first, so every file anything in the process makes
//! later (the storage engine's own files, the log, the socket) is born
//! private; the store's own code creates its folders and files with
//! explicit modes ([`create_dir`], [`FILE_MODE`]), so a library user with
//! a loose umask gets the same; and [`tighten`] brings a store made by an
//! earlier version (0755 folders, 0644 files) into line when it is opened.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// The mode of every folder in the store.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in the store.
pub const FILE_MODE: u32 = 0o600;
/// The umask a node runs with: nothing for group or others.
pub const UMASK: u32 = 0o077;

/// The umask the process had before [`restrict_umask`]; `u32::MAX` until
/// it is called.
static CALLER_UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// Sets the process umask to [`UMASK`] (keeping any stricter bits the
/// caller had) and remembers the caller's, for files that belong to the
/// caller rather than the store (see [`caller_umask`]). Call it first in
/// `main`, before any thread starts: the umask is per process.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's mask; it cannot fail.
    let old = unsafe { libc::umask(UMASK as libc::mode_t) } as u32;
    // SAFETY: as above; keeps bits the caller masked beyond ours.
    unsafe { libc::umask((old | UMASK) as libc::mode_t) };
    CALLER_UMASK.store(old, Ordering::Relaxed);
}

/// The umask the process started with, if [`restrict_umask`] changed it:
/// what files written for the user outside the store (an export, a
/// restore into a folder) should follow. `None`: the process umask is
/// still the caller's own.
pub fn caller_umask() -> Option<u32> {
    match CALLER_UMASK.load(Ordering::Relaxed) {
        u32::MAX => None,
        m => Some(m),
    }
}

/// Creates `dir` as a private folder (its missing parents with the
/// caller's usual modes), or makes an existing one private.
pub fn create_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    // The mode given to mkdir passed through the umask; set it exactly.
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))
}

/// Opens a private file for writing, creating it 0600 if missing.
pub fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Replaces `dir/name` with `bytes` atomically: a private temporary file,
/// fsync, rename, fsync of the folder. After a crash the file holds either
/// the old bytes or the new, never a mix.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    {
        let mut f = open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("write", e))?;
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| io("chmod", e))?;
        f.write_all(bytes).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| io("rename into", e))?;
    sync_dir(dir)
}

/// fsyncs a folder, so the names created or renamed in it survive a
/// power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

/// Sets every folder under `dir` (itself included) to 0700 and every file
/// to 0600, without following symbolic links; returns how many it had to
/// change. Sockets and other special files only lose group and other bits.
pub fn tighten(dir: &Path) -> Result<usize> {
    let mut changed = 0;
    tighten_one(dir, 0, &mut changed)?;
    Ok(changed)
}

/// The store is two levels deep (STORE/db/..., STORE/packs/...); anything
/// deeper than this is not ours to walk.
const MAX_DEPTH: usize = 8;

fn tighten_one(path: &Path, depth: usize, changed: &mut usize) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        // Gone meanwhile (a temporary file of the engine): nothing to do.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & 0o7777;
    let want = if ft.is_symlink() {
        return Ok(());
    } else if ft.is_dir() {
        DIR_MODE
    } else if ft.is_file() {
        FILE_MODE
    } else if ft.is_socket() || ft.is_fifo() {
        mode & FILE_MODE
    } else {
        mode & DIR_MODE
    };
    if mode != want {
        match fs::set_permissions(path, Permissions::from_mode(want)) {
            Ok(()) => *changed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("chmod {}", path.display()), e)),
        }
    }
    if ft.is_dir() && depth < MAX_DEPTH {
        let entries =
            fs::read_dir(path).map_err(|e| Error::io(format!("list {}", path.display()), e))?;
        for ent in entries {
            let ent = ent.map_err(|e| Error::io(format!("list {}", path.display()), e))?;
            tighten_one(&ent.path(), depth + 1, changed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn tighten_makes_folders_0700_and_files_0600_and_counts() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("store");
        fs::create_dir_all(s.join("db")).unwrap();
        fs::write(s.join("db/db"), b"x").unwrap();
        fs::write(s.join("config.toml"), b"").unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, s.join("link")).unwrap();
        for (p, m) in [
            (s.clone(), 0o755),
            (s.join("db"), 0o775),
            (s.join("db/db"), 0o644),
            (s.join("config.toml"), 0o666),
        ] {
            fs::set_permissions(&p, Permissions::from_mode(m)).unwrap();
        }
        assert_eq!(tighten(&s).unwrap(), 4);
        assert_eq!(mode(&s), 0o700);
        assert_eq!(mode(&s.join("db")), 0o700);
        assert_eq!(mode(&s.join("db/db")), 0o600);
        assert_eq!(mode(&s.join("config.toml")), 0o600);
        // A symlink is not followed out of the store.
        assert_eq!(mode(&outside), 0o644);
        // Already private: nothing to change.
        assert_eq!(tighten(&s).unwrap(), 0);
    }

    #[test]
    fn write_atomic_replaces_the_file_privately() {
        let t = tempfile::tempdir().unwrap();
        write_atomic(t.path(), "k", b"one").unwrap();
        write_atomic(t.path(), "k", b"two").unwrap();
        assert_eq!(fs::read(t.path().join("k")).unwrap(), b"two");
        assert_eq!(mode(&t.path().join("k")), 0o600);
        assert!(!t.path().join(".k.tmp").exists());
    }

    #[test]
    fn create_dir_is_private_and_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }
}
