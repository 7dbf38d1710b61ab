//! The read-only view of the past: `.backer/snapshots/<time>/...`.
//!
//! Every committed root is a full snapshot; this module shows them inside
//! the mount, like ZFS's `.zfs/snapshot`. `.backer` is reachable by name
//! in the root but never listed (it is no entry of the namespace or the
//! tree), so walks of the folder (`find`, `du`, backups) do not descend
//! into history. Nothing here is replicated or counted in the tree.
//!
//! The view's inodes are virtual: numbers with [`VIEW_BIT`] set, handed
//! out at lookup (or readdir) and kept for the process's lifetime, each
//! remembering what it shows (an entry of a committed tree). Snapshot
//! names are commit times, `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC; of commits
//! made in the same millisecond only the newest is shown.
//!
//! Every write under `.backer` is refused with [`Error::ReadOnly`]
//! (`EROFS`) by the mount's door (`vfs/door.rs`), which also routes each
//! request to the view or the live namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::commit::ReadNodes;
use super::types::{Attr, Ctx, DirEntry, Fh, Ino, RESERVED_NAME, ROOT};
use super::History;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::{Store, Txn};
use crate::tree::content::{self, Extent};
use crate::tree::{dir, Entry, Kind, Timestamp};

/// Set in every inode number of the history view (the live namespace's
/// numbers never reach it).
pub const VIEW_BIT: u64 = 1 << 63;
/// `.backer`, in the root.
const BACKER: Ino = Ino(VIEW_BIT | 1);
/// `.backer/snapshots`.
const SNAPSHOTS: Ino = Ino(VIEW_BIT | 2);
/// The first number handed out to snapshots and what they hold.
const FIRST_DYNAMIC: Ino = Ino(VIEW_BIT | 16);
/// The name of the folder of snapshots in `.backer`.
const SNAPSHOTS_NAME: &[u8] = b"snapshots";
/// Permission bits of the view's own folders.
const DIR_PERM: u32 = 0o555;

/// Whether `ino` belongs to the history view.
pub fn is_view(ino: Ino) -> bool {
    ino.0 & VIEW_BIT != 0
}

/// A snapshot's name: its commit time, UTC, to the millisecond
/// (`2026-11-26T04:39:31.123Z`).
pub fn snapshot_name(time: Timestamp) -> String {
    let (y, m, d, hh, mm, ss) = crate::tree::civil::civil_utc(time.secs);
    format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
        time.nanos.min(999_999_999) / 1_000_000
    )
}

/// What one virtual inode shows.
#[derive(Clone, Debug)]
enum Node {
    /// `.backer`.
    Backer,
    /// `.backer/snapshots`.
    Snapshots,
    /// A snapshot's root folder or something in it: its parent's inode
    /// and its entry in the committed tree (a snapshot root's entry is
    /// made up: a folder named by its time, holding the root hash).
    Item { parent: Ino, entry: Entry },
}

/// When a snapshot list was read: (head commit, collection count).
type ListedAt = (u64, u64);

/// One snapshot: its name and root, oldest first in the list.
#[derive(Clone, Debug)]
struct Snapshot {
    name: Vec<u8>,
    root: Hash,
    time: Timestamp,
}

/// The view's table of virtual inodes and its cached snapshot list.
#[derive(Debug)]
pub(super) struct View {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, Vec<u8>), Ino>,
    next: Ino,
    /// The kernel's lookup count of each inode it was handed; an inode it
    /// forgets entirely is dropped (see [`History::view_forget`]).
    refs: HashMap<Ino, u64>,
    /// The snapshot list and the commit count (and collection count) it
    /// was read at.
    snapshots: Option<(ListedAt, Arc<Vec<Snapshot>>)>,
}

impl Default for View {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(BACKER, Node::Backer);
        nodes.insert(SNAPSHOTS, Node::Snapshots);
        View {
            table: Mutex::new(Table {
                nodes,
                by_name: HashMap::new(),
                next: FIRST_DYNAMIC,
                refs: HashMap::new(),
                snapshots: None,
            }),
        }
    }
}

