//! Restoring a past version of a name into the live tree.
//!
//! A restore is an edit like any other: the new root is the current one
//! with the entry at a path replaced by the entry it had in an older root,
//! and every restored entry dominates what it replaces (DESIGN.md,
//! "Traps"): its vector is the join of the current entry's (even a
//! tombstone's) and the old one's, plus a bump of this node. A restored
//! directory is merged name by name, so each name under it also dominates
//! its current version (a peer that still holds the newer versions takes
//! the restored ones, rather than keeping its own), and names that did not
//! exist then become tombstones. Ancestors missing from the current tree
//! are made again (from their old entries) holding only the restored path;
//! every ancestor's vector joins what it now holds, plus a bump.

use std::collections::BTreeMap;

use super::commit::{self, ReadNodes, TxnNodes};
use super::install::Installed;
use super::records::NamespaceTxn;
use super::types::ROOT;
use super::{History, Inner};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::{Space, Txn};
use crate::tree::{dir, Entry, Kind, NodeStore, Timestamp};

/// The entry at `path` (names from the root) in the tree `root`: `None`
/// when a name on the way is missing, a tombstone (the last may be one:
/// it is returned) or not a directory. The empty path has no entry.
pub fn entry_at(store: &impl NodeStore, root: Hash, path: &[&[u8]]) -> Result<Option<Entry>> {
    let Some((last, dirs)) = path.split_last() else {
        return Ok(None);
    };
    let mut node = root;
    for name in dirs {
        match dir::get(store, node, name)? {
            Some(e) if !e.deleted && e.kind == Kind::Dir => node = e.hash,
            _ => return Ok(None),
        }
    }
    dir::get(store, node, last)
}

/// One restore's state: the node, its clock and the time.
struct Restorer<'a> {
    inner: &'a mut Inner,
    me: crate::NodeId,
    now: Timestamp,
}

/// A directory being restored: its entry so far, the current tree it is
/// merged into, the names still to visit (last first) and the new
/// entries of those visited.
struct Pending {
    name: Vec<u8>,
    e: Entry,
    base: Hash,
    todo: Vec<(Option<Entry>, Option<Entry>)>,
    changes: BTreeMap<Vec<u8>, Option<Entry>>,
}

/// The first look at a name: settled, or a directory to go through.
enum Step {
    Done(Option<Entry>),
    Dir(Pending),
}

impl Restorer<'_> {
    fn tick(&mut self) -> u64 {
        self.inner.clock += 1;
        self.inner.clock
    }

    /// What a name whose current entry is `cur` becomes when restored to
    /// `old` (either may be absent or a tombstone); `None`: it stays.
    /// Directories are walked from a heap stack: a peer's tree may be
    /// deeper than a control thread's stack allows.
    fn entry(
        &mut self,
        nodes: &mut TxnNodes<'_, '_>,
        old: Option<Entry>,
        cur: Option<Entry>,
    ) -> Result<Option<Entry>> {
        let mut stack = match self.start(nodes, Vec::new(), old, cur)? {
            Step::Done(e) => return Ok(e),
            Step::Dir(p) => vec![p],
        };
        while let Some(top) = stack.last_mut() {
            let Some((c, n)) = top.todo.pop() else {
                let Some(done) = stack.pop() else { break };
                let (name, e) = self.finish(nodes, done)?;
                match stack.last_mut() {
                    Some(parent) => parent.settle(name, Some(e)),
                    None => return Ok(Some(e)),
                }
                continue;
            };
            let Some(name) = n.as_ref().or(c.as_ref()).map(|x| x.name.clone()) else {
                continue;
            };
            match self.start(nodes, name.clone(), n, c)? {
                Step::Done(e) => top.settle(name, e),
                Step::Dir(p) => stack.push(p),
            }
        }
        Err(Error::corrupt("restore: a directory walk ended early"))
    }

    /// Settles `old` over `cur` unless it is a directory to walk.
    fn start(
        &mut self,
        nodes: &mut TxnNodes<'_, '_>,
        name: Vec<u8>,
        old: Option<Entry>,
        cur: Option<Entry>,
    ) -> Result<Step> {
        let cur_live = cur.as_ref().filter(|c| !c.deleted);
        let Some(o) = old.filter(|o| !o.deleted) else {
            // It did not exist then: delete it now, if it exists.
            return Ok(Step::Done(match cur_live {
                Some(c) => {
                    let tick = self.tick();
                    Some(c.tombstone_at(self.me, self.now, tick))
                }
                None => None,
            }));
        };
        if let Some(c) = cur_live {
            if commit::same_version(&o, c) {
                return Ok(Step::Done(None));
            }
        }
        let mut e = o.clone();
        if let Some(c) = &cur {
            e.vv.join_from(&c.vv);
        }
        if o.kind != Kind::Dir {
            return Ok(Step::Done(Some(self.stamp(e))));
        }
        let base = match cur_live {
            Some(c) if c.kind == Kind::Dir => c.hash,
            _ => dir::empty(nodes)?,
        };
        let mut todo = dir::diff(&*nodes, base, o.hash)?;
        todo.reverse();
        Ok(Step::Dir(Pending {
            name,
            e,
            base,
            todo,
            changes: BTreeMap::new(),
        }))
    }

    /// A directory whose names are all settled: its new tree and entry.
    fn finish(&mut self, nodes: &mut TxnNodes<'_, '_>, p: Pending) -> Result<(Vec<u8>, Entry)> {
        let mut e = p.e;
        e.hash = dir::update(nodes, p.base, &p.changes)?;
        Ok((p.name, self.stamp(e)))
    }

    /// A restored entry dominates what it replaces: a bump of this node.
    fn stamp(&mut self, mut e: Entry) -> Entry {
        let tick = self.tick();
        e.vv.bump_to(self.me, tick);
        e.modified_by = self.me;
        e
    }
}

