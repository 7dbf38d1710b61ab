//! The trust list: the node ids this node talks to.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use backer_fs::identity::NodeId;

/// The set of node ids whose keys may pass the TLS handshake, shared by an
/// [`Endpoint`](super::Endpoint)'s verifiers and whoever edits it (`peer
/// add`, `peer remove`).
///
/// Clones share one set. Every handshake reads the set as it is at that
/// moment, so a change takes effect for the next connection without a
/// restart; connections already up are not touched (close them to cut a
/// removed peer off).
#[derive(Clone, Default)]
pub struct Trust(Arc<RwLock<HashSet<NodeId>>>);

impl Trust {
    /// An empty list: nobody is trusted.
    pub fn new() -> Trust {
        Trust::default()
    }

    /// Trusts `id`. Returns whether it was new.
    pub fn add(&self, id: NodeId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    /// Stops trusting `id`. Returns whether it was trusted.
    pub fn remove(&self, id: &NodeId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// Whether `id` is trusted.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// The trusted ids, sorted.
    pub fn ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        ids.sort();
        ids
    }
}

impl FromIterator<NodeId> for Trust {
    fn from_iter<I: IntoIterator<Item = NodeId>>(ids: I) -> Trust {
        Trust(Arc::new(RwLock::new(ids.into_iter().collect())))
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.ids().iter().map(NodeId::short))
            .finish()
    }
}
