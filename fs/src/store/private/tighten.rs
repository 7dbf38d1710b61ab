//! [`tighten`]: a store made by an earlier version (0755 folders, 0644
//! files) brought into line when it is opened, touching only what is the
//! store's own.
//!
//! The store folder may be named through a symlink (a store kept on
//! another disk), but what the name leads to is checked where it is
//! opened (`fstat` on the open folder): it must belong to the caller, and
//! for root to whoever owns the symlink, so `--store` never turns root's
//! chmods onto another user's or the system's files. Inside it only the
//! store's known names ([`STORE_NAMES`]) are touched, never followed
//! through a symlink, never across a mount (a dead FUSE mount someone left
//! in the store is skipped, not an error), each set on what was opened
//! (`openat`, `O_NOFOLLOW`, `fchmod`).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{DIR_MODE, FILE_MODE};
use crate::error::{Error, Result};

/// Every name a store folder holds: the engine (and an upgrade's copies),
/// the packs, the key, the settings and the running node's socket, pid,
/// log and lock (with their temporary and rotated twins).
pub const STORE_NAMES: &[&str] = &[
    "db",
    "db.new",
    "db.old",
    "packs",
    "node.key",
    ".node.key.tmp",
    "config.toml",
    ".config.toml.tmp",
    "backer.sock",
    "backer.pid",
    "backer.log",
    "backer.log.1",
    "open.lock",
];

/// The store's folders: everything in them is the store's.
const STORE_DIRS: &[&str] = &["db", "db.new", "db.old", "packs"];

/// How deep the engine's folders go (`db/blobs/...`); deeper is not ours.
const MAX_DEPTH: usize = 4;

/// Sets the store folder `dir` and every folder of the store to 0700, and
/// every file to 0600 (sockets and other special files only lose group
/// and other bits); returns how many it had to change.
///
/// Errors: [`Error::Request`] if `dir` leads to a folder of another user
/// (see the module's doc); I/O errors.
pub fn tighten(dir: &Path) -> Result<usize> {
    let top = open_store(dir)?;
    let mut changed = 0;
    fix_open(&top, DIR_MODE, dir, &mut changed)?;
    let dev = fstat(&top, dir)?.st_dev;
    for name in STORE_NAMES {
        let c = CString::new(*name).map_err(|_| Error::InvalidName)?;
        let deep = STORE_DIRS.contains(name);
        tighten_at(
            &top,
            &c,
            &dir.join(name),
            dev,
            deep.then_some(0),
            &mut changed,
        )?;
    }
    Ok(changed)
}

/// Whether `dir` holds nothing that is not a store's (a new folder, or
/// what an init cut short left).
///
/// Errors: I/O errors listing it (a missing folder is empty).
pub fn holds_only_store_names(dir: &Path) -> Result<bool> {
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for ent in list {
        let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        if !STORE_NAMES
            .iter()
            .any(|n| n.as_bytes() == ent.file_name().as_bytes())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens the store folder `dir` (through a symlink if it is one) and
/// checks who owns what was opened.
fn open_store(dir: &Path) -> Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::InvalidName)?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error(format!("open {}", dir.display())));
    }
    // SAFETY: just opened, owned by nothing else.
    let top = unsafe { OwnedFd::from_raw_fd(fd) };
    let owner = fstat(&top, dir)?.st_uid;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let link_owner = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            use std::os::unix::fs::MetadataExt;
            Some(m.uid())
        }
        _ => None,
    };
    let allowed = match link_owner {
        // Root may keep a user's store (the mount helper); its files stay
        // the user's (chmod changes no owner).
        None => owner == me || me == 0,
        Some(link) => owner == me || (me == 0 && owner == link),
    };
    if !allowed {
        let via = match link_owner {
            Some(_) => " (through a symlink)",
            None => "",
        };
        return Err(Error::Request(format!(
            "the store at {} leads{via} to a folder of another user (uid {owner}): refused",
            dir.display()
        )));
    }
    Ok(top)
}