impl Pending {
    /// Records what the name `name` under this directory becomes.
    fn settle(&mut self, name: Vec<u8>, new: Option<Entry>) {
        if let Some(new) = new {
            self.e.vv.join_from(&new.vv);
            self.changes.insert(name, Some(new));
        }
    }
}

impl History<'_> {
    /// Restores the name at `path` (names from the root, at least one) to
    /// the entry it had in the tree `from_root`, as a new commit of the
    /// live tree: see the module documentation. Pending local changes are
    /// committed first. Returns `None` if nothing had to change.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty path,
    /// [`Error::NotFound`] if `from_root` has no entry at `path` (a
    /// tombstone there restores the deletion), and the errors of
    /// [`Vfs::install_with`].
    pub fn restore(&self, path: &[&[u8]], from_root: Hash) -> Result<Option<Installed>> {
        if path.is_empty() {
            return Err(Error::InvalidArgument("restore: an empty path"));
        }
        let now = self.vfs.now();
        let mut guard = self.vfs.lock();
        let inner = &mut *guard;
        let store = inner.store.clone();
        inner.commit(now)?;
        let me = store.node_id();
        let mut txn = Txn::new(store.kv());
        let base = txn.inode(ROOT)?.hash();
        let old = entry_at(&ReadNodes(&txn), from_root, path)?.ok_or(Error::NotFound)?;

        // The current directories along the path (`None`: missing) and
        // the current entries of the path's names.
        let mut cur_dirs = vec![Some(base)];
        let mut cur_entries = Vec::new();
        for name in path {
            let e = match cur_dirs.last().copied().flatten() {
                Some(d) => dir::get(&ReadNodes(&txn), d, name)?,
                None => None,
            };
            cur_dirs.push(
                e.as_ref()
                    .filter(|e| !e.deleted && e.kind == Kind::Dir)
                    .map(|e| e.hash),
            );
            cur_entries.push(e);
        }
        let clock_before = inner.clock;
        let mut r = Restorer { inner, me, now };
        let mut nodes = TxnNodes(&mut txn);
        let cur_last = cur_entries.pop().flatten();
        let Some(mut child) = r.entry(&mut nodes, Some(old), cur_last)? else {
            return Ok(None);
        };
        // Up the path: each ancestor holds the new child.
        for depth in (1..path.len()).rev() {
            let cur = cur_entries.pop().flatten();
            let dir_hash = match cur_dirs[depth] {
                Some(h) => h,
                None => dir::empty(&mut nodes)?,
            };
            let mut changes = BTreeMap::new();
            let child_vv = child.vv.clone();
            changes.insert(child.name.clone(), Some(child));
            let mut e = match cur.filter(|c| !c.deleted && c.kind == Kind::Dir) {
                Some(c) => c,
                None => {
                    // Missing now: made again from its old entry.
                    let mut e = entry_at(&ReadNodes(&*nodes.0), from_root, &path[..depth])?
                        .ok_or_else(|| Error::corrupt("restore: an ancestor vanished"))?;
                    if let Some(c) = entry_at(&ReadNodes(&*nodes.0), base, &path[..depth])? {
                        e.vv.join_from(&c.vv);
                    }
                    e
                }
            };
            e.hash = dir::update(&mut nodes, dir_hash, &changes)?;
            e.vv.join_from(&child_vv);
            let tick = r.tick();
            e.vv.bump_to(me, tick);
            e.modified_by = me;
            child = e;
        }
        let mut changes = BTreeMap::new();
        changes.insert(child.name.clone(), Some(child));
        let root = dir::update(&mut nodes, base, &changes)?;
        let clock = r.inner.clock;
        txn.put(
            Space::Meta,
            commit::META_CLOCK,
            clock.to_be_bytes().to_vec(),
        );
        if root == base {
            inner.clock = clock_before;
            return Ok(None);
        }
        self.vfs
            .install_root(inner, txn, base, root, vec![base.0], now)
            .map(Some)
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
