//! Folding dirty names into the merkle tree and the commit log.
//!
//! A commit walks the dirty directories deepest first. For each one it
//! rebuilds the entries of its dirty names from the live namespace, applies
//! them to the directory's tree (rewriting only the nodes on their paths),
//! and marks the directory's own name dirty in its parent, up to the root.
//!
//! Version vectors (DESIGN.md, "Traps"): a changed entry gets the join of
//! its inode's vector and the vector the name had before (even a
//! tombstone's: a rename-over or a re-create dominates what it replaced),
//! plus one bump of this node. A removed name becomes a tombstone whose
//! vector is the old one plus a bump. A directory's vector is joined with
//! every entry beneath it, so its tombstone carries the subtree's maximum.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ignored::{self, Verdict};
use super::records::{depth, ts_pair, u64_at, NamespaceTxn};
use super::types::{CommitInfo, Defer, Ino, ROOT};
use super::Inner;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::kv::for_each;
use crate::store::{codec, Space, Txn};
use crate::tree::content::{self, Extent};
use crate::tree::{dir, Entry, Kind, NodeStore, Timestamp};

/// The engine key of the newest commit: its number (u64 BE) and root.
pub(crate) const META_HEAD: &[u8] = b"head";
pub(super) const META_CLOCK: &[u8] = crate::store::mirror::META_CLOCK;

/// The node's edit clock as last committed (0 for a new store).
pub(crate) fn load_clock(kv: &dyn crate::store::Kv) -> Result<u64> {
    match kv.get(Space::Meta, META_CLOCK)? {
        Some(b) => u64_at(&b, 0),
        None => Ok(0),
    }
}

/// A tree store over a transaction: reads see its writes; new nodes land
/// with it, so a commit's nodes and the records naming them are atomic.
pub(crate) struct TxnNodes<'t, 'k>(pub(crate) &'t mut Txn<'k>);

impl NodeStore for TxnNodes<'_, '_> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        if self.0.get(Space::Nodes, hash.as_bytes())?.is_none() {
            self.0.put(Space::Nodes, hash.as_bytes().to_vec(), bytes);
        }
        Ok(())
    }
}

/// A read-only tree store over a transaction.
pub(crate) struct ReadNodes<'t, 'k>(pub(crate) &'t Txn<'k>);

impl NodeStore for ReadNodes<'_, '_> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(Error::ReadOnly)
    }
}

/// The flat extent list of a content hash.
pub(crate) fn load_extents(txn: &Txn<'_>, hash: Hash) -> Result<Vec<Extent>> {
    content::extents(&ReadNodes(txn), hash)
}

/// Stores a content tree for `extents`; returns its hash and length.
pub(crate) fn store_content(txn: &mut Txn<'_>, extents: &[Extent]) -> Result<(Hash, u64)> {
    content::build(&mut TxnNodes(txn), extents)
}

/// One entry of the commit log (a local record: peers sync trees, not logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Position in this store's log, from 1.
    pub seq: u64,
    /// The root hash this commit made.
    pub root: [u8; 32],
    /// The roots it followed (two after a merge).
    pub parents: Vec<[u8; 32]>,
    /// When (seconds, nanoseconds since the epoch).
    pub time: (i64, u32),
    /// The node that made it.
    pub author: [u8; 32],
    /// Entries changed.
    pub changed: u64,
}

impl Commit {
    /// The commit's id: a hash of its record.
    pub fn id(&self) -> Result<Hash> {
        Ok(Hash::of_domain("backer-commit", &codec::encode(self)?))
    }
}

/// The newest commit, as the vfs keeps it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) root: Option<Hash>,
}

pub(crate) fn load_head(txn: &Txn<'_>) -> Result<Head> {
    match txn.get(Space::Meta, META_HEAD)? {
        Some(b) => {
            let seq = u64_at(&b, 0)?;
            let root = Hash(
                b.get(8..40)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| Error::corrupt("head"))?,
            );
            Ok(Head {
                seq,
                root: Some(root),
            })
        }
        None => Ok(Head::default()),
    }
}

/// Appends the commit of `root` (following `parents`) after `head` to the
/// log in `txn`, and moves the stored head to it. The caller moves its
/// [`Head`] once `txn` is applied.
pub(super) fn append(
    txn: &mut Txn<'_>,
    head: &Head,
    root: Hash,
    parents: Vec<[u8; 32]>,
    now: Timestamp,
    author: crate::NodeId,
    changed: usize,
) -> Result<CommitInfo> {
    let seq = head.seq + 1;
    let commit = Commit {
        seq,
        root: root.0,
        parents,
        time: ts_pair(now),
        author: author.0,
        changed: changed as u64,
    };
    txn.put(
        Space::Commits,
        seq.to_be_bytes().to_vec(),
        codec::encode(&commit)?,
    );
    let mut stored = seq.to_be_bytes().to_vec();
    stored.extend_from_slice(root.as_bytes());
    txn.put(Space::Meta, META_HEAD, stored);
    Ok(CommitInfo {
        seq,
        id: commit.id()?,
        root,
        changed,
    })
}