/// Tightens `name` in the open folder `parent` (shown as `p`); `depth`:
/// inside a store folder, how deep (`None`: a top-level name, whose
/// folder, if any, is not entered).
fn tighten_at(
    parent: &OwnedFd,
    name: &CStr,
    p: &Path,
    dev: libc::dev_t,
    depth: Option<usize>,
    changed: &mut usize,
) -> Result<()> {
    let st = match lstat_at(parent, name) {
        Ok(st) => st,
        // Gone meanwhile (a temporary file of the engine), or a dead
        // mount (ENOTCONN): nothing of ours to change.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTCONN)) => {
            if e.raw_os_error() == Some(libc::ENOTCONN) {
                tracing::warn!(path = %p.display(), "a dead mount in the store: left alone");
            }
            return Ok(());
        }
        Err(e) => return Err(Error::io(format!("stat {}", p.display()), e)),
    };
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK || st.st_dev != dev {
        return Ok(()); // never followed, never across a mount
    }
    let mode = st.st_mode & 0o7777;
    if kind == libc::S_IFDIR {
        let Some(depth) = depth else {
            return fix_at(parent, name, mode, DIR_MODE, p, changed);
        };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: an open folder and a NUL-terminated name.
        let fd = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(last_error(format!("open {}", p.display())));
        }
        // SAFETY: just opened, owned by nothing else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        fix_open(&dir, DIR_MODE, p, changed)?;
        if depth < MAX_DEPTH {
            for child in list(&dir, p)? {
                let shown = p.join(std::ffi::OsStr::from_bytes(child.as_bytes()));
                tighten_at(&dir, &child, &shown, dev, Some(depth + 1), changed)?;
            }
        }
        return Ok(());
    }
    let want = match kind {
        libc::S_IFREG => FILE_MODE,
        libc::S_IFSOCK | libc::S_IFIFO => mode & FILE_MODE,
        _ => mode & DIR_MODE,
    };
    fix_at(parent, name, mode, want, p, changed)
}

/// Sets an open file's mode to `want` if it is not.
fn fix_open(fd: &OwnedFd, want: u32, p: &Path, changed: &mut usize) -> Result<()> {
    if fstat(fd, p)?.st_mode & 0o7777 == want {
        return Ok(());
    }
    // SAFETY: an open descriptor.
    if unsafe { libc::fchmod(fd.as_raw_fd(), want as libc::mode_t) } != 0 {
        return Err(last_error(format!("chmod {}", p.display())));
    }
    *changed += 1;
    Ok(())
}

/// Sets `name` in `parent` from `mode` to `want`. The name was just seen
/// not to be a symlink, and the folder is the store's own (0700 from its
/// first tightening on, so no one else can swap it meanwhile).
fn fix_at(
    parent: &OwnedFd,
    name: &CStr,
    mode: u32,
    want: u32,
    p: &Path,
    changed: &mut usize,
) -> Result<()> {
    if mode == want {
        return Ok(());
    }
    // SAFETY: an open folder and a NUL-terminated name.
    let r = unsafe { libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), want as libc::mode_t, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(Error::io(format!("chmod {}", p.display()), e));
    }
    *changed += 1;
    Ok(())
}

/// The names in an open folder, `.` and `..` left out.
fn list(dir: &OwnedFd, p: &Path) -> Result<Vec<CString>> {
    // SAFETY: duplicates an open descriptor (fdopendir takes the copy).
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(last_error(format!("list {}", p.display())));
    }
    // SAFETY: `dup` is an open folder that the stream now owns.
    let stream = unsafe { libc::fdopendir(dup) };
    if stream.is_null() {
        let e = last_error(format!("list {}", p.display()));
        // SAFETY: fdopendir failed, so `dup` is still ours to close.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is this thread's; readdir sets it only on error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: an open stream.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            let e = std::io::Error::last_os_error();
            break match e.raw_os_error() {
                Some(0) | None => Ok(()),
                _ => Err(Error::io(format!("list {}", p.display()), e)),
            };
        }
        // SAFETY: readdir returned an entry whose name is NUL-terminated
        // and valid until the next readdir on this stream.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    };
    // SAFETY: the stream is open and closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

/// The `stat` of an open file.
fn fstat(fd: &OwnedFd, p: &Path) -> Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a stat to fill.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error(format!("stat {}", p.display())));
    }
    Ok(st)
}

/// The `lstat` of `name` in an open folder (never followed).
pub fn lstat_at(dir: &impl AsRawFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open folder, a NUL-terminated name and a stat to fill.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn last_error(doing: String) -> Error {
    Error::io(doing, std::io::Error::last_os_error())
}