impl View {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    fn node(&self, ino: Ino) -> Result<Node> {
        self.nodes.get(&ino).cloned().ok_or(Error::NotFound)
    }

    /// The inode of `name` in `parent`, made on first use.
    fn intern(&mut self, parent: Ino, entry: Entry) -> Ino {
        let key = (parent, entry.name.clone());
        if let Some(&ino) = self.by_name.get(&key) {
            // Same name, same parent: the same version (a snapshot never
            // changes), unless a snapshot name was reused by a newer
            // commit in its millisecond; then show the newer.
            if let Some(Node::Item { entry: old, .. }) = self.nodes.get_mut(&ino) {
                *old = entry;
            }
            return ino;
        }
        let ino = self.next;
        self.next.0 += 1;
        self.by_name.insert(key, ino);
        self.nodes.insert(ino, Node::Item { parent, entry });
        ino
    }
}

/// The made-up entry of a snapshot's root folder.
fn snapshot_entry(s: &Snapshot) -> Entry {
    Entry {
        name: s.name.clone(),
        kind: Kind::Dir,
        mode: DIR_PERM,
        mtime: s.time,
        size: 0,
        hash: s.root,
        target: Vec::new(),
        rdev: 0,
        vv: Default::default(),
        modified_by: Default::default(),
        deleted: false,
    }
}

