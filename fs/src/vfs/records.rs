//! The live namespace's records and keys, and typed access to them
//! through a [`Txn`]. Records are local (never hashed), so they use the
//! store's bincode codec.
//!
//! ```text
//! Inodes   ino                   -> InodeRecord
//! Dirents  parent | name         -> child ino | cookie | kind
//! Cookies  parent | cookie       -> ino | kind | name   (readdir order)
//! Links    ino | parent | name   -> ()              (a file's names beyond
//!                                                     the one in its record)
//! Xattrs   ino | attr name       -> value
//! Orphans  ino                   -> ()              (unlinked while open)
//! Dirty    parent | name         -> ()              (changed since the last commit)
//! ```

use serde::{Deserialize, Serialize};

use super::types::Ino;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::identity::NodeId;
use crate::store::{codec, Space, Txn};
use crate::tree::{Kind, Timestamp, VersionVector};

/// One inode of the live namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InodeRecord {
    pub(crate) kind: u8,
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u32,
    /// Files: length of the committed content; symlinks: target length.
    pub(crate) size: u64,
    /// Files: blocks stored (holes excluded), in 512-byte units.
    pub(crate) blocks: u64,
    /// Files: content hash (`tree::content`); dirs: subtree root (`tree::dir`).
    pub(crate) hash: [u8; 32],
    pub(crate) rdev: u64,
    pub(crate) target: Vec<u8>,
    pub(crate) atime: (i64, u32),
    pub(crate) mtime: (i64, u32),
    pub(crate) ctime: (i64, u32),
    /// Dirs: parent inode and own name (the root is its own parent).
    /// Other kinds: one of their names, empty if none is kept here (see
    /// [`NamespaceTxn::add_name`]): a file with one name, the common case,
    /// costs no `Links` key, and finding its name no scan.
    pub(crate) parent: Ino,
    pub(crate) name: Vec<u8>,
    /// Dirs: the next readdir cookie to hand out.
    pub(crate) next_cookie: u64,
    /// Dirs: live entries (for st_size and rmdir).
    pub(crate) entries: u64,
    /// The version vector of the last committed version (dirs: joined
    /// with every entry beneath, so a tombstone carries the subtree's max).
    pub(crate) vv: Vec<([u8; 32], u64)>,
}

pub(crate) fn kind_to_u8(k: Kind) -> u8 {
    match k {
        Kind::File => 1,
        Kind::Dir => 2,
        Kind::Symlink => 3,
        Kind::Fifo => 4,
        Kind::Socket => 5,
        Kind::CharDev => 6,
        Kind::BlockDev => 7,
    }
}

pub(crate) fn kind_from_u8(b: u8) -> Result<Kind> {
    Ok(match b {
        1 => Kind::File,
        2 => Kind::Dir,
        3 => Kind::Symlink,
        4 => Kind::Fifo,
        5 => Kind::Socket,
        6 => Kind::CharDev,
        7 => Kind::BlockDev,
        _ => return Err(Error::corrupt(format!("unknown inode kind {b}"))),
    })
}

pub(crate) fn ts(t: (i64, u32)) -> Timestamp {
    Timestamp {
        secs: t.0,
        nanos: t.1,
    }
}

pub(crate) fn ts_pair(t: Timestamp) -> (i64, u32) {
    (t.secs, t.nanos)
}

impl InodeRecord {
    /// A new inode of `kind` at time `now`.
    pub(crate) fn new(kind: Kind, perm: u32, uid: u32, gid: u32, now: Timestamp) -> InodeRecord {
        InodeRecord {
            kind: kind_to_u8(kind),
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: 1,
            size: 0,
            blocks: 0,
            hash: [0; 32],
            rdev: 0,
            target: vec![],
            atime: ts_pair(now),
            mtime: ts_pair(now),
            ctime: ts_pair(now),
            parent: Ino(0),
            name: vec![],
            next_cookie: FIRST_COOKIE,
            entries: 0,
            vv: vec![],
        }
    }

    pub(crate) fn kind(&self) -> Result<Kind> {
        kind_from_u8(self.kind)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind == kind_to_u8(Kind::Dir)
    }

    pub(crate) fn hash(&self) -> Hash {
        Hash(self.hash)
    }