/// Reads the commit log, newest first, up to `limit` commits. A
/// collection leaves gaps in the sequence numbers.
pub fn read_log(kv: &dyn crate::store::Kv, limit: usize) -> Result<Vec<Commit>> {
    let txn = Txn::new(kv);
    let head = load_head(&txn)?;
    let mut out = Vec::new();
    let mut seq = head.seq;
    while seq > 0 && out.len() < limit {
        match kv.get(Space::Commits, &seq.to_be_bytes())? {
            Some(b) => out.push(codec::decode(&b, "commit")?),
            // A gap: read the rest in key order instead of probing each
            // number the collection dropped.
            None => {
                let mut rest = all_commits(kv)?;
                rest.retain(|c| c.seq < seq);
                out.extend(rest.into_iter().rev().take(limit - out.len()));
                break;
            }
        }
        seq -= 1;
    }
    Ok(out)
}

/// Every commit of the log, oldest first.
pub(crate) fn all_commits(kv: &dyn crate::store::Kv) -> Result<Vec<Commit>> {
    commits_after(kv, 0)
}

/// The commits after sequence number `seq`, oldest first.
pub(crate) fn commits_after(kv: &dyn crate::store::Kv, seq: u64) -> Result<Vec<Commit>> {
    let mut out = Vec::new();
    for_each(kv, Space::Commits, &[], Some(&seq.to_be_bytes()), |_, v| {
        out.push(codec::decode(v, "commit")?);
        Ok(())
    })?;
    Ok(out)
}

/// Time from `then` to `now` (zero if the clock went back).
fn elapsed(then: Timestamp, now: Timestamp) -> std::time::Duration {
    let ns = |t: Timestamp| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    let d = (ns(now) - ns(then)).max(0);
    std::time::Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX))
}

/// The entries `names` had in the directory tree `root`, reading each node
/// on their paths once (one `dir::get` per name would decode the same
/// leaves again for every dirty name in them).
fn old_entries(
    store: &impl NodeStore,
    root: Hash,
    names: &BTreeSet<Vec<u8>>,
) -> Result<BTreeMap<Vec<u8>, Entry>> {
    let mut out = BTreeMap::new();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    collect_entries(store, root, &names, &mut out)?;
    Ok(out)
}

