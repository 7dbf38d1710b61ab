//! The system calls of the writer, each on an open folder or file
//! (`openat`, `O_NOFOLLOW`, `fchmod`, `futimens`), with the path only for
//! messages.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::tree::Timestamp;

/// A name as C wants it (validated names hold no NUL).
pub(super) fn cname(name: &[u8]) -> Result<CString> {
    CString::new(name).map_err(|_| Error::InvalidName)
}

/// The last OS error, saying what we were doing.
pub(super) fn last_error(doing: String) -> Error {
    Error::io(doing, std::io::Error::last_os_error())
}

/// Opens `name` in `dir` (shown as `p`) with `flags`, never through a
/// symlink; new files are made 0600.
pub(super) fn open_at(
    dir: &OwnedFd,
    name: &CString,
    flags: libc::c_int,
    p: &Path,
) -> Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat on an open folder and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(last_error(format!("cannot open {}", p.display())));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the folder `name` in `dir` (shown as `p`), not through a symlink.
pub(super) fn open_dir_at(dir: &OwnedFd, name: &CString, p: &Path) -> Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, p)
}

/// The `stat` of an open file.
pub(super) fn fstat(fd: &impl AsRawFd, p: &Path) -> Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a stat to fill.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_error(format!("cannot stat {}", p.display())));
    }
    Ok(st)
}

/// The (device, inode) of an open file.
pub(super) fn dev_ino(fd: &impl AsRawFd, p: &Path) -> Result<(u64, u64)> {
    let st = fstat(fd, p)?;
    #[allow(clippy::unnecessary_cast)] // the widths differ between systems
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The file type bits of an open file.
pub(super) fn kind_of(fd: &impl AsRawFd, p: &Path) -> Result<libc::mode_t> {
    Ok(fstat(fd, p)?.st_mode & libc::S_IFMT)
}

/// Sets the permission bits of an open file.
pub(super) fn fchmod(fd: &impl AsRawFd, mode: u32, p: &Path) -> Result<()> {
    // SAFETY: an open descriptor.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(last_error(format!(
            "cannot set the mode of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Gives an open file the owner `ids` (before its mode: a chown drops
/// set-id bits).
pub(super) fn fchown(fd: &impl AsRawFd, ids: (u32, u32), p: &Path) -> Result<()> {
    // SAFETY: an open descriptor.
    if unsafe { libc::fchown(fd.as_raw_fd(), ids.0, ids.1) } != 0 {
        return Err(last_error(format!(
            "cannot set the owner of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Gives `name` in `dir` itself (a symlink's own) the owner `ids`.
pub(super) fn chown_at(dir: &OwnedFd, name: &CString, ids: (u32, u32), p: &Path) -> Result<()> {
    // SAFETY: fchownat on an open folder and a NUL-terminated name.
    let r = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ids.0,
            ids.1,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the owner of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Sets the permission bits of `name` in `dir`, failing rather than
/// following it if it is a symlink (for device nodes, which are not
/// opened).
pub(super) fn set_mode_at(dir: &OwnedFd, name: &CString, mode: u32, p: &Path) -> Result<()> {
    // SAFETY: fchmodat on an open folder and a NUL-terminated name.
    let r = unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the mode of {}",
            p.display()
        )));
    }
    Ok(())
}

/// The times `futimens` and `utimensat` take: the atime left alone.
pub(super) fn mtime_only(t: Timestamp) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        },
    ]
}

/// Sets the mtime of an open file.
pub(super) fn futimens(fd: &impl AsRawFd, t: Timestamp, p: &Path) -> Result<()> {
    let times = mtime_only(t);
    // SAFETY: an open descriptor and two initialised timespecs.
    if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(last_error(format!(
            "cannot set the mtime of {}",
            p.display()
        )));
    }
    Ok(())
}

/// Sets the mtime of `name` in `dir` itself (a symlink's own), leaving
/// the atime alone.
pub(super) fn set_mtime_at(dir: &OwnedFd, name: &CString, t: Timestamp, p: &Path) -> Result<()> {
    let times = mtime_only(t);
    // SAFETY: an open folder, a NUL-terminated name and two initialised
    // timespecs.
    let r = unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_error(format!(
            "cannot set the mtime of {}",
            p.display()
        )));
    }
    Ok(())
}
