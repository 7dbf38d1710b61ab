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
use std::sync::{Arc, Mutex, OnceLock};

use super::kv::{merge_scan, pending_range, Batch, BeforeHandingDown, KeyValue, Kv, Space};
use crate::error::Result;

/// Pending writes past which an apply hands them to the engine itself,
/// bounding memory when nothing flushes (the node's committer flushes after
/// every commit, so this is rarely reached).
const FLUSH_KEYS: usize = 64 * 1024;

type Pending = BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>;

/// The writes not yet in the engine: the newest on top, and the set being
/// handed to the engine right now (readable until the engine has it, so a
/// drain never blocks readers for the length of a sled batch).
#[derive(Default)]
struct Layers {
    pending: Pending,
    flushing: Option<Arc<Pending>>,
}

impl Layers {
    fn get(&self, key: &(Space, Vec<u8>)) -> Option<&Option<Vec<u8>>> {
        self.pending
            .get(key)
            .or_else(|| self.flushing.as_ref().and_then(|f| f.get(key)))
    }
}

/// A write-back layer over another engine.
pub struct OverlayKv<K: Kv> {
    inner: K,
    layers: Mutex<Layers>,
    /// One drain at a time, so drains reach the engine in order.
    draining: Mutex<()>,
    /// Runs between taking a drain's writes and handing them down.
    before: OnceLock<BeforeHandingDown>,
}

impl<K: Kv> OverlayKv<K> {
    /// An empty overlay over `inner`.
    pub fn new(inner: K) -> OverlayKv<K> {
        OverlayKv {
            inner,
            layers: Mutex::new(Layers::default()),
            before: OnceLock::new(),
            draining: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every pending write to the engine as one atomic batch. Readers
    /// and writers go on meanwhile: the set stays readable until the
    /// engine has it, and new writes gather above it.
    fn drain(&self) -> Result<()> {
        let _one = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let set = {
            let mut l = self.lock();
            if l.pending.is_empty() {
                return Ok(());
            }
            let set = Arc::new(std::mem::take(&mut l.pending));
            l.flushing = Some(set.clone());
            set
        };
        let batch = Batch {
            ops: set
                .iter()
                .map(|((s, k), v)| (*s, k.clone(), v.clone()))
                .collect(),
        };
        let res = match self.before.get() {
            Some(hook) => hook(&batch),
            None => Ok(()),
        }
        .and_then(|()| self.inner.apply(batch));
        let mut l = self.lock();
        l.flushing = None;
        if res.is_err() {
            // Keep the writes: put them back under anything newer.
            for (k, v) in set.iter() {
                l.pending.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        res
    }
}

impl<K: Kv> Kv for OverlayKv<K> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.lock().get(&(space, key.to_vec())) {
            return Ok(v.clone());
        }
        // Not pending: a drain that took it has already applied it.
        self.inner.get(space, key)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let mine: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let l = self.lock();
            let mut m: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            if let Some(f) = &l.flushing {
                m.extend(
                    pending_range(f, space, prefix, after).map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            m.extend(
                pending_range(&l.pending, space, prefix, after)
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            m.into_iter().collect()
        };
        let removed = mine.iter().filter(|(_, v)| v.is_none()).count();
        let below = self
            .inner
            .scan(space, prefix, after, limit.saturating_add(removed))?;
        Ok(merge_scan(below, mine, limit))
    }

    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>> {
        // Rare (tools only): drain first rather than merge in reverse.
        self.drain()?;
        self.inner.last(space, prefix)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let full = {
            let mut l = self.lock();
            for (space, key, value) in batch.ops {
                l.pending.insert((space, key), value);
            }
            l.pending.len() >= FLUSH_KEYS
        };
        if full {
            self.drain()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.drain()?;
        self.inner.flush()
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }

    fn before_handing_down(&self, hook: BeforeHandingDown) {
        let _ = self.before.set(hook);
    }
}

impl<K: Kv> Drop for OverlayKv<K> {
    /// A clean close hands pending writes to the engine (which persists
    /// them when it closes); only a crash loses them.
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            tracing::error!(error = %e, "writing pending metadata at close failed");
        }
    }
}