    pub(crate) fn vv(&self) -> VersionVector {
        VersionVector::from_pairs(self.vv.iter().map(|(id, n)| (NodeId(*id), *n)))
    }

    pub(crate) fn set_vv(&mut self, vv: &VersionVector) {
        self.vv = vv.iter().map(|(id, n)| (id.0, n)).collect();
    }
}

/// Readdir cookies 1 and 2 are "." and "..".
pub(crate) const FIRST_COOKIE: u64 = 3;

pub(crate) fn ino_key(ino: Ino) -> [u8; 8] {
    ino.to_be_bytes()
}

pub(crate) fn dirent_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

pub(crate) fn cookie_key(parent: Ino, cookie: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&parent.to_be_bytes());
    k[8..].copy_from_slice(&cookie.to_be_bytes());
    k
}

pub(crate) fn link_key(ino: Ino, parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + name.len());
    k.extend_from_slice(&ino.to_be_bytes());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// The inode number at `at` in a key or value.
pub(crate) fn ino_at(b: &[u8], at: usize) -> Result<Ino> {
    u64_at(b, at).map(Ino)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::corrupt("short key or value"))
}

/// A directory entry of the live namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dirent {
    pub(crate) ino: Ino,
    pub(crate) cookie: u64,
    pub(crate) kind: Kind,
}

impl Dirent {
    fn encode(&self) -> [u8; 17] {
        let mut v = [0u8; 17];
        v[..8].copy_from_slice(&self.ino.to_be_bytes());
        v[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        v[16] = kind_to_u8(self.kind);
        v
    }

    fn decode(b: &[u8]) -> Result<Dirent> {
        if b.len() != 17 {
            return Err(Error::corrupt("directory entry of wrong length"));
        }
        Ok(Dirent {
            ino: ino_at(b, 0)?,
            cookie: u64_at(b, 8)?,
            kind: kind_from_u8(b[16])?,
        })
    }
}

/// Typed reads and writes of the namespace inside one transaction.
pub(crate) trait NamespaceTxn {
    fn inode(&self, ino: Ino) -> Result<InodeRecord>;
    fn inode_opt(&self, ino: Ino) -> Result<Option<InodeRecord>>;
    fn put_inode(&mut self, ino: Ino, rec: &InodeRecord) -> Result<()>;
    fn remove_inode(&mut self, ino: Ino) -> Result<()>;
    fn dirent(&self, parent: Ino, name: &[u8]) -> Result<Option<Dirent>>;
    /// Adds `name -> ino` to `parent` (whose record the caller passes and
    /// saves: its cookie counter and entry count change).
    fn add_dirent(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        name: &[u8],
        ino: Ino,
        kind: Kind,
    );
    fn remove_dirent(&mut self, parent: Ino, prec: &mut InodeRecord, name: &[u8], d: &Dirent);
    /// Notes that the non-directory `ino` gained the name `name` in
    /// `parent`: in its record if that holds none, else in `Links`. The
    /// caller saves `rec` (and keeps `nlink`).
    fn add_name(&mut self, ino: Ino, rec: &mut InodeRecord, parent: Ino, name: &[u8]);
    /// Notes that it lost that name (wherever it was kept).
    fn drop_name(&mut self, ino: Ino, rec: &mut InodeRecord, parent: Ino, name: &[u8]);
    /// Every name of the non-directory `ino`: with one link and its name
    /// in the record, that one without a scan.
    fn names_of(&self, ino: Ino, rec: &InodeRecord) -> Result<Vec<(Ino, Vec<u8>)>>;
    fn mark_dirty(&mut self, parent: Ino, name: &[u8]);
}

impl NamespaceTxn for Txn<'_> {
    fn inode(&self, ino: Ino) -> Result<InodeRecord> {
        self.inode_opt(ino)?.ok_or(Error::NotFound)
    }

    fn inode_opt(&self, ino: Ino) -> Result<Option<InodeRecord>> {
        match self.get(Space::Inodes, &ino_key(ino))? {
            Some(b) => Ok(Some(codec::decode(&b, "inode record")?)),
            None => Ok(None),
        }
    }

    fn put_inode(&mut self, ino: Ino, rec: &InodeRecord) -> Result<()> {
        let bytes = codec::encode(rec)?;
        self.put(Space::Inodes, ino_key(ino), bytes);
        Ok(())
    }

