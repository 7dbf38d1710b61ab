//! A directory's entries as a content-defined tree of immutable nodes.
//!
//! The entries of one directory (live ones and tombstones) sorted by name
//! bytes are cut into nodes by a rule that looks only at the names, so the
//! tree's shape depends only on the set of entries, never on the order of the
//! edits that made it (a prolly tree keyed like a merkle search tree).
//!
//! # Shape
//!
//! - Every name has a **level**: the number of leading zero bits of
//!   `Hash::of_domain("backer-dir-level", name).prefix_u64()`, divided by
//!   [`FANOUT_BITS`] (5), so a level of at least `k` has probability 32^-k.
//! - A node at height `h` (leaves are height 0 and hold entries; internal
//!   nodes hold one item per child of height `h - 1`: the child's last name
//!   and its hash) **ends after an item whose name's level exceeds `h`**, or
//!   when it holds [`MAX_ITEMS`] items, or at the end of the sequence. Nodes
//!   thus average 32 items, and a run of crafted names cannot make one larger
//!   than 1024.
//! - Heights are stacked until one height holds a single node: that node is
//!   the root (a lone node is not wrapped again). The empty directory is one
//!   empty leaf.
//! - A node's hash is `Hash::of_domain("backer-dir-node", bytes)` over the
//!   encoding in [`crate::tree::encode`]; a directory's subtree hash is its
//!   root node's hash.
//!
//! Every rule is a pure function of the sorted sequence, so equal sets give
//! equal roots. [`decode_node`] checks what one node can show of them (sorted
//! names, no early boundary, at most [`MAX_ITEMS`]); [`is_canonical`] checks a
//! whole tree, e.g. one received from a peer.
//!
//! # Building and updating
//!
//! One streaming builder does both: entries go in in name order, each height
//! keeps one open node, and a node is closed as soon as its last item
//! arrives. At the end, the open nodes are closed bottom up until a single
//! item is left; the root is that item's node with the single-child nodes on
//! top of it stripped (the lone nodes above the lowest height that holds one
//! node). A node is stored once a second node of its height proves it part
//! of the tree, or at the end once the root's height is known, so lone nodes
//! above the root are never stored.
//!
//! [`update`] feeds the builder the old entries merged with the changes, but
//! pushes every old subtree that the changes do not touch as one item,
//! without reading it, whenever that gives exactly what pushing its entries
//! would: when no open node lies at or below its height, and its end is sure
//! to close a node at its own height (it was not the last node of its height
//! in the old tree, or its last name's level exceeds its height, or nothing
//! comes after it in the new sequence either). So a small
//! batch reads and writes O(log n) nodes, and the result is identical to
//! [`build`] of the new set (tested with the real fanout and with a fanout of
//! 2 and a cap of 4 items, which makes deep trees and cap-ended nodes from
//! small inputs).
//!
//! # Comparing
//!
//! [`diff`] lists the names whose entries differ between two trees by a
//! parallel descent that skips every pair of equal subtrees unread: O(depth)
//! nodes per difference between canonical trees, and correct (if slower) for
//! trees cut elsewhere.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::tree::encode::{Reader, Writer, MIN_ENTRY_LEN};
use crate::tree::entry::{validate_name, Entry, MAX_NAME_LEN};
use crate::tree::{level_of, load, HashOnly, NodeStore};

mod diff;
pub use self::diff::diff;

/// Fanout: a name's level counts runs of this many leading zero bits, so
/// nodes average 2^5 = 32 items.
pub const FANOUT_BITS: u32 = 5;

/// The most items one node holds: a node also ends when it reaches this.
pub const MAX_ITEMS: usize = 1024;

const NODE_DOMAIN: &str = "backer-dir-node";
const LEVEL_DOMAIN: &str = "backer-dir-level";

/// The fewest bytes an internal item takes: a one-byte name and a hash.
const MIN_CHILD_LEN: usize = 2 + 32;

