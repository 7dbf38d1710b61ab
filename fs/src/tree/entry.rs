//! One name in a directory: the unit that is hashed, replicated and merged.
//!
//! An [`Entry`] holds only what every replica must agree on. Facts that are
//! local to one machine (owner uid/gid, atime, ctime, nlink, inode numbers)
//! live in the vfs's live namespace, never here, so they can never make two
//! replicas' root hashes differ.

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::identity::NodeId;
use crate::tree::vv::VersionVector;

/// The longest name, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// The longest symlink target, in bytes (Linux `PATH_MAX` less the NUL).
pub const MAX_TARGET_LEN: usize = 4095;

/// The permission bits an entry keeps (`rwx` for all, setuid, setgid,
/// sticky). The file type is [`Kind`], never mode bits.
pub const MODE_MASK: u32 = 0o7777;

/// What kind of file an entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file; its content is a content tree ([`crate::tree::content`]).
    File,
    /// A directory; its entries are a directory tree ([`crate::tree::dir`]).
    Dir,
    /// A symbolic link; its target is [`Entry::target`].
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device; its device number is [`Entry::rdev`].
    CharDev,
    /// A block device; its device number is [`Entry::rdev`].
    BlockDev,
}

/// A modification time: seconds since the Unix epoch (negative before it)
/// and nanoseconds within the second (always below 1,000,000,000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

/// One name in a directory, exactly what is hashed and replicated.
///
/// Which fields are meaningful depends on [`Kind`]; the others must be zero or
/// empty so one meaning has one encoding (see [`Entry::validate`]). Owner,
/// atime, ctime and nlink are local facts and are not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name, as raw bytes (Linux names are bytes, not UTF-8).
    pub name: Vec<u8>,
    /// What kind of file this is.
    pub kind: Kind,
    /// Permission bits only (`mode & 0o7777`).
    pub mode: u32,
    /// Last modification time.
    pub mtime: Timestamp,
    /// File: content length; symlink: target length; otherwise 0.
    pub size: u64,
    /// File: content hash ([`crate::tree::content::build`]); directory:
    /// subtree hash ([`crate::tree::dir::build`]); otherwise [`Hash::ZERO`].
    pub hash: Hash,
    /// Symlink target; otherwise empty.
    pub target: Vec<u8>,
    /// Device number of a character or block device; otherwise 0.
    pub rdev: u64,
    /// Which edits this version has seen.
    pub vv: VersionVector,
    /// The node that made this version (names conflict copies).
    pub modified_by: NodeId,
    /// A tombstone: the name was deleted, and the deletion replicates.
    pub deleted: bool,
}

/// Checks that `name` can be one directory entry's name.
///
/// Errors: [`Error::InvalidName`] for the empty name, `.`, `..`, or a name
/// containing `/` or NUL; [`Error::NameTooLong`] over [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(Error::InvalidName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong);
    }
    Ok(())
}