    fn remove_inode(&mut self, ino: Ino) -> Result<()> {
        self.remove(Space::Inodes, ino_key(ino));
        self.remove(Space::Orphans, ino_key(ino));
        for (k, _) in self.scan(Space::Xattrs, &ino_key(ino), None, usize::MAX)? {
            self.remove(Space::Xattrs, k);
        }
        Ok(())
    }

    fn dirent(&self, parent: Ino, name: &[u8]) -> Result<Option<Dirent>> {
        match self.get(Space::Dirents, &dirent_key(parent, name))? {
            Some(b) => Ok(Some(Dirent::decode(&b)?)),
            None => Ok(None),
        }
    }

    fn add_dirent(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        name: &[u8],
        ino: Ino,
        kind: Kind,
    ) {
        let cookie = prec.next_cookie;
        prec.next_cookie += 1;
        prec.entries += 1;
        let d = Dirent { ino, cookie, kind };
        self.put(
            Space::Dirents,
            dirent_key(parent, name),
            d.encode().to_vec(),
        );
        let mut c = Vec::with_capacity(9 + name.len());
        c.extend_from_slice(&ino.to_be_bytes());
        c.push(kind_to_u8(kind));
        c.extend_from_slice(name);
        self.put(Space::Cookies, cookie_key(parent, cookie).to_vec(), c);
        self.mark_dirty(parent, name);
    }

    fn remove_dirent(&mut self, parent: Ino, prec: &mut InodeRecord, name: &[u8], d: &Dirent) {
        prec.entries = prec.entries.saturating_sub(1);
        self.remove(Space::Dirents, dirent_key(parent, name));
        self.remove(Space::Cookies, cookie_key(parent, d.cookie).to_vec());
        self.mark_dirty(parent, name);
    }

    fn add_name(&mut self, ino: Ino, rec: &mut InodeRecord, parent: Ino, name: &[u8]) {
        if rec.name.is_empty() {
            rec.parent = parent;
            rec.name = name.to_vec();
        } else {
            self.put(Space::Links, link_key(ino, parent, name), Vec::new());
        }
    }

    fn drop_name(&mut self, ino: Ino, rec: &mut InodeRecord, parent: Ino, name: &[u8]) {
        if rec.parent == parent && rec.name == name {
            rec.parent = Ino(0);
            rec.name.clear();
        } else {
            self.remove(Space::Links, link_key(ino, parent, name));
        }
    }

    fn names_of(&self, ino: Ino, rec: &InodeRecord) -> Result<Vec<(Ino, Vec<u8>)>> {
        let mut names = Vec::new();
        if !rec.name.is_empty() {
            names.push((rec.parent, rec.name.clone()));
            if rec.nlink <= 1 {
                return Ok(names);
            }
        }
        for (k, _) in self.scan(Space::Links, &ino_key(ino), None, usize::MAX)? {
            names.push((ino_at(&k, 8)?, k[16..].to_vec()));
        }
        Ok(names)
    }

    fn mark_dirty(&mut self, parent: Ino, name: &[u8]) {
        self.put(Space::Dirty, dirent_key(parent, name), Vec::new());
    }
}

/// The path of `ino` (by its first name, up to the root) for a log line,
/// control characters escaped; what cannot be read shows as `?`.
pub(crate) fn path_for_log(store: &crate::store::Store, mut ino: Ino) -> String {
    let txn = Txn::new(store.kv());
    let mut names = Vec::new();
    while ino != super::ROOT && names.len() < 4096 {
        match txn.inode_opt(ino) {
            Ok(Some(rec)) if !rec.name.is_empty() => {
                names.push(
                    String::from_utf8_lossy(&rec.name)
                        .escape_debug()
                        .to_string(),
                );
                ino = rec.parent;
            }
            _ => {
                names.push("?".into());
                break;
            }
        }
    }
    names.reverse();
    format!("/{}", names.join("/"))
}

/// How many directories lie between `dir` and the root (0 for the root).
pub(crate) fn depth(txn: &Txn<'_>, mut dir: Ino) -> Result<u32> {
    let mut d = 0;
    while dir != super::types::ROOT {
        dir = txn.inode(dir)?.parent;
        d += 1;
        if d > super::types::MAX_DEPTH + 1 {
            return Err(Error::corrupt("directory parents form a loop"));
        }
    }
    Ok(d)
}
