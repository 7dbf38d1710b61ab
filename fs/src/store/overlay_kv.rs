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
//!
//! A full disk (DESIGN.md, "Full disk"): every batch passes the store's
//! free-space gate before it is taken (ENOSPC to the operation, which then
//! changed nothing), and every hand-down passes it again before the
//! engine sees it. If the engine still fails (another process took the
//! last byte between two looks), sled refuses everything until reopened:
//! the overlay then refuses writes (ENOSPC if the disk was full, EIO
//! otherwise; one log line), keeps every write the engine has not made
//! durable (the sets handed down since the last durable flush, and the
//! pending ones), and once the disk has room again reopens the engine in
//! place and replays them, oldest first (each set holds whole values, so
//! replaying one the engine already kept changes nothing). Nothing an
//! operation was told succeeded is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::kv::{merge_scan, pending_range, Batch, BeforeHandingDown, KeyValue, Kv, Space};
use super::space_gate::{engine_need, SpaceGate, ENGINE_AMPLIFICATION};
use crate::error::{Error, Result};

/// How often a failed engine is tried again while the disk has room but
/// the reopen fails (a failing disk must not make every call a reopen).
const REOPEN_EVERY: Duration = Duration::from_secs(1);

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
    /// Bytes of keys and values in `pending` (for the space gate).
    pending_bytes: u64,
    flushing: Option<Arc<Pending>>,
    /// Sets the engine took since its last durable flush, oldest first:
    /// what a reopened engine may have lost, replayed into it.
    unflushed: Vec<Arc<Pending>>,
    /// Why the engine refuses writes until it is reopened.
    broken: Option<Broken>,
}

/// An engine that failed an I/O and refuses everything until reopened.
struct Broken {
    /// The errno the failure had (ENOSPC for a full disk).
    errno: i32,
    /// The last reopen that failed (none tried yet: `None`).
    tried: Option<Instant>,
}

/// Bytes one write hands the engine: its key (with the keyspace byte)
/// and value.
fn op_bytes(_: &Space, key: &[u8], value: &Option<Vec<u8>>) -> u64 {
    (key.len() + 1 + value.as_ref().map_or(0, Vec::len)) as u64
}

/// Whether an engine error means the engine itself failed an I/O (and,
/// being sled, refuses everything from now on), not a bad request.
fn breaks_engine(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::Engine(_))
}

/// The error a write gets while the engine waits to be reopened.
fn refused(errno: i32) -> Error {
    Error::io(
        "the storage engine failed a write and waits for room to reopen",
        std::io::Error::from_raw_os_error(errno),
    )
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
    /// The store's free-space gate, once given.
    gate: OnceLock<Arc<SpaceGate>>,
}

impl<K: Kv> OverlayKv<K> {
    /// An empty overlay over `inner`.
    pub fn new(inner: K) -> OverlayKv<K> {
        OverlayKv {
            inner,
            layers: Mutex::new(Layers::default()),
            before: OnceLock::new(),
            gate: OnceLock::new(),
            draining: Mutex::new(()),
        }
    }

    /// The underlying engine.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// Whether the engine failed and waits to be reopened.
    pub fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    /// Notes that the engine failed with `e`: from now on writes are
    /// refused until [`Self::recover`] reopens it. Logged once.
    fn note_broken(&self, l: &mut Layers, e: &Error) {
        if l.broken.is_some() || !breaks_engine(e) {
            return;
        }
        let errno = match e.errno() {
            libc::ENOSPC => libc::ENOSPC,
            _ => libc::EIO,
        };
        tracing::error!(
            error = %e,
            "the storage engine failed a write: writes are refused until it is reopened \
             (as soon as the disk has room); nothing acknowledged is dropped"
        );
        l.broken = Some(Broken { errno, tried: None });
    }

