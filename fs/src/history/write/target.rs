//! The folder an export or a restore writes into: opened, and made where
//! missing, one name at a time relative to the folder above (`openat`,
//! `mkdirat`), so what is written into is what was checked, with no
//! window for a name to be swapped between the two.
//!
//! Folders it makes are checked on what was opened (`O_NOFOLLOW`,
//! `O_DIRECTORY`, `fstat`): a symlink or another user's folder put there
//! meanwhile (in `/tmp`, say) stops the write. The folder written into
//! must be the caller's own, made now or before. Folders it makes get the
//! caller's umask, as `mkdir -p` or `cp -r` would give them (not the
//! store's 0700: [`crate::store::private::caller_umask`]); what is written
//! inside keeps the tree's modes, so private files stay private.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::sys::{cname, fchmod, fstat, last_error};
use crate::error::{Error, Result};
use crate::store::private::{caller_umask, lstat_at};

/// Opens the folder `out` to write into, making it and its missing
/// parents. The last name is never followed if it is a symlink.
///
/// Errors: [`Error::Request`] if the folder is not the caller's, or a
/// folder made here was swapped meanwhile; I/O errors.
pub(crate) fn open_target(out: &Path) -> Result<OwnedFd> {
    let start = if out.is_absolute() { "/" } else { "." };
    let mut cur = open_start(start)?;
    let names: Vec<&OsStr> = out
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect();
    let mut shown = PathBuf::from(start);
    for (i, name) in names.iter().enumerate() {
        shown.push(name);
        let last = i + 1 == names.len();
        let c = cname(name.as_bytes())?;
        let follow = if last { libc::O_NOFOLLOW } else { 0 };
        cur = match open_dir(&cur, &c, follow) {
            Ok(fd) => {
                if last {
                    check_ours(&fd, &shown)?;
                }
                fd
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => make_dir(&cur, &c, &shown)?,
            Err(e) => return Err(Error::io(format!("cannot open {}", shown.display()), e)),
        };
    }
    Ok(cur)
}

/// Makes the folder `name` in `dir` (shown as `p`) and opens it, checking
/// that what was opened is a folder of the caller's.
fn make_dir(dir: &OwnedFd, name: &std::ffi::CString, p: &Path) -> Result<OwnedFd> {
    // SAFETY: mkdirat on an open folder and a NUL-terminated name.
    let made = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) } == 0;
    if !made {
        let e = std::io::Error::last_os_error();
        // Made meanwhile by someone else: it must pass the check below.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::io(format!("cannot create {}", p.display()), e));
        }
    }
    let fd = open_dir(dir, name, libc::O_NOFOLLOW).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => Error::Request(format!(
            "{} was replaced while it was made: stopped",
            p.display()
        )),
        _ => Error::io(format!("cannot open {}", p.display()), e),
    })?;
    check_ours(&fd, p)?;
    if let (true, Some(mask)) = (made, caller_umask()) {
        fchmod(&fd, 0o777 & !mask, p)?;
    }
    Ok(fd)
}

/// Refuses a folder that is not the caller's: someone else could read and
/// change what is written there.
fn check_ours(fd: &OwnedFd, p: &Path) -> Result<()> {
    let owner = fstat(fd, p)?.st_uid;
    // SAFETY: geteuid cannot fail.
    if owner != unsafe { libc::geteuid() } {
        return Err(Error::Request(format!(
            "{} belongs to another user (uid {owner}): write into a folder of your own",
            p.display()
        )));
    }
    Ok(())
}

/// Opens the folder where a path starts.
fn open_start(start: &str) -> Result<OwnedFd> {
    let c = cname(start.as_bytes())?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error(format!("cannot open {start}")));
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the folder `name` in `dir`, with `extra` flags.
fn open_dir(dir: &OwnedFd, name: &std::ffi::CString, extra: i32) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | extra;
    // SAFETY: openat on an open folder and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `name` exists in the open folder `dir` (not followed).
///
/// Errors: I/O errors other than its absence.
pub(crate) fn exists_at(dir: &OwnedFd, name: &[u8], p: &Path) -> Result<bool> {
    match lstat_at(dir, &cname(name)?) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::io(format!("cannot stat {}", p.display()), e)),
    }
}