fn collect_entries(
    store: &impl NodeStore,
    node: Hash,
    names: &[&[u8]],
    out: &mut BTreeMap<Vec<u8>, Entry>,
) -> Result<()> {
    match dir::read_node(store, node)? {
        dir::DirNode::Leaf(entries) => {
            for e in entries {
                if names.binary_search(&e.name.as_slice()).is_ok() {
                    out.insert(e.name.clone(), e);
                }
            }
        }
        dir::DirNode::Internal { children, .. } => {
            // Child i holds the names in (last name of i-1, last name of i].
            let mut rest = names;
            for (last, child) in children {
                let n = rest.partition_point(|name| *name <= last.as_slice());
                if n > 0 {
                    collect_entries(store, child, &rest[..n], out)?;
                }
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The hashed fields of an entry, without its version.
pub(super) fn same_version(a: &Entry, b: &Entry) -> bool {
    a.same_content(b) && a.mode == b.mode && a.mtime == b.mtime
}

impl Inner {
    /// See [`super::Vfs::commit`].
    pub(crate) fn commit(&mut self, now: Timestamp) -> Result<Option<CommitInfo>> {
        Ok(self.commit_deferring(now, None)?.0)
    }

    /// The open files to leave out of a commit at `now` under `defer`;
    /// open files that went quiet (or were left out long enough) are
    /// folded first, so the commit has their bytes (one whose fold fails
    /// is left out, logged, for a later commit). Files whose close is
    /// pending (no handle) are [`Inner::finish_closes`]'s.
    fn deferred_files(&mut self, now: Timestamp, defer: Defer) -> BTreeSet<Ino> {
        let mut out = BTreeSet::new();
        let inos: Vec<Ino> = self
            .files
            .iter()
            .filter(|(_, of)| of.last_change.is_some() && of.opens > 0)
            .map(|(i, _)| i)
            .collect();
        for ino in inos {
            let Some(of) = self.files.get_mut(ino) else {
                continue;
            };
            let last = of.last_change.unwrap_or(now);
            let since = *of.deferred_since.get_or_insert(now);
            if elapsed(last, now) < defer.quiet && elapsed(since, now) < defer.max {
                out.insert(ino);
                continue;
            }
            of.deferred_since = None;
            if elapsed(last, now) >= defer.quiet {
                of.last_change = None;
            }
            let store = self.store.clone();
            let mut txn = Txn::new(store.kv());
            self.begin();
            let folded = self.fold_file(&mut txn, ino).and_then(|()| txn.commit());
            if let Err(e) = self.settle(folded) {
                let path = super::records::path_for_log(&store, ino);
                tracing::warn!(path, error = %e, "folding an open file failed: left out");
                out.insert(ino);
            }
        }
        out
    }

    /// [`Inner::commit`], leaving out files open and being written when
    /// `defer` is given (see [`super::Vfs::commit_background`]). Returns
    /// the commit and whether a dirty name was left out or a released
    /// file's close is still pending (either way: commit again later).
    pub(crate) fn commit_deferring(
        &mut self,
        now: Timestamp,
        defer: Option<Defer>,
    ) -> Result<(Option<CommitInfo>, bool)> {
        // The commit goes on without released files that could not be
        // stored (still open here, with their bytes): a later commit tries
        // again, so one counts as left out.
        let closes_pending = self.finish_closes(now);
        let held = match defer {
            Some(d) => self.deferred_files(now, d),
            None => BTreeSet::new(),
        };
        let store = self.store.clone();
        let me = store.node_id();
        let files = &self.files;
        self.ignore
            .refresh(&store, &|ino| files.get(ino).is_some_and(|of| of.opens > 0))?;
        let mut txn = Txn::new(store.kv());
        let marks = txn.scan(Space::Dirty, &[], None, usize::MAX)?;
        if marks.is_empty() {
            return Ok((None, closes_pending));
        }
        let mut queue: BTreeMap<(Reverse<u32>, Ino), BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut depths: BTreeMap<Ino, u32> = BTreeMap::new();
        let mut left_out = closes_pending;
        // Names a new ignore set gave back: their vectors are not joined
        // with the tree's (`vfs/ignored.rs`).
        let mut unignored: BTreeSet<(Ino, Vec<u8>)> = BTreeSet::new();
        for (k, v) in &marks {
            let dir = super::records::ino_at(k, 0)?;
            if !held.is_empty() {
                if let Some(d) = txn.dirent(dir, &k[8..])? {
                    if held.contains(&d.ino) {
                        // Its mark stays: a later commit takes it.
                        left_out = true;
                        continue;
                    }
                }
            }
            txn.remove(Space::Dirty, k.clone());
            match txn.inode_opt(dir)? {
                Some(r) if r.is_dir() => {}
                _ => continue, // the directory is gone; so is its tree
            }
            let d = match depths.get(&dir) {
                Some(d) => *d,
                None => {
                    let d = depth(&txn, dir)?;
                    depths.insert(dir, d);
                    d
                }
            };
            if v.as_slice() == ignored::MARK_UNIGNORED {
                unignored.insert((dir, k[8..].to_vec()));
            }
            queue
                .entry((Reverse(d), dir))
                .or_default()
                .insert(k[8..].to_vec());
        }
        let mut changed = 0usize;
        while let Some(((Reverse(d), dir), names)) = queue.pop_first() {
            let dpath = ignored::dir_path(&txn, dir)?;
            if dir != ROOT && matches!(self.ignore.verdict(&dpath, true), Verdict::Ignored { .. }) {
                // Inside an ignored folder: nothing reaches the tree (its
                // marks are dropped; they come back if it is un-ignored).
                continue;
            }
            let mut drec = txn.inode(dir)?;
            let old_root = drec.hash();
            let mut changes = BTreeMap::new();
            let mut olds = old_entries(&ReadNodes(&txn), old_root, &names)?;
            for name in names {
                let old = olds.remove(&name);
                let dirent = txn.dirent(dir, &name)?;
                let is_dir = match (&dirent, &old) {
                    (Some(d), _) => d.kind == Kind::Dir,
                    (None, Some(o)) => o.kind == Kind::Dir,
                    (None, None) => false,
                };
                match self
                    .ignore
                    .verdict(&ignored::child_path(&dpath, &name), is_dir)
                {
                    // An ignored path's tree entry never changes here.
                    Verdict::Ignored { .. } => continue,
                    Verdict::HeldBack
                        if dirent.is_some() && old.as_ref().is_none_or(|o| o.deleted) =>
                    {
                        continue
                    }
                    _ => {}
                }
                let join = !unignored.contains(&(dir, name.clone()));
                let new = match dirent {
                    Some(d) => {
                        Some(self.entry_for(&mut txn, d.ino, &name, old.as_ref(), me, join)?)
                    }
                    None => match &old {
                        Some(o) if !o.deleted => {
                            self.clock += 1;
                            Some(o.tombstone_at(me, now, self.clock))
                        }
                        _ => None,
                    },
                };
                if let Some(new) = new {
                    if old.as_ref() != Some(&new) {
                        drec.vv = {
                            let mut v = drec.vv();
                            v.join_from(&new.vv);
                            v.iter().map(|(id, n)| (id.0, n)).collect()
                        };
                        changes.insert(name, Some(new));
                    }
                }
            }
            if changes.is_empty() {
                continue;
            }
            changed += changes.len();
            let new_root = dir::update(&mut TxnNodes(&mut txn), old_root, &changes)?;
            drec.hash = new_root.0;
            txn.put_inode(dir, &drec)?;
            if dir != ROOT {
                queue
                    .entry((Reverse(d - 1), drec.parent))
                    .or_default()
                    .insert(drec.name.clone());
            }
        }
        let root = txn.inode(ROOT)?.hash();
        let mut info = None;
        if self.head.root != Some(root) {
            let parents = self.head.root.iter().map(|h| h.0).collect();
            info = Some(append(
                &mut txn, &self.head, root, parents, now, me, changed,
            )?);
        }
        txn.put(Space::Meta, META_CLOCK, self.clock.to_be_bytes().to_vec());
        txn.commit()?;
        if let Some(i) = &info {
            self.moved_head(i);
            tracing::debug!(seq = i.seq, root = %i.root, changed = i.changed, "commit");
        }
        Ok((info, left_out))
    }

    /// The entry `name` should have now, for the inode `ino` it names.
    fn entry_for(
        &mut self,
        txn: &mut Txn<'_>,
        ino: Ino,
        name: &[u8],
        old: Option<&Entry>,
        me: crate::NodeId,
        join: bool,
    ) -> Result<Entry> {
        let mut rec = txn.inode(ino)?;
        let kind = rec.kind()?;
        let mut e = Entry {
            name: name.to_vec(),
            kind,
            mode: rec.perm & 0o7777,
            mtime: super::records::ts(rec.mtime),
            size: match kind {
                Kind::File => rec.size,
                Kind::Symlink => rec.target.len() as u64,
                _ => 0,
            },
            hash: match kind {
                Kind::File | Kind::Dir => rec.hash(),
                _ => Hash::ZERO,
            },
            target: if kind == Kind::Symlink {
                rec.target.clone()
            } else {
                Vec::new()
            },
            rdev: match kind {
                Kind::CharDev | Kind::BlockDev => rec.rdev,
                _ => 0,
            },
            vv: rec.vv(),
            modified_by: me,
            deleted: false,
        };
        if let Some(o) = old {
            if !o.deleted && same_version(o, &e) {
                return Ok(o.clone());
            }
            // A name an ignore set gave back is a local version of its
            // own: against the tree's (a peer's) it is concurrent unless
            // it descends from it (then its inode's vector says so).
            if join || kind == Kind::Dir {
                e.vv.join_from(&o.vv);
            }
        }
        self.clock += 1;
        e.vv.bump_to(me, self.clock);
        rec.set_vv(&e.vv);
        txn.put_inode(ino, &rec)?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{MemNodes, Timestamp, VersionVector};

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: Kind::Fifo,
            mode: 0o644,
            mtime: Timestamp::default(),
            size: 0,
            hash: Hash::ZERO,
            target: Vec::new(),
            rdev: 0,
            vv: VersionVector::new(),
            modified_by: crate::NodeId::default(),
            deleted: false,
        }
    }

    #[test]
    fn old_entries_reads_what_get_reads() {
        let mut store = MemNodes::default();
        let all: Vec<Entry> = (0..5000).map(|i| entry(&format!("n{i:05}"))).collect();
        let root = dir::build(&mut store, &all).unwrap();
        // Present names from every part of the tree, absent ones between
        // them, and names before the first and after the last.
        let mut names = BTreeSet::new();
        for i in (0..5000).step_by(37) {
            names.insert(format!("n{i:05}").into_bytes());
            names.insert(format!("n{i:05}x").into_bytes());
        }
        names.insert(b"a".to_vec());
        names.insert(b"z".to_vec());
        let got = old_entries(&store, root, &names).unwrap();
        for name in &names {
            assert_eq!(
                got.get(name),
                dir::get(&store, root, name).unwrap().as_ref(),
                "{name:?}"
            );
        }
        assert_eq!(got.len(), 5000usize.div_ceil(37));
    }
}
