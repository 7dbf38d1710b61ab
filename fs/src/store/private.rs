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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

mod tighten;
pub use tighten::{holds_only_store_names, lstat_at, tighten, STORE_NAMES};

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
/// restore into a folder: `history::write`'s target folders) follow.
/// `None`: the process umask is still the caller's own.
pub fn caller_umask() -> Option<u32> {
    match CALLER_UMASK.load(Ordering::Relaxed) {
        u32::MAX => None,
        m => Some(m),
    }
}

/// Creates `dir` as a private folder (its missing parents with the
/// caller's usual modes); an existing one is left to [`tighten`].
pub fn create_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        // An existing folder is made private by [`tighten`], which checks
        // what it leads to first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    // The mode given to mkdir passed through the umask; set it exactly, on
    // the folder just made (not on whatever the name leads to by now).
    let made = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
    made.set_permissions(Permissions::from_mode(DIR_MODE))
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
    fn tighten_touches_only_the_stores_own_names() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("store");
        fs::create_dir_all(s.join("packs")).unwrap();
        fs::create_dir_all(s.join("photos")).unwrap();
        fs::write(s.join("packs/1.pack"), b"").unwrap();
        fs::write(s.join("notes.txt"), b"").unwrap();
        for p in [s.join("packs/1.pack"), s.join("notes.txt")] {
            fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(s.join("photos"), Permissions::from_mode(0o755)).unwrap();
        tighten(&s).unwrap();
        assert_eq!(mode(&s.join("packs/1.pack")), 0o600);
        assert_eq!(mode(&s.join("notes.txt")), 0o644, "not the store's");
        assert_eq!(mode(&s.join("photos")), 0o755, "not the store's");
    }

    #[test]
    fn tighten_follows_a_symlinked_store_only_to_its_owners_folder() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("config.toml"), b"").unwrap();
        fs::set_permissions(real.join("config.toml"), Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&real, Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("store");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // A link to a folder of the same owner: tightened through it.
        assert_eq!(tighten(&link).unwrap(), 2);
        assert_eq!(mode(&real), 0o700);
        assert_eq!(mode(&real.join("config.toml")), 0o600);
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // Root's link into another user's folder: refused, untouched.
        fs::set_permissions(real.join("config.toml"), Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
        let e = tighten(&link).unwrap_err().to_string();
        assert!(e.contains("another user"), "{e}");
        assert_eq!(mode(&real.join("config.toml")), 0o644);
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
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }
}