/// One decoded node, for the replication engine's descent (compare node by
/// node, descend only where hashes differ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirNode {
    /// Height 0: entries, strictly sorted by name.
    Leaf(Vec<Entry>),
    /// Height >= 1: children of height `height - 1`, each as its last name
    /// and its hash, strictly sorted by name.
    Internal {
        /// This node's height (its children's plus one).
        height: u8,
        /// (last name in the child, child node hash), in name order.
        children: Vec<(Vec<u8>, Hash)>,
    },
}

impl DirNode {
    /// The node's height: 0 for a leaf.
    pub fn height(&self) -> u8 {
        match self {
            DirNode::Leaf(_) => 0,
            DirNode::Internal { height, .. } => *height,
        }
    }

    /// The last name under this node (`None` only for the empty leaf).
    pub fn last_name(&self) -> Option<&[u8]> {
        match self {
            DirNode::Leaf(entries) => entries.last().map(|e| e.name.as_slice()),
            DirNode::Internal { children, .. } => children.last().map(|(k, _)| k.as_slice()),
        }
    }
}

/// The level of a name (see the module documentation).
pub fn level(name: &[u8]) -> u32 {
    SHAPE.level(name)
}

/// Stores the empty directory (an empty leaf) and returns its hash.
pub fn empty(store: &mut impl NodeStore) -> Result<Hash> {
    SHAPE.build(store, &[])
}

/// Stores the tree of `entries` and returns its root hash.
///
/// `entries` must be strictly sorted by name ([`Error::InvalidArgument`]
/// otherwise) and each must pass [`Entry::validate`] (its error otherwise).
pub fn build(store: &mut impl NodeStore, entries: &[Entry]) -> Result<Hash> {
    SHAPE.build(store, entries)
}

/// Applies `changes` (name -> `Some(entry)` inserts or replaces, `None`
/// removes the name entirely, if present) to the tree `root` and returns the
/// new root, identical to [`build`] of the resulting set.
///
/// Only the nodes the changes touch are read and written: O(log n) for a
/// small batch. `root` must be a canonical tree (made here, or checked with
/// [`is_canonical`]). Each new entry must be valid and named by its key
/// ([`Error::InvalidArgument`] otherwise).
pub fn update(
    store: &mut impl NodeStore,
    root: Hash,
    changes: &BTreeMap<Vec<u8>, Option<Entry>>,
) -> Result<Hash> {
    SHAPE.update(store, root, changes)
}

/// The entry named `name`, if any (live or tombstone). Reads one node per
/// height.
pub fn get(store: &impl NodeStore, root: Hash, name: &[u8]) -> Result<Option<Entry>> {
    SHAPE.get(store, root, name)
}

/// All entries (live and tombstones), in name order.
pub fn entries(store: &impl NodeStore, root: Hash) -> Result<Vec<Entry>> {
    SHAPE.entries(store, root)
}

/// Whether the tree `root` has exactly the shape [`build`] gives its entries
/// (a peer could send well-formed nodes cut in other places, whose root then
/// differs from ours for the same entries). Reads the whole tree, writes
/// nothing.
pub fn is_canonical(store: &impl NodeStore, root: Hash) -> Result<bool> {
    SHAPE.is_canonical(store, root)
}

/// Reads and decodes the node `hash`, checking it against its hash.
pub fn read_node(store: &impl NodeStore, hash: Hash) -> Result<DirNode> {
    SHAPE.read(store, hash)
}

/// Whether `bytes` are the node named `hash`: they hash to it and decode.
pub fn verify_node(hash: &Hash, bytes: &[u8]) -> bool {
    Hash::of_domain(NODE_DOMAIN, bytes) == *hash && decode_node(bytes).is_ok()
}

