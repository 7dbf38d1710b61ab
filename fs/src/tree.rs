//! The merkle tree: entries, version vectors, and the immutable,
//! content-addressed nodes that hold directories and file contents.
//!
//! - [`entry`]: one name in a directory ([`Entry`]), exactly what is hashed.
//! - [`vv`]: version vectors ([`VersionVector`]) and how two versions relate.
//! - [`encode`]: the canonical binary encoding every hash is taken over.
//! - [`dir`]: a directory's entries as a content-defined tree of nodes keyed
//!   by name, updated in O(log n) new nodes per change.
//! - [`content`]: a file's ordered chunk list as a small tree of nodes.
//! - [`conflict`]: the names of conflict copies.
//!
//! Nodes are immutable and stored by hash in a [`NodeStore`]. A tree's shape
//! depends only on what it holds, never on the order of the edits that made
//! it, so two replicas hold the same tree iff their root hashes are equal.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::hash::Hash;

pub mod civil;
pub mod conflict;
pub mod content;
pub mod dir;
pub mod encode;
pub mod entry;
pub mod vv;

pub use entry::{Entry, Kind, Timestamp};
pub use vv::{Causality, VersionVector};

/// Where immutable nodes live, by hash. The vfs implements it over sled;
/// tests use [`MemNodes`].
pub trait NodeStore {
    /// The encoded node stored under `hash`, if any.
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>>;
    /// Stores an encoded node under its hash (a no-op if present).
    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()>;
}

/// A mutable borrow of a store is a store, so a `&mut dyn NodeStore` can be
/// passed to the functions that take `&mut impl NodeStore` (or `&impl`).
impl<S: NodeStore + ?Sized> NodeStore for &mut S {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        (**self).get_node(hash)
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        (**self).put_node(hash, bytes)
    }
}

/// An in-memory [`NodeStore`] that counts the nodes it is given that it did
/// not already hold (so tests can assert how many nodes a change wrote).
#[derive(Clone, Debug, Default)]
pub struct MemNodes {
    nodes: HashMap<Hash, Vec<u8>>,
    writes: u64,
}

impl MemNodes {
    /// An empty store.
    pub fn new() -> MemNodes {
        MemNodes::default()
    }

    /// How many `put_node` calls stored a hash that was not there before.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Whether the node `hash` is stored.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.nodes.contains_key(hash)
    }

    /// How many nodes are stored.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is stored.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl NodeStore for MemNodes {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.nodes.get(hash).cloned())
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(v) = self.nodes.entry(hash) {
            v.insert(bytes);
            self.writes += 1;
        }
        Ok(())
    }
}

/// Fetches the node `hash` of the kind hashed in `domain` and checks that its
/// bytes really hash to it (a missing or damaged node is [`Error::Corrupt`]).
pub(crate) fn load(store: &impl NodeStore, hash: &Hash, domain: &str) -> Result<Vec<u8>> {
    let bytes = store
        .get_node(hash)?
        .ok_or_else(|| Error::corrupt(format!("{domain}: node {hash} is missing")))?;
    if Hash::of_domain(domain, &bytes) != *hash {
        return Err(Error::corrupt(format!(
            "{domain}: node {hash} does not match its hash"
        )));
    }
    Ok(bytes)
}

/// A store that keeps nothing: for builds that only need the root hash.
pub(crate) struct HashOnly;

impl NodeStore for HashOnly {
    fn get_node(&self, _: &Hash) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// The level of a key: how many fanout-sized runs of leading zero bits the
/// hash `h` starts with. A level of at least `k` has probability
/// `2^-(bits*k)`; nodes end after items whose level exceeds their height.
pub(crate) fn level_of(h: &Hash, bits: u32) -> u32 {
    h.prefix_u64().leading_zeros() / bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_nodes_counts_new_hashes_only() {
        let mut s = MemNodes::new();
        assert!(s.is_empty());
        let h = Hash::of(b"x");
        s.put_node(h, b"x".to_vec()).unwrap();
        s.put_node(h, b"x".to_vec()).unwrap();
        assert_eq!((s.writes(), s.len()), (1, 1));
        assert!(s.contains(&h) && !s.contains(&Hash::ZERO));
        assert_eq!(s.get_node(&h).unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.get_node(&Hash::ZERO).unwrap(), None);
    }

    #[test]
    fn a_mutable_borrow_of_a_dyn_store_is_a_store() {
        let mut s = MemNodes::new();
        let mut d: &mut dyn NodeStore = &mut s;
        let root = dir::build(&mut d, &[]).unwrap();
        assert!(dir::entries(&d, root).unwrap().is_empty());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn load_checks_the_hash() {
        let mut s = MemNodes::new();
        let good = Hash::of_domain("d", b"node");
        s.put_node(good, b"node".to_vec()).unwrap();
        assert_eq!(load(&s, &good, "d").unwrap(), b"node");
        assert!(matches!(load(&s, &good, "e"), Err(Error::Corrupt(_))));
        let liar = Hash::of_domain("d", b"other");
        s.put_node(liar, b"node".to_vec()).unwrap();
        assert!(matches!(load(&s, &liar, "d"), Err(Error::Corrupt(_))));
        assert!(matches!(load(&s, &Hash::ZERO, "d"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn levels() {
        assert_eq!(level_of(&Hash([0xff; 32]), 5), 0);
        assert_eq!(level_of(&Hash::ZERO, 5), 12);
        let mut h = [0u8; 32];
        h[0] = 0b0000_0100; // five leading zero bits
        assert_eq!(level_of(&Hash(h), 5), 1);
        assert_eq!(level_of(&Hash(h), 6), 0);
    }
}
