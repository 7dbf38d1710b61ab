//! A read-your-writes view over a [`Kv`]: one vfs operation reads and
//! writes through a `Txn`, then applies it as one atomic batch.
//!
//! Single writer: the vfs holds its lock from the first read to the apply,
//! so no other writer can interleave and no conflict detection is needed.

use std::collections::BTreeMap;

use super::kv::{merge_scan, pending_range, Batch, KeyValue, Kv, Space};
use crate::error::Result;

/// Pending writes over a [`Kv`], visible to this transaction's reads.
pub struct Txn<'a> {
    kv: &'a dyn Kv,
    writes: BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    /// A transaction with no writes yet.
    pub fn new(kv: &'a dyn Kv) -> Txn<'a> {
        Txn {
            kv,
            writes: BTreeMap::new(),
        }
    }

    /// The engine underneath.
    pub fn kv(&self) -> &'a dyn Kv {
        self.kv
    }

    /// The value under `key`, this transaction's writes included.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(&(space, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(space, key),
        }
    }

    /// Puts a value.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert((space, key.into()), Some(value.into()));
    }

    /// Removes a key.
    pub fn remove(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.writes.insert((space, key.into()), None);
    }

    /// Like [`Kv::scan`], this transaction's writes included.
    pub fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let pending: Vec<_> = pending_range(&self.writes, space, prefix, after).collect();
        let removed = pending.iter().filter(|(_, v)| v.is_none()).count();
        let below = self
            .kv
            .scan(space, prefix, after, limit.saturating_add(removed))?;
        Ok(merge_scan(
            below,
            pending.into_iter().map(|(k, v)| (k.clone(), v.clone())),
            limit,
        ))
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, as one batch.
    pub fn into_batch(self) -> Batch {
        Batch {
            ops: self
                .writes
                .into_iter()
                .map(|((s, k), v)| (s, k, v))
                .collect(),
        }
    }

    /// Applies the writes atomically.
    pub fn commit(self) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let kv = self.kv;
        kv.apply(self.into_batch())
    }
}
