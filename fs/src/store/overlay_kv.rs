//! Group commit: a [`Kv`] that collects applied batches in memory and
//! hands them to the engine underneath as one batch, at the durable flush
//! or when enough have gathered.
//!
//! Why: every vfs operation is one atomic batch, and most of its keys are
//! rewritten by the next few operations (the parent directory's record,
//! the inode counter, dirty marks that the next commit removes). Applying
//! each batch to sled costs a tree walk per key; collecting them first
//! means each key reaches sled once per flush.
//!
//! Consistency: reads see pending writes first, so the overlay is
//! indistinguishable from the engine while the process lives. The pending
//! writes reach the engine as ONE batch, so after a crash the store is as
//! of some operation boundary, never between (unsynced operations may be
//! lost, as the contract allows; fsync flushes).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::kv::{Batch, KeyValue, Kv, Space};
use crate::error::Result;

/// Pending writes past which an apply hands them to the engine, bounding
/// memory and the work a crash can lose.
const FLUSH_KEYS: usize = 16 * 1024;

type Pending = BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>;

/// A write-back layer over another engine.
pub struct OverlayKv<K: Kv> {
    inner: K,
    pending: Mutex<Pending>,
}

impl<K: Kv> OverlayKv<K> {
    /// An empty overlay over `inner`.
    pub fn new(inner: K) -> OverlayKv<K> {
        OverlayKv {
            inner,
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every pending write to the engine as one atomic batch.
    fn drain(&self, pending: &mut Pending) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            ops: pending
                .iter()
                .map(|((s, k), v)| (*s, k.clone(), v.clone()))
                .collect(),
        };
        // Keep the writes visible until the engine has them.
        self.inner.apply(batch)?;
        pending.clear();
        Ok(())
    }
}

impl<K: Kv> Kv for OverlayKv<K> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.lock().get(&(space, key.to_vec())) {
            return Ok(v.clone());
        }
        self.inner.get(space, key)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let pending = self.lock();
        let mine: Vec<(Vec<u8>, Option<Vec<u8>>)> = pending
            .range((space, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_slice() > a))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        let removed = mine.iter().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .inner
            .scan(space, prefix, after, limit.saturating_add(removed))?
            .into_iter()
            .collect();
        drop(pending);
        for (k, v) in mine {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>> {
        // Rare (tools only): flush first rather than merge in reverse.
        self.drain(&mut self.lock())?;
        self.inner.last(space, prefix)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut pending = self.lock();
        for (space, key, value) in batch.ops {
            pending.insert((space, key), value);
        }
        if pending.len() >= FLUSH_KEYS {
            self.drain(&mut pending)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.drain(&mut self.lock())?;
        self.inner.flush()
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }
}

impl<K: Kv> Drop for OverlayKv<K> {
    /// A clean close hands pending writes to the engine (which persists
    /// them when it closes); only a crash loses them.
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut *self.lock());
        if let Err(e) = self.drain(&mut pending) {
            tracing::error!(error = %e, "writing pending metadata at close failed");
        }
    }
}