impl History<'_> {
    /// Whether a lookup of `name` in `parent` belongs to the history view
    /// ([`History::view_lookup`] answers it) rather than the live namespace.
    pub(super) fn in_view(&self, parent: Ino, name: &[u8]) -> bool {
        is_view(parent) || (parent == ROOT && name == RESERVED_NAME)
    }

    /// Looks `name` up in the view folder `parent` (or `.backer` in the
    /// root). Each success counts as one kernel reference to the inode
    /// (FUSE's lookup count), given back by [`History::view_forget`].
    pub(super) fn view_lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let attr = self.view_lookup_uncounted(parent, name)?;
        self.view_ref(attr.ino);
        Ok(attr)
    }

    /// Counts one more kernel reference to the view inode `ino` (a
    /// readdirplus entry the kernel was given).
    pub(super) fn view_ref(&self, ino: Ino) {
        *self.state().view.lock().refs.entry(ino).or_default() += 1;
    }

    /// The kernel dropped `n` references to the view inode `ino`: at zero
    /// the inode is forgotten (a later lookup makes a new one), so memory
    /// follows what the kernel holds, not all that was ever browsed.
    pub(super) fn view_forget(&self, ino: Ino, n: u64) {
        let mut t = self.state().view.lock();
        let left = match t.refs.get_mut(&ino) {
            Some(r) => {
                *r = r.saturating_sub(n);
                *r
            }
            None => 0,
        };
        if left > 0 {
            return;
        }
        t.refs.remove(&ino);
        if ino < FIRST_DYNAMIC {
            return;
        }
        if let Some(Node::Item { parent, entry }) = t.nodes.remove(&ino) {
            let key = (parent, entry.name);
            if t.by_name.get(&key) == Some(&ino) {
                t.by_name.remove(&key);
            }
        }
    }

    fn view_lookup_uncounted(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if parent == ROOT {
            if name == RESERVED_NAME {
                return self.view_getattr(BACKER);
            }
            return Err(Error::NotFound);
        }
        let node = self.state().view.lock().node(parent)?;
        match name {
            b"." => return self.view_getattr(parent),
            b".." => return self.view_getattr(self.view_parent(&node)),
            _ => {}
        }
        let ino = match node {
            Node::Backer if name == SNAPSHOTS_NAME => SNAPSHOTS,
            Node::Backer => return Err(Error::NotFound),
            Node::Snapshots => {
                let snaps = self.snapshot_list()?;
                let s = snaps
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or(Error::NotFound)?;
                self.state()
                    .view
                    .lock()
                    .intern(SNAPSHOTS, snapshot_entry(s))
            }
            Node::Item { entry, .. } => {
                if entry.kind != Kind::Dir {
                    return Err(Error::NotDir);
                }
                let store = self.vfs.store();
                let txn = Txn::new(store.kv());
                let e = dir::get(&ReadNodes(&txn), entry.hash, name)?
                    .filter(|e| !e.deleted)
                    .ok_or(Error::NotFound)?;
                self.state().view.lock().intern(parent, e)
            }
        };
        self.view_getattr(ino)
    }

    /// Attributes of the view's inode `ino`.
    pub(super) fn view_getattr(&self, ino: Ino) -> Result<Attr> {
        let node = self.state().view.lock().node(ino)?;
        let owner = self.vfs.owner();
        let mut attr = Attr {
            ino,
            kind: Kind::Dir,
            perm: DIR_PERM,
            nlink: 2,
            uid: owner.uid,
            gid: owner.gid,
            size: 0,
            blocks: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            rdev: 0,
        };
        match node {
            Node::Backer | Node::Snapshots => {
                if let Some(s) = self.snapshot_list()?.last() {
                    attr.mtime = s.time;
                }
            }
            Node::Item { entry, .. } => {
                attr.kind = entry.kind;
                attr.perm = entry.mode & 0o7777 & !0o222;
                attr.nlink = if entry.kind == Kind::Dir { 2 } else { 1 };
                attr.size = entry.size;
                attr.blocks = if entry.kind == Kind::File {
                    entry.size.div_ceil(512)
                } else {
                    0
                };
                attr.mtime = entry.mtime;
                attr.rdev = entry.rdev;
            }
        }
        attr.atime = attr.mtime;
        attr.ctime = attr.mtime;
        Ok(attr)
    }

    /// Lists the view folder `ino` from `cookie` (as [`super::Names::readdir`]:
    /// "." and ".." first; the cookie of an entry continues after it).
    pub(super) fn view_readdir(
        &self,
        ino: Ino,
        cookie: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        let node = self.state().view.lock().node(ino)?;
        let mut all = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: b".".to_vec(),
                cookie: 1,
            },
            DirEntry {
                ino: self.view_parent(&node),
                kind: Kind::Dir,
                name: b"..".to_vec(),
                cookie: 2,
            },
        ];
        let children: Vec<(Ino, Entry)> = match node {
            Node::Backer => vec![(SNAPSHOTS, snapshot_entry_named(SNAPSHOTS_NAME))],
            Node::Snapshots => {
                let snaps = self.snapshot_list()?;
                let mut t = self.state().view.lock();
                snaps
                    .iter()
                    .map(|s| {
                        let e = snapshot_entry(s);
                        (t.intern(SNAPSHOTS, e.clone()), e)
                    })
                    .collect()
            }
            Node::Item { entry, .. } => {
                if entry.kind != Kind::Dir {
                    return Err(Error::NotDir);
                }
                let store = self.vfs.store();
                let txn = Txn::new(store.kv());
                let entries = dir::entries(&ReadNodes(&txn), entry.hash)?;
                let mut t = self.state().view.lock();
                entries
                    .into_iter()
                    .filter(|e| !e.deleted)
                    .map(|e| (t.intern(ino, e.clone()), e))
                    .collect()
            }
        };
        for (i, (child, e)) in children.into_iter().enumerate() {
            all.push(DirEntry {
                ino: child,
                kind: e.kind,
                name: e.name,
                cookie: i as u64 + 3,
            });
        }
        Ok(all
            .into_iter()
            .filter(|e| e.cookie > cookie)
            .take(limit)
            .collect())
    }

    /// The target of a symlink in a snapshot.
    pub(super) fn view_readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        match self.state().view.lock().node(ino)? {
            Node::Item { entry, .. } if entry.kind == Kind::Symlink => Ok(entry.target),
            _ => Err(Error::NotSymlink),
        }
    }

    /// Opens a file in a snapshot for reading; `write` (any write access
    /// or O_TRUNC) is refused. The handle is the inode number itself.
    pub(super) fn view_open(&self, ino: Ino, write: bool) -> Result<Fh> {
        match self.state().view.lock().node(ino)? {
            _ if write => Err(Error::ReadOnly),
            Node::Item { entry, .. } if entry.kind == Kind::File => Ok(Fh(ino.0)),
            Node::Item { entry, .. } if entry.kind != Kind::Dir => Err(Error::NotSupported),
            _ => Err(Error::IsDir),
        }
    }

    /// Reads up to `size` bytes at `offset` of the snapshot file `ino`.
    pub(super) fn view_read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let entry = match self.state().view.lock().node(ino)? {
            Node::Item { entry, .. } if entry.kind == Kind::File => entry,
            _ => return Err(Error::BadHandle),
        };
        let end = offset.saturating_add(u64::from(size)).min(entry.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let store = self.vfs.store();
        read_range(&store, entry.hash, offset, end)
    }

    /// Checks `mask` (R_OK=4, W_OK=2, X_OK=1) on a view inode: writes are
    /// refused with [`Error::ReadOnly`], the rest follow the mode bits.
    pub(super) fn view_access(&self, ctx: Ctx, ino: Ino, mask: u32) -> Result<()> {
        let attr = self.view_getattr(ino)?;
        if mask & 2 != 0 {
            return Err(Error::ReadOnly);
        }
        super::attrs::check_access(ctx, &attr, mask)
    }

    fn view_parent(&self, node: &Node) -> Ino {
        match node {
            Node::Backer => ROOT,
            Node::Snapshots => BACKER,
            Node::Item { parent, .. } => *parent,
        }
    }

    /// The snapshots, oldest first, one per name (the newest commit of a
    /// millisecond); read again only when new commits were made.
    fn snapshot_list(&self) -> Result<Arc<Vec<Snapshot>>> {
        let (seq, store) = {
            let inner = self.vfs.lock();
            // A collection drops snapshots without a new commit.
            (
                (inner.head.seq, self.vfs.gc_generation()),
                inner.store.clone(),
            )
        };
        if let Some((at, list)) = &self.state().view.lock().snapshots {
            if *at == seq {
                return Ok(list.clone());
            }
        }
        let log = super::read_log(store.kv(), usize::MAX)?;
        let mut list: Vec<Snapshot> = Vec::with_capacity(log.len());
        // Newest first: a name already taken belongs to a newer commit.
        let mut seen = std::collections::HashSet::new();
        for c in log {
            let time = Timestamp {
                secs: c.time.0,
                nanos: c.time.1,
            };
            let name = snapshot_name(time).into_bytes();
            if seen.insert(name.clone()) {
                list.push(Snapshot {
                    name,
                    root: Hash(c.root),
                    time,
                });
            }
        }
        list.reverse();
        let list = Arc::new(list);
        self.state().view.lock().snapshots = Some((seq, list.clone()));
        Ok(list)
    }
}

/// The entry `.backer` lists for its `snapshots` folder.
fn snapshot_entry_named(name: &[u8]) -> Entry {
    snapshot_entry(&Snapshot {
        name: name.to_vec(),
        root: Hash::ZERO,
        time: Timestamp::default(),
    })
}

/// The bytes `start..end` of the content `root` (holes and a trailing
/// hole past the stored content read as zeros).
fn read_range(store: &Store, root: Hash, start: u64, end: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; (end - start) as usize];
    let txn = Txn::new(store.kv());
    for (at, ext) in content::extents_in(&ReadNodes(&txn), root, start, end)? {
        let Extent::Data { hash, len } = ext else {
            continue;
        };
        let from = start.max(at);
        let to = end.min(at + u64::from(len));
        if from >= to {
            continue;
        }
        let dst = &mut out[(from - start) as usize..(to - start) as usize];
        store.read_chunk_range(&hash, None, from - at, dst)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_times_to_the_millisecond() {
        let t = |secs, nanos| snapshot_name(Timestamp { secs, nanos });
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(1_700_000_000, 123_999_999), "2023-11-14T22:13:20.123Z");
        assert_eq!(t(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(t(-1, 500_000_000), "1969-12-31T23:59:59.500Z");
    }
}