/// Decodes one node, rejecting every non-canonical form one node can show:
/// unsorted or duplicate names, a name before the last whose level should
/// have ended the node, more than [`MAX_ITEMS`] items, an empty internal
/// node, invalid entries or names, trailing bytes.
pub fn decode_node(bytes: &[u8]) -> Result<DirNode> {
    SHAPE.decode(bytes)
}

/// The parameters of the shape rules: real trees use [`SHAPE`]; tests also
/// use a tiny fanout and cap, to reach deep trees and cap-ended nodes.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Leading zero bits per level.
    bits: u32,
    /// The most items in one node.
    max_items: usize,
}

/// The shape of every stored directory tree.
const SHAPE: Shape = Shape {
    bits: FANOUT_BITS,
    max_items: MAX_ITEMS,
};

impl Shape {
    fn level(self, name: &[u8]) -> u32 {
        level_of(&Hash::of_domain(LEVEL_DOMAIN, name), self.bits)
    }

    fn build(self, store: &mut impl NodeStore, entries: &[Entry]) -> Result<Hash> {
        if entries.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(Error::InvalidArgument(
                "directory entries not sorted by name or not unique",
            ));
        }
        let mut b = Builder::new(self, store);
        for e in entries {
            e.validate()?;
            b.push_entry(e.clone())?;
        }
        b.finish()
    }

    fn update(
        self,
        store: &mut impl NodeStore,
        root: Hash,
        changes: &BTreeMap<Vec<u8>, Option<Entry>>,
    ) -> Result<Hash> {
        for (name, change) in changes {
            if let Some(e) = change {
                if e.name != *name {
                    return Err(Error::InvalidArgument(
                        "change key differs from the entry's name",
                    ));
                }
                e.validate()?;
            }
        }
        if changes.is_empty() {
            return Ok(root);
        }
        let mut b = Builder::new(self, store);
        let mut pending = changes.iter().peekable();
        let node = self.read(&*b.store, root)?;
        b.walk(&mut pending, node, true)?;
        for (_, change) in pending {
            if let Some(e) = change {
                b.push_entry(e.clone())?;
            }
        }
        b.finish()
    }

    fn get(self, store: &impl NodeStore, root: Hash, name: &[u8]) -> Result<Option<Entry>> {
        let mut node = self.read(store, root)?;
        loop {
            match node {
                DirNode::Leaf(mut entries) => {
                    return Ok(
                        match entries.binary_search_by(|e| e.name.as_slice().cmp(name)) {
                            Ok(i) => Some(entries.swap_remove(i)),
                            Err(_) => None,
                        },
                    );
                }
                DirNode::Internal { height, children } => {
                    let i = children.partition_point(|(k, _)| k.as_slice() < name);
                    let Some((key, hash)) = children.get(i) else {
                        return Ok(None);
                    };
                    node = self.read_child(store, *hash, height, key)?;
                }
            }
        }
    }

    fn entries(self, store: &impl NodeStore, root: Hash) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.collect(store, self.read(store, root)?, &mut out)?;
        Ok(out)
    }

    fn collect(self, store: &impl NodeStore, node: DirNode, out: &mut Vec<Entry>) -> Result<()> {
        match node {
            DirNode::Leaf(entries) => {
                if let (Some(prev), Some(first)) = (out.last(), entries.first()) {
                    if prev.name >= first.name {
                        return Err(Error::corrupt("directory leaves out of order"));
                    }
                }
                out.extend(entries);
            }
            DirNode::Internal { height, children } => {
                for (key, hash) in children {
                    self.collect(store, self.read_child(store, hash, height, &key)?, out)?;
                }
            }
        }
        Ok(())
    }

    fn is_canonical(self, store: &impl NodeStore, root: Hash) -> Result<bool> {
        let all = self.entries(store, root)?;
        Ok(self.build(&mut HashOnly, &all)? == root)
    }

    fn read(self, store: &impl NodeStore, hash: Hash) -> Result<DirNode> {
        self.decode(&load(store, &hash, NODE_DOMAIN)?)
    }

    /// Reads the child `hash` of a node at `parent_height` whose item names
    /// it with `key`, checking its height and last name.
    fn read_child(
        self,
        store: &impl NodeStore,
        hash: Hash,
        parent_height: u8,
        key: &[u8],
    ) -> Result<DirNode> {
        let child = self.read(store, hash)?;
        if child.height().checked_add(1) != Some(parent_height) || child.last_name() != Some(key) {
            return Err(Error::corrupt(format!(
                "directory node {hash} does not fit its parent (height or last name)"
            )));
        }
        Ok(child)
    }

    fn decode(self, bytes: &[u8]) -> Result<DirNode> {
        let mut r = Reader::new(bytes);
        let height = r.read_header()?;
        let node = if height == 0 {
            let n = r.read_count(self.max_items, MIN_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(r.read_entry()?);
            }
            self.check_keys(entries.iter().map(|e| e.name.as_slice()), 0)?;
            DirNode::Leaf(entries)
        } else {
            let n = r.read_count(self.max_items, MIN_CHILD_LEN)?;
            if n == 0 {
                return Err(Error::corrupt("empty internal directory node"));
            }
            let mut children = Vec::with_capacity(n);
            for _ in 0..n {
                let key = r.read_bytes(MAX_NAME_LEN)?.to_vec();
                validate_name(&key)
                    .map_err(|_| Error::corrupt("invalid name in directory node"))?;
                children.push((key, r.read_hash()?));
            }
            self.check_keys(children.iter().map(|(k, _)| k.as_slice()), height)?;
            DirNode::Internal { height, children }
        };
        r.finish()?;
        Ok(node)
    }

    /// Names strictly increasing, and none but the last one a boundary at
    /// `height` (the node would have ended there).
    fn check_keys<'a>(self, keys: impl Iterator<Item = &'a [u8]>, height: u8) -> Result<()> {
        let mut prev: Option<&[u8]> = None;
        for key in keys {
            if let Some(p) = prev {
                if p >= key {
                    return Err(Error::corrupt("directory node names not strictly sorted"));
                }
                if self.level(p) > u32::from(height) {
                    return Err(Error::corrupt("directory node continues past a boundary"));
                }
            }
            prev = Some(key);
        }
        Ok(())
    }
}