impl Entry {
    /// Checks every rule an entry must keep to be stored in a tree: a valid
    /// name, permission bits only, nanoseconds below one second, and the
    /// fields that do not belong to its kind zero or empty:
    ///
    /// | kind            | `size`       | `hash`    | `target`  | `rdev` |
    /// |-----------------|--------------|-----------|-----------|--------|
    /// | File            | any          | any       | empty     | 0      |
    /// | Dir             | 0            | any       | empty     | 0      |
    /// | Symlink         | target len   | ZERO      | no NUL    | 0      |
    /// | Fifo, Socket    | 0            | ZERO      | empty     | 0      |
    /// | CharDev, BlockDev | 0          | ZERO      | empty     | any    |
    ///
    /// Errors: those of [`validate_name`]; [`Error::NameTooLong`] for a target
    /// over [`MAX_TARGET_LEN`]; [`Error::InvalidArgument`] for the rest.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.mode & !MODE_MASK != 0 {
            return Err(Error::InvalidArgument("mode has bits outside 0o7777"));
        }
        if self.mtime.nanos >= 1_000_000_000 {
            return Err(Error::InvalidArgument("mtime nanoseconds out of range"));
        }
        if self.target.len() > MAX_TARGET_LEN {
            return Err(Error::NameTooLong);
        }
        let (size_ok, hash_ok, target_ok, rdev_ok) = match self.kind {
            Kind::File => (true, true, self.target.is_empty(), self.rdev == 0),
            Kind::Dir => (self.size == 0, true, self.target.is_empty(), self.rdev == 0),
            Kind::Symlink => (
                self.size == self.target.len() as u64,
                self.hash == Hash::ZERO,
                !self.target.contains(&0),
                self.rdev == 0,
            ),
            Kind::Fifo | Kind::Socket => (
                self.size == 0,
                self.hash == Hash::ZERO,
                self.target.is_empty(),
                self.rdev == 0,
            ),
            Kind::CharDev | Kind::BlockDev => (
                self.size == 0,
                self.hash == Hash::ZERO,
                self.target.is_empty(),
                true,
            ),
        };
        if !size_ok {
            return Err(Error::InvalidArgument("entry size does not fit its kind"));
        }
        if !hash_ok {
            return Err(Error::InvalidArgument(
                "entry hash must be zero for its kind",
            ));
        }
        if !target_ok {
            return Err(Error::InvalidArgument("entry target does not fit its kind"));
        }
        if !rdev_ok {
            return Err(Error::InvalidArgument(
                "entry rdev must be zero for its kind",
            ));
        }
        Ok(())
    }

    /// Whether `self` and `other` hold the same data (live or deleted,
    /// kind, bytes, target, device), whatever their mode, mtime and
    /// history: the one test of "the same entry" the merge and the pull
    /// share.
    pub fn same_content(&self, other: &Entry) -> bool {
        self.deleted == other.deleted
            && self.kind == other.kind
            && self.size == other.size
            && self.hash == other.hash
            && self.target == other.target
            && self.rdev == other.rdev
    }

    /// The tombstone that deletes this entry, made by node `by` at `now`.
    ///
    /// It keeps the name, kind and mode, bumps `by` in the version vector,
    /// and drops the content (size, hash, target, rdev), so a deleted file's
    /// chunks are not kept alive by the tombstone. A directory tombstone must
    /// also carry the join of its subtree's vectors (DESIGN.md, "Traps we know
    /// of"): the caller joins those into `vv` before the bump, or after with
    /// [`VersionVector::join_from`].
    #[must_use]
    pub fn tombstone(&self, by: NodeId, now: Timestamp) -> Entry {
        self.tombstone_at(by, now, 0)
    }

    /// [`Entry::tombstone`], bumping `by` to at least `tick` of its clock
    /// ([`VersionVector::bump_to`]).
    #[must_use]
    pub fn tombstone_at(&self, by: NodeId, now: Timestamp, tick: u64) -> Entry {
        let mut vv = self.vv.clone();
        vv.bump_to(by, tick);
        Entry {
            name: self.name.clone(),
            kind: self.kind,
            mode: self.mode,
            mtime: now,
            size: 0,
            hash: Hash::ZERO,
            target: Vec::new(),
            rdev: 0,
            vv,
            modified_by: by,
            deleted: true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tree::vv::tests::arb_vv;
    use proptest::prelude::*;

    /// Every kind, for tests.
    pub(crate) const KINDS: [Kind; 7] = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::Fifo,
        Kind::Socket,
        Kind::CharDev,
        Kind::BlockDev,
    ];

    /// A valid live file entry named `name` whose content hash is derived
    /// from `seed`.
    pub(crate) fn file(name: &[u8], seed: u64) -> Entry {
        let mut vv = VersionVector::new();
        vv.bump(NodeId([1; 32]));
        Entry {
            name: name.to_vec(),
            kind: Kind::File,
            mode: 0o644,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
            size: seed,
            hash: Hash::of(&seed.to_le_bytes()),
            target: Vec::new(),
            rdev: 0,
            vv,
            modified_by: NodeId([1; 32]),
            deleted: false,
        }
    }

    /// Valid names: 1 to 20 bytes of anything but `/` and NUL, not `.`/`..`.
    pub(crate) fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 1..20)
            .prop_filter("valid name", |n| validate_name(n).is_ok())
    }

    /// Arbitrary valid entries of every kind.
    pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
        let content = (
            0usize..7,
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(1u8..=255, 0..40),
            any::<u64>(),
        );
        let meta = (
            0u32..=0o7777,
            any::<i64>(),
            0u32..1_000_000_000,
            arb_vv(),
            any::<[u8; 32]>(),
            any::<bool>(),
        );
        (arb_name(), content, meta).prop_map(
            |(name, (k, size, hash, target, rdev), (mode, secs, nanos, vv, by, deleted))| {
                let kind = KINDS[k];
                let mut e = Entry {
                    name,
                    kind,
                    mode,
                    mtime: Timestamp { secs, nanos },
                    size: 0,
                    hash: Hash::ZERO,
                    target: Vec::new(),
                    rdev: 0,
                    vv,
                    modified_by: NodeId(by),
                    deleted,
                };
                match kind {
                    Kind::File => (e.size, e.hash) = (size, Hash(hash)),
                    Kind::Dir => e.hash = Hash(hash),
                    Kind::Symlink => (e.size, e.target) = (target.len() as u64, target),
                    Kind::CharDev | Kind::BlockDev => e.rdev = rdev,
                    Kind::Fifo | Kind::Socket => {}
                }
                e
            },
        )
    }

    #[test]
    fn names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            validate_name(&[b'a'; 256]),
            Err(Error::NameTooLong)
        ));
        for good in [&b"a"[..], b"...", b".x", b"\xff\xfe", &[b'a'; 255]] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn validate_rejects_fields_foreign_to_the_kind() {
        let ok = file(b"f", 3);
        ok.validate().unwrap();
        let bad = |f: &dyn Fn(&mut Entry)| {
            let mut e = ok.clone();
            f(&mut e);
            e.validate().is_err()
        };
        assert!(bad(&|e| e.mode = 0o10644));
        assert!(bad(&|e| e.mtime.nanos = 1_000_000_000));
        assert!(bad(&|e| e.target = b"x".to_vec()));
        assert!(bad(&|e| e.rdev = 1));
        assert!(bad(&|e| e.name = b"..".to_vec()));
        assert!(bad(&|e| e.kind = Kind::Dir));
        assert!(bad(&|e| e.kind = Kind::Fifo));
        assert!(bad(&|e| (e.kind, e.size) = (Kind::CharDev, 0)));
        let link = |t: &[u8]| Entry {
            kind: Kind::Symlink,
            size: t.len() as u64,
            hash: Hash::ZERO,
            target: t.to_vec(),
            ..ok.clone()
        };
        link(b"../x").validate().unwrap();
        assert!(link(b"a\0b").validate().is_err());
        assert!(matches!(
            link(&[b'a'; 4096]).validate(),
            Err(Error::NameTooLong)
        ));
        let dev = Entry {
            kind: Kind::BlockDev,
            size: 0,
            hash: Hash::ZERO,
            rdev: 0x0801,
            ..ok.clone()
        };
        dev.validate().unwrap();
    }

    #[test]
    fn tombstone_drops_content_and_dominates() {
        let e = file(b"f", 9);
        let by = NodeId([7; 32]);
        let now = Timestamp {
            secs: 1_800_000_000,
            nanos: 0,
        };
        let t = e.tombstone(by, now);
        t.validate().unwrap();
        assert!(t.deleted);
        assert_eq!(
            (t.size, t.hash, t.modified_by, t.mtime),
            (0, Hash::ZERO, by, now)
        );
        assert_eq!(t.vv.compare(&e.vv), crate::tree::vv::Causality::Dominates);
        assert_eq!((&t.name, t.kind, t.mode), (&e.name, e.kind, e.mode));
    }

    proptest! {
        #[test]
        fn generated_entries_are_valid(e in arb_entry()) {
            prop_assert!(e.validate().is_ok());
        }
    }
}
