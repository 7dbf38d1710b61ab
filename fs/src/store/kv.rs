//! The key-value engine behind the store, as a small trait so the engine
//! can be swapped (sled today; see DESIGN.md for why it may not be forever).
//!
//! Every keyspace is a [`Space`]. Writes go through a [`Batch`], applied
//! atomically: after a crash the store holds all of a batch or none of it.

use crate::error::Result;

/// The keyspaces of a store. Each is a separate key range of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Space {
    /// Node metadata: format version, key pair, counters, head commit.
    Meta = b'M',
    /// Immutable tree and content-list nodes, by hash.
    Nodes = b'N',
    /// The chunk index: chunk hash -> pack location.
    Chunks = b'C',
    /// Live namespace: inode number -> inode record.
    Inodes = b'I',
    /// Live namespace: parent inode + name -> directory entry.
    Dirents = b'D',
    /// Live namespace: parent inode + readdir cookie -> name.
    Cookies = b'R',
    /// Live namespace: inode + parent + name, every name of an inode.
    Links = b'L',
    /// Live namespace: inode + attribute name -> value.
    Xattrs = b'X',
    /// Inodes unlinked while open, reclaimed at the next open of the store.
    Orphans = b'O',
    /// Entries changed since the last commit: parent inode + name.
    Dirty = b'Y',
    /// The commit log: sequence number -> commit.
    Commits = b'G',
    /// Chunks a tree names that this node does not hold: chunk hash ->
    /// where its copy failed its hash check (a quarantined copy: 16
    /// bytes, a [`crate::store::Location`]) or nothing (no peer could
    /// supply it). Cleared when the chunk is stored again.
    Missing = b'Q',
}

/// Keyspaces in a fixed order, for tests and tools that walk them all.
pub const ALL_SPACES: [Space; 12] = [
    Space::Meta,
    Space::Nodes,
    Space::Chunks,
    Space::Inodes,
    Space::Dirents,
    Space::Cookies,
    Space::Links,
    Space::Xattrs,
    Space::Orphans,
    Space::Dirty,
    Space::Commits,
    Space::Missing,
];

/// See [`Kv::before_handing_down`].
pub type BeforeHandingDown = Box<dyn Fn(&Batch) -> Result<()> + Send + Sync>;

/// One write of a batch: a value to put, or `None` to remove the key.
pub type Op = (Space, Vec<u8>, Option<Vec<u8>>);

/// Writes applied together, atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// In order; a later write to the same key wins.
    pub ops: Vec<Op>,
}

impl Batch {
    /// Puts `value` under `key`.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((space, key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push((space, key.into(), None));
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value, the key without its keyspace.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A key-value engine with keyspaces, atomic batches and a durable flush.
pub trait Kv: Send + Sync {
    /// The value under `key`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` pairs whose key starts with `prefix`, in key order,
    /// starting strictly after `after` when given.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>>;

    /// The greatest pair whose key starts with `prefix`.
    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>>;

    /// Applies every write of `batch`, atomically.
    fn apply(&self, batch: Batch) -> Result<()>;

    /// Makes every applied batch durable (survives power loss).
    fn flush(&self) -> Result<()>;

    /// For engines that gather writes before handing them to the engine
    /// underneath: `hook` runs each time with the set of writes taken,
    /// before any of it is handed down (the store writes the tree nodes
    /// and commits among them to its packs and syncs the packs there, so
    /// no index entry ever reaches the disk before the pack bytes that
    /// name or back it). Others ignore it.
    fn before_handing_down(&self, hook: BeforeHandingDown) {
        let _ = hook;
    }

    /// Bytes the engine occupies on disk (0 for memory engines).
    fn size_on_disk(&self) -> Result<u64>;

    /// For engines that write to a disk: every write passes `gate` before
    /// it may reach the disk (`space_gate.rs`). Others ignore it.
    fn guard_with(&self, gate: std::sync::Arc<super::space_gate::SpaceGate>) {
        let _ = gate;
    }

    /// Closes the engine and opens it again in place, then applies
    /// `replay` (the batches applied since the last successful flush,
    /// oldest first) and flushes: for an engine that failed an I/O (sled
    /// refuses everything after its first I/O error until reopened). On
    /// error the engine stays closed (every call fails) until a reopen
    /// succeeds. Engines that cannot fail that way say
    /// [`crate::Error::NotSupported`].
    fn reopen(&self, replay: Vec<Batch>) -> Result<()> {
        let _ = replay;
        Err(crate::error::Error::NotSupported)
    }
}

/// Calls `f` with every pair of `space` whose key starts with `prefix`
/// (and comes after `after`, when given), in key order, reading a page of
/// pairs at a time so a whole keyspace is never in memory at once.
pub fn for_each(
    kv: &dyn Kv,
    space: Space,
    prefix: &[u8],
    after: Option<&[u8]>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    const PAGE: usize = 4096;
    let mut after = after.map(<[u8]>::to_vec);
    loop {
        let page = kv.scan(space, prefix, after.as_deref(), PAGE)?;
        for (k, v) in &page {
            f(k, v)?;
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
            _ => return Ok(()),
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when no such key exists (the prefix is all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Merges a scan of a lower layer with the pending writes above it (in
/// key order; `None` removes a key), keeping the first `limit` pairs. The
/// lower scan must have been asked for `limit` plus the number of
/// removals among `above`, so removals cannot shorten the answer.
pub(crate) fn merge_scan(
    below: Vec<KeyValue>,
    above: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    limit: usize,
) -> Vec<KeyValue> {
    let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = below.into_iter().collect();
    for (k, v) in above {
        match v {
            Some(v) => merged.insert(k, v),
            None => merged.remove(&k),
        };
    }
    merged.into_iter().take(limit).collect()
}

/// The pending writes of `map` in `space` under `prefix`, after `after`.
pub(crate) fn pending_range<'a>(
    map: &'a std::collections::BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>,
    space: Space,
    prefix: &'a [u8],
    after: Option<&'a [u8]>,
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a {
    map.range((space, prefix.to_vec())..)
        .take_while(move |((s, k), _)| *s == space && k.starts_with(prefix))
        .filter(move |((_, k), _)| after.is_none_or(|a| k.as_slice() > a))
        .map(|((_, k), v)| (k, v))
}
