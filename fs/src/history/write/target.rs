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

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::sys::{cname, fchmod, fstat, last_error};
use crate::error::{Error, Result};
use crate::store::private::{caller_umask, lstat_at};

/// At most this many symlinks are followed on the way (the kernel's
/// MAXSYMLINKS): a loop of links ends with an error, not a hang.
const MAX_LINKS: usize = 40;

/// Opens the folder `out` to write into, making it and its missing
/// parents. The last name is never followed if it is a symlink; a symlink
/// on the way is followed only if it belongs to the caller or root (as
/// the kernel's `protected_symlinks` rule does in shared folders), and its
/// target is walked the same way, one name at a time: a link that another
/// user put in a folder on the way (`/tmp/x/out` with `/tmp/x` theirs)
/// cannot send the write elsewhere.
///
/// Errors: [`Error::Request`] if the folder is not the caller's, or a
/// folder made here was swapped meanwhile, or a link on the way is
/// someone else's; I/O errors.
pub(crate) fn open_target(out: &Path) -> Result<OwnedFd> {
    let start = if out.is_absolute() { "/" } else { "." };
    let mut cur = open_start(start)?;
    let mut names: VecDeque<OsString> = components(out).collect();
    let mut shown = PathBuf::from(start);
    let mut links = 0;
    while let Some(name) = names.pop_front() {
        shown.push(&name);
        let last = names.is_empty();
        let c = cname(name.as_bytes())?;
        cur = match open_dir(&cur, &c, libc::O_NOFOLLOW) {
            Ok(fd) => {
                if last {
                    check_ours(&fd, &shown)?;
                }
                fd
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => make_dir(&cur, &c, &shown)?,
            Err(e) if !last && matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let Some(target) = trusted_link(&cur, &c, &shown)? else {
                    return Err(Error::io(format!("cannot open {}", shown.display()), e));
                };
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::io(
                        format!("cannot open {}", shown.display()),
                        std::io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                let target = Path::new(OsStr::from_bytes(&target));
                if target.is_absolute() {
                    cur = open_start("/")?;
                }
                for n in components(target).collect::<Vec<_>>().into_iter().rev() {
                    names.push_front(n);
                }
                continue;
            }
            Err(e) => return Err(Error::io(format!("cannot open {}", shown.display()), e)),
        };
    }
    Ok(cur)
}

/// The names of `p` to open one by one (`.` and the root dropped).
fn components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// The target of the symlink `name` in `dir` (shown as `p`) if the caller
/// may follow it (it belongs to the caller or root); `None` if `name` is
/// not a symlink.
///
/// Errors: [`Error::Request`] for someone else's link; I/O errors.
fn trusted_link(dir: &OwnedFd, name: &CString, p: &Path) -> Result<Option<Vec<u8>>> {
    let st =
        lstat_at(dir, name).map_err(|e| Error::io(format!("cannot stat {}", p.display()), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        return Ok(None);
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != me && st.st_uid != 0 {
        return Err(Error::Request(format!(
            "{} is a symlink of another user (uid {}): not followed; name the folder it leads to",
            p.display(),
            st.st_uid
        )));
    }
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat on an open folder, a NUL-terminated name and a
    // buffer of buf.len() bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(last_error(format!("cannot read the link {}", p.display())));
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
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