type Changes<'c> =
    std::iter::Peekable<std::collections::btree_map::Iter<'c, Vec<u8>, Option<Entry>>>;

/// A node finished at some height but not stored yet.
struct Pending {
    hash: Hash,
    /// The encoding, if this run built the node (`None`: an old node).
    bytes: Option<Vec<u8>>,
    /// For a node built here with a single child: that child.
    only_child: Option<Hash>,
}

/// Per-height state of the [`Builder`].
#[derive(Default)]
struct Height {
    /// The open internal node's items (unused at height 0).
    items: Vec<(Vec<u8>, Hash)>,
    /// Nodes finished at this height, counted up to 2.
    finished: u8,
    /// The first node finished here, until a second one shows this height is
    /// below the root (then it is stored) or the end decides.
    first: Option<Pending>,
}

/// The streaming builder: entries in name order in, nodes out, one open node
/// per height. A node is closed as soon as its last item arrives.
struct Builder<'s, S: NodeStore> {
    shape: Shape,
    store: &'s mut S,
    leaf: Vec<Entry>,
    heights: Vec<Height>,
}

impl<'s, S: NodeStore> Builder<'s, S> {
    fn new(shape: Shape, store: &'s mut S) -> Self {
        Builder {
            shape,
            store,
            leaf: Vec::new(),
            heights: Vec::new(),
        }
    }

    fn height(&mut self, h: u8) -> &mut Height {
        let h = usize::from(h);
        if self.heights.len() <= h {
            self.heights.resize_with(h + 1, Height::default);
        }
        &mut self.heights[h]
    }