    /// If the engine failed: reopens it and replays what it had not made
    /// durable, once the disk has room; else the error writes get.
    /// Called with the drain lock held.
    fn recover(&self) -> Result<()> {
        let (errno, tried) = match &self.lock().broken {
            None => return Ok(()),
            Some(b) => (b.errno, b.tried),
        };
        let (replay, bytes) = {
            let l = self.lock();
            let sets: Vec<Arc<Pending>> = l.unflushed.clone();
            let bytes: u64 = sets
                .iter()
                .flat_map(|s| s.iter())
                .map(|((sp, k), v)| op_bytes(sp, k, v))
                .sum();
            (sets, bytes)
        };
        if let Some(gate) = self.gate.get() {
            if !gate.has_room_now(engine_need(bytes))? {
                return Err(refused(errno));
            }
        }
        if tried.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return Err(refused(errno));
        }
        let batches: Vec<Batch> = replay
            .iter()
            .map(|set| Batch {
                ops: set
                    .iter()
                    .map(|((s, k), v)| (*s, k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        let sets = batches.len();
        match self.inner.reopen(batches) {
            Ok(()) => {
                let mut l = self.lock();
                l.broken = None;
                // The replay was flushed: those sets are durable now.
                l.unflushed.clear();
                tracing::info!(
                    replayed = sets,
                    "reopened the storage engine after its failure: writes are accepted again"
                );
                Ok(())
            }
            Err(e) => {
                let mut l = self.lock();
                if let Some(b) = l.broken.as_mut() {
                    if b.tried.is_none() {
                        tracing::error!(error = %e, "reopening the storage engine failed: tried again each second");
                    }
                    b.tried = Some(Instant::now());
                }
                Err(refused(errno))
            }
        }
    }

    /// The engine's errno while it waits to be reopened, trying that
    /// first (takes the drain lock).
    fn ready(&self) -> Result<()> {
        if self.lock().broken.is_none() {
            return Ok(());
        }
        let _one = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        self.recover()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every pending write to the engine as one atomic batch. Readers
    /// and writers go on meanwhile: the set stays readable until the
    /// engine has it, and new writes gather above it.
    fn drain(&self) -> Result<()> {
        let _one = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        self.drain_locked()
    }

    /// [`Self::drain`] with the drain lock held.
    fn drain_locked(&self) -> Result<()> {
        self.recover()?;
        let bytes = {
            let l = self.lock();
            if l.pending.is_empty() {
                return Ok(());
            }
            l.pending_bytes
        };
        // Work already acknowledged: it may use the reserve.
        if let Some(gate) = self.gate.get() {
            gate.admit_engine(engine_need(bytes))?;
        }
        let set = {
            let mut l = self.lock();
            let set = Arc::new(std::mem::take(&mut l.pending));
            l.pending_bytes = 0;
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
        .and_then(|()| {
            let r = self.inner.apply(batch);
            if let Err(e) = &r {
                self.note_broken(&mut self.lock(), e);
            }
            r
        });
        let mut l = self.lock();
        l.flushing = None;
        match &res {
            Ok(()) => l.unflushed.push(set),
            Err(_) => {
                // Keep the writes: put them back under anything newer.
                for (k, v) in set.iter() {
                    if !l.pending.contains_key(k) {
                        l.pending_bytes += op_bytes(&k.0, &k.1, v);
                        l.pending.insert(k.clone(), v.clone());
                    }
                }
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
        self.ready()?;
        let bytes: u64 = batch.ops.iter().map(|(s, k, v)| op_bytes(s, k, v)).sum();
        if let Some(gate) = self.gate.get() {
            // What the engine will write for it, without the slack of a
            // hand-down (counted when the hand-down comes).
            gate.admit(bytes.saturating_mul(ENGINE_AMPLIFICATION))?;
        }
        // Gathered writes that an earlier hand-down could not pass on:
        // pass them on before taking more, or refuse this batch (it then
        // changed nothing), so memory stays bounded on a full disk.
        if self.lock().pending.len() >= FLUSH_KEYS {
            self.drain()?;
        }
        let mut l = self.lock();
        for (space, key, value) in batch.ops {
            let b = op_bytes(&space, &key, &value);
            let k = (space, key);
            if let Some(old) = l.pending.get(&k) {
                let was = op_bytes(&k.0, &k.1, old);
                l.pending_bytes = l.pending_bytes.saturating_sub(was);
            }
            l.pending.insert(k, value);
            l.pending_bytes += b;
        }
        let full = l.pending.len() >= FLUSH_KEYS;
        drop(l);
        if full {
            // This batch is taken whatever the hand-down does: a failure
            // keeps it pending (the next apply retries, or is refused).
            if let Err(e) = self.drain() {
                tracing::warn!(error = %e, "handing gathered writes to the engine failed: kept");
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let _one = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        self.drain_locked()?;
        match self.inner.flush() {
            Ok(()) => {
                self.lock().unflushed.clear();
                Ok(())
            }
            Err(e) => {
                self.note_broken(&mut self.lock(), &e);
                Err(e)
            }
        }
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }

    fn before_handing_down(&self, hook: BeforeHandingDown) {
        let _ = self.before.set(hook);
    }

    fn guard_with(&self, gate: Arc<SpaceGate>) {
        let _ = self.gate.set(gate);
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

#[cfg(test)]
mod tests;
