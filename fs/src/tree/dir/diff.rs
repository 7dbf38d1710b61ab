//! The differences between two directory trees, by parallel descent.
//!
//! Each side is a stack of pending items in name order: entries, and
//! subtrees not read yet, each known by its hash, height and last name
//! (its `key`). At every step the two front items are compared:
//!
//! - two subtrees with the same hash hold the same entries: both are
//!   skipped unread;
//! - two entries: the smaller name is a difference on its own side; equal
//!   names differ if the entries do;
//! - an entry and a subtree: the subtree is read (its entries may hold the
//!   entry's name);
//! - two different subtrees: the one with the smaller key is read (nothing
//!   on the other side at or after the other front can equal it); on equal
//!   keys the higher one, or both at one height.
//!
//! Skipping needs only that equal hashes mean equal entries, so the result
//! is right for any well-formed trees, however their nodes were cut. For
//! canonical trees the two sides' nodes line up wherever the entries are
//! the same, so one difference costs a path per side: O(depth) nodes.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::{DirNode, Shape, SHAPE};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::tree::entry::Entry;
use crate::tree::NodeStore;

/// One difference: (entry in `a`, entry in `b`); at least one is `Some`.
type Change = (Option<Entry>, Option<Entry>);

/// The names whose entries differ between the directory trees `a` and `b`
/// (all their nodes in `store`), in name order, as (entry in a, entry in b):
/// at least one side is `Some`, and they are not equal (tombstones are
/// entries like any other). Subtrees whose node hashes are equal are
/// skipped, so for canonical trees the cost is proportional to the
/// differences times the depth, not to the directory size; it is correct
/// for any well-formed trees. `diff(x, x)` reads nothing.
///
/// Errors: [`Error::Corrupt`] for a missing or damaged node, or nodes that
/// do not fit together (heights, last names, names out of order).
pub fn diff(
    store: &impl NodeStore,
    a: Hash,
    b: Hash,
) -> Result<Vec<(Option<Entry>, Option<Entry>)>> {
    SHAPE.diff(store, a, b)
}

/// A pending item of one side.
enum Item {
    Entry(Entry),
    /// A subtree not read yet.
    Node {
        hash: Hash,
        height: u8,
        /// Its last name.
        key: Vec<u8>,
    },
}

/// One side of the descent: its pending items, the front last.
struct Side {
    stack: Vec<Item>,
    /// The last name consumed, to check the order across nodes.
    last: Option<Vec<u8>>,
}

impl Side {
    fn front(&self) -> Option<&Item> {
        self.stack.last()
    }

    /// Takes the front item, checking names keep increasing.
    fn pop(&mut self) -> Result<Item> {
        let item = self
            .stack
            .pop()
            .ok_or_else(|| Error::corrupt("directory diff: empty side"))?;
        let name = match &item {
            Item::Entry(e) => &e.name,
            Item::Node { key, .. } => key,
        };
        if self.last.as_ref().is_some_and(|l| l >= name) {
            return Err(Error::corrupt("directory nodes out of order"));
        }
        self.last = Some(name.clone());
        Ok(item)
    }

    /// Pushes the items of `node` so that its first one is the front.
    fn push_node(&mut self, node: DirNode) {
        match node {
            DirNode::Leaf(entries) => self
                .stack
                .extend(entries.into_iter().rev().map(Item::Entry)),
            DirNode::Internal { height, children } => {
                self.stack
                    .extend(children.into_iter().rev().map(|(key, hash)| Item::Node {
                        hash,
                        height: height - 1,
                        key,
                    }))
            }
        }
    }
}

/// Decoded nodes, read once per call even when both sides hold them.
struct NodeCache<'s, S: NodeStore> {
    shape: Shape,
    store: &'s S,
    cache: HashMap<Hash, DirNode>,
}

