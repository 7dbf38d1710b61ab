//! Reading the folder being imported without ever following a name that
//! changed after it was listed. Root imports a folder other users may write
//! in: between the listing and the copy, one of them can swap a listed file
//! for a symlink to `/etc/shadow`, and a copy by path would bring that into
//! the store under their name. So every name is opened relative to its open
//! parent folder, with `O_NOFOLLOW`, and the opened object must be the very
//! one listed (device, inode and type); contents, modes, times and owners
//! then all come from that open file, never from the path again.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use backer_fs::history::printable;

/// What a listed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    /// Sockets, pipes, devices: not content.
    Other,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// One name of a folder as listed (`lstat`, relative to the open folder).
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: OsString,
    /// The folder's path joined with the name: for messages and the
    /// re-check before the originals are moved aside.
    pub(super) path: PathBuf,
    pub(super) kind: Kind,
    /// Owner and group as listed: for a symlink (never opened), the
    /// owner to give its copy.
    pub(super) owner: (u32, u32),
    dev: u64,
    ino: u64,
}

/// An open folder of the tree being imported.
pub(super) struct Folder {
    fd: File,
    path: PathBuf,
}

impl Folder {
    /// Opens the folder the user named (the top of the import).
    pub(super) fn open(path: &Path) -> Result<Folder> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: `c` is a valid NUL-terminated string; the fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            bail!("cannot read {}: {e}", path.display());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let fd = unsafe { File::from_raw_fd(fd) };
        Ok(Folder {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Where this folder is (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The names of this folder, sorted (so errors are reproducible).
    pub(super) fn entries(&self) -> Result<Vec<Entry>> {
        let shown = || self.path.display().to_string();
        // SAFETY: F_DUPFD_CLOEXEC on an open fd; the copy is owned by the
        // DIR stream below, which closedir closes.
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            let e = std::io::Error::last_os_error();
            bail!("cannot read {}: {e}", shown());
        }
        // SAFETY: `dup` is an open folder fd handed over to the stream.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = std::io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            bail!("cannot read {}: {e}", shown());
        }
        // The copy shares its offset with `self.fd`: an earlier listing
        // left it at the end.
        // SAFETY: `dirp` is an open stream.
        unsafe { libc::rewinddir(dirp) };
        let mut names = Vec::new();
        let read = loop {
            // SAFETY: errno is thread-local; cleared to tell the end of
            // the stream (NULL, errno 0) from an error (NULL, errno set).
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `dirp` is an open stream until closedir below.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                let e = std::io::Error::last_os_error();
                break if e.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            // SAFETY: readdir returned a valid entry with a NUL-terminated name.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(name.to_owned());
            }
        };
        // SAFETY: `dirp` is open; closing it closes `dup`.
        unsafe { libc::closedir(dirp) };
        read.with_context(|| format!("cannot read {}", shown()))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let name = OsStr::from_bytes(name.to_bytes()).to_os_string();
            let path = self.path.join(&name);
            let st = self
                .lstat(&name)
                .with_context(|| format!("cannot read {}", path.display()))?;
            out.push(Entry {
                name,
                path,
                kind: Kind::of(st.st_mode),
                owner: (st.st_uid, st.st_gid),
                dev: st.st_dev,
                ino: st.st_ino,
            });
        }
        Ok(out)
    }

    /// Opens the listed folder `e`; an error if it is no longer the one
    /// listed.
    pub(super) fn open_dir(&self, e: &Entry) -> Result<(Folder, Metadata)> {
        let fd = self.open_at(e, libc::O_DIRECTORY)?;
        let meta = same(e, &fd)?;
        Ok((
            Folder {
                fd,
                path: e.path.clone(),
            },
            meta,
        ))
    }

    /// Opens the listed regular file `e` for reading; an error if it is no
    /// longer the one listed.
    pub(super) fn open_file(&self, e: &Entry) -> Result<(File, Metadata)> {
        // O_NONBLOCK: a name swapped for a pipe must not hang the open
        // (regular files ignore it).
        let fd = self.open_at(e, libc::O_NONBLOCK)?;
        let meta = same(e, &fd)?;
        Ok((fd, meta))
    }

    /// The target of the listed symlink `e` (never followed); an error if
    /// the name is no longer that link.
    pub(super) fn read_link(&self, e: &Entry) -> Result<PathBuf> {
        let c = cstring(&e.name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: `buf` is writable for its length; `c` is NUL-terminated.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            let err = std::io::Error::last_os_error();
            bail!("cannot read {}: {err}", e.path.display());
        };
        buf.truncate(n);
        // Still the link listed (its owner is the listing's).
        let st = self
            .lstat(&e.name)
            .with_context(|| format!("cannot read {}", e.path.display()))?;
        if st.st_dev != e.dev || st.st_ino != e.ino || Kind::of(st.st_mode) != e.kind {
            return Err(changed(e));
        }
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    /// `fstatat(name, AT_SYMLINK_NOFOLLOW)` relative to this folder.
    fn lstat(&self, name: &OsStr) -> std::io::Result<libc::stat> {
        let c = cstring(name).map_err(std::io::Error::other)?;
        backer_fs::store::private::lstat_at(&self.fd, &c)
    }

    /// `openat(name, O_RDONLY|O_NOFOLLOW|flags)` relative to this folder.
    fn open_at(&self, e: &Entry, flags: libc::c_int) -> Result<File> {
        let c = cstring(&e.name)?;
        // SAFETY: `c` is NUL-terminated; the fd is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags,
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ELOOP) || err.raw_os_error() == Some(libc::ENOTDIR)
            {
                return Err(changed(e));
            }
            bail!("cannot read {}: {err}", e.path.display());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

/// The opened file's status, if it is the object `e` listed.
fn same(e: &Entry, fd: &File) -> Result<Metadata> {
    let meta = fd
        .metadata()
        .with_context(|| format!("cannot read {}", e.path.display()))?;
    if meta.dev() != e.dev || meta.ino() != e.ino || Kind::of(meta.mode()) != e.kind {
        return Err(changed(e));
    }
    Ok(meta)
}

/// The one-line error of a name replaced while it was being imported.
fn changed(e: &Entry) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot import {}: it was replaced while being imported (nothing of the originals was changed; run the import again)",
        printable(&e.path.display().to_string())
    )
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("bad name {}", s.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder listed twice (the check, then the copy) lists all its
    /// names both times.
    #[test]
    fn a_folder_lists_the_same_names_every_time() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"").unwrap();
        std::fs::create_dir(tmp.path().join("b")).unwrap();
        let f = Folder::open(tmp.path()).unwrap();
        let names = |f: &Folder| -> Vec<(OsString, Kind)> {
            f.entries()
                .unwrap()
                .into_iter()
                .map(|e| (e.name, e.kind))
                .collect()
        };
        let want = vec![("a".into(), Kind::File), ("b".into(), Kind::Dir)];
        assert_eq!(names(&f), want);
        assert_eq!(names(&f), want);
    }
}