    /// Feeds the old subtree `node` merged with the pending changes that fall
    /// in it, reusing untouched subtrees whole where that is exact.
    /// `rightmost`: `node` was the last node of its height in the old tree.
    fn walk(&mut self, pending: &mut Changes<'_>, node: DirNode, rightmost: bool) -> Result<()> {
        match node {
            DirNode::Leaf(entries) => {
                for e in entries {
                    while let Some((_, change)) = pending.next_if(|(k, _)| **k < e.name) {
                        if let Some(new) = change {
                            self.push_entry(new.clone())?;
                        }
                    }
                    match pending.next_if(|(k, _)| **k == e.name) {
                        Some((_, Some(new))) => self.push_entry(new.clone())?,
                        Some((_, None)) => {}
                        None => self.push_entry(e)?,
                    }
                }
            }
            DirNode::Internal { height, children } => {
                let n = children.len();
                let child_height = height - 1;
                for (i, (key, hash)) in children.into_iter().enumerate() {
                    let last = rightmost && i + 1 == n;
                    let touched = pending.peek().is_some_and(|(k, _)| **k <= key);
                    if !touched && self.can_push_whole(child_height) {
                        let lvl = self.shape.level(&key);
                        // A last node may have ended only because the old
                        // sequence did: it is exact here only if it still
                        // ends the sequence, or ends at a boundary anyway.
                        let ends = pending.peek().is_none() || lvl > u32::from(child_height);
                        if !last || ends {
                            self.push_subtree(child_height, key, hash, lvl)?;
                            continue;
                        }
                    }
                    let child = self.shape.read_child(&*self.store, hash, height, &key)?;
                    self.walk(pending, child, last)?;
                }
            }
        }
        Ok(())
    }

    fn push_entry(&mut self, e: Entry) -> Result<()> {
        let lvl = self.shape.level(&e.name);
        self.leaf.push(e);
        if lvl > 0 || self.leaf.len() >= self.shape.max_items {
            self.close_leaf(lvl)?;
        }
        Ok(())
    }

    fn close_leaf(&mut self, lvl: u32) -> Result<()> {
        let bytes = encode_leaf(&self.leaf);
        let key = self.leaf.pop().map(|e| e.name).unwrap_or_default();
        self.leaf.clear();
        self.close(0, key, bytes, None, lvl)
    }

    /// Whether no node is open at any height up to `h`, so a finished old
    /// subtree of height `h` can be pushed as one item.
    fn can_push_whole(&self, h: u8) -> bool {
        self.leaf.is_empty()
            && self
                .heights
                .iter()
                .take(usize::from(h) + 1)
                .all(|x| x.items.is_empty())
    }

    /// Pushes the old node `hash` of height `h`, whose last name is `key` of
    /// level `lvl`, as one item (see [`Builder::can_push_whole`]).
    fn push_subtree(&mut self, h: u8, key: Vec<u8>, hash: Hash, lvl: u32) -> Result<()> {
        self.finished(
            h,
            Pending {
                hash,
                bytes: None,
                only_child: None,
            },
        )?;
        self.push_item(up(h)?, key, hash, lvl)
    }

    fn push_item(&mut self, h: u8, key: Vec<u8>, hash: Hash, lvl: u32) -> Result<()> {
        let max = self.shape.max_items;
        let items = &mut self.height(h).items;
        items.push((key, hash));
        if lvl > u32::from(h) || items.len() >= max {
            self.close_internal(h, lvl)?;
        }
        Ok(())
    }

    fn close_internal(&mut self, h: u8, lvl: u32) -> Result<()> {
        let mut items = std::mem::take(&mut self.height(h).items);
        let bytes = encode_internal(h, &items);
        let only_child = match items.as_slice() {
            [(_, child)] => Some(*child),
            _ => None,
        };
        let key = items.pop().map(|(k, _)| k).unwrap_or_default();
        self.close(h, key, bytes, only_child, lvl)
    }