impl<S: NodeStore> NodeCache<'_, S> {
    fn read(&mut self, hash: Hash) -> Result<DirNode> {
        if let Some(node) = self.cache.get(&hash) {
            return Ok(node.clone());
        }
        let node = self.shape.read(self.store, hash)?;
        self.cache.insert(hash, node.clone());
        Ok(node)
    }

    /// Replaces the front subtree of `side` with its items.
    fn expand(&mut self, side: &mut Side) -> Result<()> {
        let Some(Item::Node { hash, height, key }) = side.stack.pop() else {
            return Err(Error::corrupt("directory diff: expanding an entry"));
        };
        let node = self.read(hash)?;
        if node.height() != height || node.last_name() != Some(key.as_slice()) {
            return Err(Error::corrupt(format!(
                "directory node {hash} does not fit its parent (height or last name)"
            )));
        }
        side.push_node(node);
        Ok(())
    }
}

/// What to do with the two front items.
enum Step {
    SkipBoth,
    ExpandA,
    ExpandB,
    ExpandBoth,
    Entries,
    OnlyA,
    OnlyB,
    Done,
}

fn step(a: Option<&Item>, b: Option<&Item>) -> Step {
    match (a, b) {
        (None, None) => Step::Done,
        (Some(Item::Entry(_)), None) => Step::OnlyA,
        (None, Some(Item::Entry(_))) => Step::OnlyB,
        (Some(Item::Node { .. }), None | Some(Item::Entry(_))) => Step::ExpandA,
        (None | Some(Item::Entry(_)), Some(Item::Node { .. })) => Step::ExpandB,
        (Some(Item::Entry(_)), Some(Item::Entry(_))) => Step::Entries,
        (
            Some(Item::Node {
                hash: ha,
                height: hta,
                key: ka,
            }),
            Some(Item::Node {
                hash: hb,
                height: htb,
                key: kb,
            }),
        ) => {
            if ha == hb {
                return Step::SkipBoth;
            }
            match ka.cmp(kb).then(htb.cmp(hta)) {
                Ordering::Less => Step::ExpandA,
                Ordering::Greater => Step::ExpandB,
                Ordering::Equal => Step::ExpandBoth,
            }
        }
    }
}

impl Shape {
    /// See [`diff`].
    pub(super) fn diff(self, store: &impl NodeStore, a: Hash, b: Hash) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        if a == b {
            return Ok(out);
        }
        let mut reader = NodeCache {
            shape: self,
            store,
            cache: HashMap::new(),
        };
        let mut sa = Side {
            stack: Vec::new(),
            last: None,
        };
        let mut sb = Side {
            stack: Vec::new(),
            last: None,
        };
        sa.push_node(reader.read(a)?);
        sb.push_node(reader.read(b)?);
        loop {
            match step(sa.front(), sb.front()) {
                Step::Done => return Ok(out),
                Step::SkipBoth => {
                    sa.pop()?;
                    sb.pop()?;
                }
                Step::ExpandA => reader.expand(&mut sa)?,
                Step::ExpandB => reader.expand(&mut sb)?,
                Step::ExpandBoth => {
                    reader.expand(&mut sa)?;
                    reader.expand(&mut sb)?;
                }
                Step::OnlyA => out.push((Some(entry(sa.pop()?)?), None)),
                Step::OnlyB => out.push((None, Some(entry(sb.pop()?)?))),
                Step::Entries => {
                    let order = match (sa.front(), sb.front()) {
                        (Some(Item::Entry(x)), Some(Item::Entry(y))) => x.name.cmp(&y.name),
                        _ => return Err(Error::corrupt("directory diff: lost an entry")),
                    };
                    match order {
                        Ordering::Less => out.push((Some(entry(sa.pop()?)?), None)),
                        Ordering::Greater => out.push((None, Some(entry(sb.pop()?)?))),
                        Ordering::Equal => {
                            let (x, y) = (entry(sa.pop()?)?, entry(sb.pop()?)?);
                            if x != y {
                                out.push((Some(x), Some(y)));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn entry(item: Item) -> Result<Entry> {
    match item {
        Item::Entry(e) => Ok(e),
        Item::Node { .. } => Err(Error::corrupt("directory diff: expected an entry")),
    }
}

#[cfg(test)]
mod tests;
