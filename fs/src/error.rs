//! The one error type of backer-fs.
//!
//! How errors flow:
//! - Every fallible function in this crate returns [`Result<T>`]. Variants
//!   name what went wrong in the domain (a name that does not exist, a
//!   directory that is not empty), not which call failed.
//! - Errors from the storage engine and the file system carry their source
//!   and become `EIO` (or their own errno) at the FUSE edge.
//! - [`Error::errno`] is the only place an errno is chosen. It is an
//!   exhaustive `match`: adding a variant forces a decision here, never a
//!   silent catch-all.
//! - Nothing in this crate panics on bad input: a bad name, offset or inode
//!   is an `Err`, and the caller decides what the user sees.

use std::io;

/// The result type of backer-fs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in backer-fs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such file, directory or inode (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The name already exists (`EEXIST`); also the reserved `.backer`.
    #[error("file exists")]
    Exists,
    /// A directory was expected (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// A non-directory was expected (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// rmdir or rename over a directory that still has entries (`ENOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// A name with '/', NUL, or that is empty, "." or ".." (`EINVAL`).
    #[error("invalid file name")]
    InvalidName,
    /// A name over 255 bytes or a symlink target over 4095 (`ENAMETOOLONG`).
    #[error("file name too long")]
    NameTooLong,
    /// An argument out of range: offset, size, flags (`EINVAL`).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A file is too large or an offset past the maximum (`EFBIG`).
    #[error("file too large")]
    FileTooLarge,
    /// A rename would move a directory beneath itself (`EINVAL`).
    #[error("cannot move a directory beneath itself")]
    Loop,
    /// An unknown or already released file handle (`EBADF`).
    #[error("bad file handle")]
    BadHandle,
    /// Operation not permitted (`EPERM`): e.g. a hard link to a directory.
    #[error("operation not permitted")]
    NotPermitted,
    /// Permission denied by mode bits (`EACCES`).
    #[error("permission denied")]
    AccessDenied,
    /// A write to a read-only view (`EROFS`).
    #[error("read-only file system")]
    ReadOnly,
    /// The extended attribute does not exist (`ENODATA`).
    #[error("no such attribute")]
    NoAttribute,
    /// The caller's buffer is too small for the answer (`ERANGE`).
    #[error("result does not fit the buffer")]
    Range,
    /// An attribute name or value over the limits (`E2BIG`, or `ERANGE`
    /// for names as Linux does).
    #[error("attribute too large")]
    AttributeTooLarge,
    /// Not a symbolic link, or not the kind of file the call needs (`EINVAL`).
    #[error("not a symbolic link")]
    NotSymlink,
    /// The store keeps a reserve of free disk and refuses writes below it
    /// (`ENOSPC`).
    #[error("no space left on device")]
    NoSpace,
    /// Another process holds the store open (`EBUSY`).
    #[error("the store is in use by another process")]
    Locked,
    /// A directory nested deeper than a path can name (`ENAMETOOLONG`).
    #[error("directory tree too deep")]
    TooDeep,
    /// A history request that names nothing it could act on: a path with
    /// `..`, a time or commit id of no version, a path absent then
    /// (`EINVAL`). The message is what the user sees, whole.
    #[error("{0}")]
    Request(String),
    /// The operation is not supported here (`EOPNOTSUPP`).
    #[error("operation not supported")]
    NotSupported,
    /// The store was made by a newer or unknown format (`EIO` at the edge).
    #[error("store format {found} is not supported (this build reads {supported})")]
    Format {
        /// The version written in the store.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// Stored bytes that do not decode or do not match their hash (`EIO`).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store's database (its index) is missing or does not open; the
    /// packs can rebuild it (`EIO`). The message is for the user, whole.
    #[error("its database is missing or damaged ({0}); run 'backer check --repair' to rebuild it from the packs")]
    IndexDamaged(String),
    /// A chunk a tree names that this node cannot produce (`EIO`): its
    /// copy failed its hash check (and was quarantined: the index no
    /// longer claims it) or the index lacks it.
    #[error("chunk {0} is damaged or missing")]
    BadChunk(crate::hash::Hash),
    /// The node's key file is missing, damaged or disagrees with the
    /// database (`EIO`): the store refuses to open rather than become a
    /// new node.
    #[error("node key: {0}")]
    NodeKey(String),
    /// The storage engine failed (`EIO`).
    #[error("storage engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file system call failed; the errno is passed through.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno the kernel should see for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::InvalidName => libc::EINVAL,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::FileTooLarge => libc::EFBIG,
            Error::Loop => libc::EINVAL,
            Error::BadHandle => libc::EBADF,
            Error::NotPermitted => libc::EPERM,
            Error::AccessDenied => libc::EACCES,
            Error::ReadOnly => libc::EROFS,
            Error::NoAttribute => libc::ENODATA,
            Error::Range => libc::ERANGE,
            Error::AttributeTooLarge => libc::E2BIG,
            Error::NotSymlink => libc::EINVAL,
            Error::NoSpace => libc::ENOSPC,
            Error::Locked => libc::EBUSY,
            Error::TooDeep => libc::ENAMETOOLONG,
            Error::NotSupported => libc::EOPNOTSUPP,
            Error::Format { .. } => libc::EIO,
            Error::Request(_) => libc::EINVAL,
            Error::Corrupt(_) => libc::EIO,
            Error::IndexDamaged(_) => libc::EIO,
            Error::BadChunk(_) => libc::EIO,
            Error::NodeKey(_) => libc::EIO,
            Error::Engine(_) => libc::EIO,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(e) => e,
                None if source.kind() == io::ErrorKind::StorageFull => libc::ENOSPC,
                None => libc::EIO,
            },
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A decode failure or hash mismatch in stored bytes.
    pub fn corrupt(what: impl Into<String>) -> Error {
        Error::Corrupt(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_is_specific() {
        assert_eq!(Error::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(Error::NoAttribute.errno(), libc::ENODATA);
        assert_eq!(Error::Range.errno(), libc::ERANGE);
        assert_eq!(Error::AttributeTooLarge.errno(), libc::E2BIG);
        assert_eq!(Error::corrupt("x").errno(), libc::EIO);
        let e = Error::io("pack", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
    }
}