    /// Records the finished node `bytes` of height `h` and pushes it upward.
    fn close(
        &mut self,
        h: u8,
        key: Vec<u8>,
        bytes: Vec<u8>,
        only_child: Option<Hash>,
        lvl: u32,
    ) -> Result<()> {
        let hash = Hash::of_domain(NODE_DOMAIN, &bytes);
        self.finished(
            h,
            Pending {
                hash,
                bytes: Some(bytes),
                only_child,
            },
        )?;
        self.push_item(up(h)?, key, hash, lvl)
    }

    /// Counts a finished node at height `h`; from the second one on, the
    /// height is below the root, and its nodes are stored.
    fn finished(&mut self, h: u8, node: Pending) -> Result<()> {
        let height = self.height(h);
        height.finished = height.finished.saturating_add(1);
        if height.finished == 1 {
            height.first = Some(node);
            return Ok(());
        }
        let first = height.first.take();
        for p in first.into_iter().chain([node]) {
            if let Some(bytes) = p.bytes {
                self.store.put_node(p.hash, bytes)?;
            }
        }
        Ok(())
    }

    /// Closes the open nodes bottom up until one item is left, strips the
    /// single-child nodes above the root, stores what the tree still needs
    /// and returns the root.
    fn finish(mut self) -> Result<Hash> {
        if let Some(last) = self.leaf.last() {
            let lvl = self.shape.level(&last.name);
            self.close_leaf(lvl)?;
        }
        let shape = self.shape;
        let mut h: u8 = 1;
        while self.heights.iter().map(|x| x.items.len()).sum::<usize>() > 1 {
            if let Some(lvl) = self.height(h).items.last().map(|(k, _)| shape.level(k)) {
                self.close_internal(h, lvl)?;
            }
            h = up(h)?;
        }
        let top = self
            .heights
            .iter()
            .enumerate()
            .find_map(|(h, x)| x.items.first().map(|i| (h, i.1)));
        let Some((top_height, mut root)) = top else {
            // Nothing was pushed: the empty directory.
            let bytes = encode_leaf(&[]);
            let hash = Hash::of_domain(NODE_DOMAIN, &bytes);
            self.store.put_node(hash, bytes)?;
            return Ok(hash);
        };
        // The item at `top_height` names a node one height lower.
        let mut height =
            u8::try_from(top_height - 1).map_err(|_| Error::corrupt("directory tree too high"))?;
        while height > 0 {
            let built = self.heights[usize::from(height)]
                .first
                .as_ref()
                .filter(|p| p.hash == root && p.bytes.is_some());
            let only_child = match built {
                Some(p) => p.only_child,
                None => match self.shape.read(&*self.store, root)? {
                    DirNode::Internal { children, .. } if children.len() == 1 => {
                        Some(children[0].1)
                    }
                    _ => None,
                },
            };
            let Some(child) = only_child else { break };
            root = child;
            height -= 1;
        }
        for x in &mut self.heights[..=usize::from(height)] {
            if let Some(Pending {
                hash,
                bytes: Some(bytes),
                ..
            }) = x.first.take()
            {
                self.store.put_node(hash, bytes)?;
            }
        }
        Ok(root)
    }
}

/// The height above `h` (only a corrupt tree could reach the top).
fn up(h: u8) -> Result<u8> {
    h.checked_add(1)
        .ok_or_else(|| Error::corrupt("directory tree too high"))
}

fn encode_leaf(entries: &[Entry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_header(0, entries.len());
    for e in entries {
        w.put_entry(e);
    }
    w.into_bytes()
}

fn encode_internal(height: u8, children: &[(Vec<u8>, Hash)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_header(height, children.len());
    for (k, hash) in children {
        w.put_bytes(k);
        w.put_hash(hash);
    }
    w.into_bytes()
}

#[cfg(test)]
mod tests;
