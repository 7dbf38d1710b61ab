//! Collecting history: drop the roots a retention policy does not keep,
//! delete the nodes and chunks nothing reaches, rewrite packs that are
//! mostly dead.
//!
//! What counts as reachable: every kept root of the log (and every root
//! committed while the collection runs), every inode record of the live
//! namespace (orphans included), and every open file's extents. The
//! expensive walk of the kept roots runs without the vfs lock; the final
//! mark of what changed meanwhile and the deletes run under it, so no
//! operation can start to use a node or chunk between its last mark and
//! its delete. Only nodes and chunks that existed before the walk are
//! candidates: anything written later is left for the next collection.
//!
//! A peer's pull stores nodes and chunks without the lock and may have
//! decided "we have this" before a collection deleted it; it catches that
//! at its merge ([`Vfs::gc_generation`] changed: it checks that what it
//! installs is whole).
//!
//! Packs: after the deletes are applied, a closed pack whose live bytes
//! have fallen under half its size has its live chunks (and the records
//! of the tree nodes and commits the engine still holds) copied to the
//! newest pack; the index moves to the copies under the lock (open files
//! forget the locations they cached), the store is made durable, and only
//! then is the old pack file deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use super::commit::{all_commits, commits_after, ReadNodes};
use super::records::{kind_to_u8, InodeRecord};
use super::{History, Vfs};
use crate::error::{Error, Result};
use crate::gc::{self, Dated, Marks, Policy, Report};
use crate::hash::Hash;
use crate::store::kv::for_each;
use crate::store::mirror;
use crate::store::packs::RECORD_HEADER;
use crate::store::{codec, Batch, Location, Space, Store, Txn};
use crate::tree::{content, dir, Kind, MemNodes};

/// The active pack is closed for a rewrite only from this size on (a
/// collection of a small store should not leave a trail of tiny packs).
const SEAL_AT_LEAST: u64 = 8 << 20;

/// A pack is rewritten when its live bytes are under half its size.
fn mostly_dead(used: u64, size: u64) -> bool {
    used < size / 2
}

fn hash_key(k: &[u8]) -> Result<Hash> {
    Ok(Hash(k.try_into().map_err(|_| {
        Error::corrupt("a hash key of the wrong length")
    })?))
}

impl History<'_> {
    /// Runs one collection with `policy` (see the module documentation).
    /// Collections are serialised; operations go on meanwhile, waiting
    /// only for the final mark and the deletes.
    pub fn gc(&self, policy: &Policy) -> Result<Report> {
        let _one = self
            .state()
            .gc
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let store = self.vfs.store();
        let kv = store.kv();
        let now = self.vfs.now();
        let mut report = Report {
            store_before: store.size_on_disk()?,
            ..Report::default()
        };

        // 1. Without the lock: the policy, the kept roots' marks, and the
        // candidates (everything stored now that they do not reach).
        let log = all_commits(kv)?;
        let last_seq = log.last().map_or(0, |c| c.seq);
        let dated: Vec<Dated> = log
            .iter()
            .map(|c| Dated {
                seq: c.seq,
                secs: c.time.0,
            })
            .collect();
        let kept = gc::select(&dated, now.secs, policy);
        report.roots_before = log.len() as u64;
        report.roots_kept = kept.len() as u64;
        let mut marks = Marks::default();
        {
            // The empty directory and the empty file are always kept:
            // every new directory and file starts as one of them, and
            // the log (`history::log`) diffs the oldest root against the
            // empty tree.
            let mut empty = MemNodes::new();
            marks.nodes.insert(dir::empty(&mut empty)?);
            marks.nodes.insert(content::build(&mut empty, &[])?.0);
            let txn = Txn::new(kv);
            for c in log.iter().filter(|c| kept.contains(&c.seq)) {
                marks.dir_tree(&ReadNodes(&txn), Hash(c.root))?;
            }
        }
        let mut dead_nodes = Vec::new();
        for_each(kv, Space::Nodes, &[], None, |k, _| {
            let h = hash_key(k)?;
            if !marks.nodes.contains(&h) {
                dead_nodes.push(h);
            }
            Ok(())
        })?;
        let mut dead_chunks = Vec::new();
        for_each(kv, Space::Chunks, &[], None, |k, v| {
            let h = hash_key(k)?;
            if !marks.chunks.contains(&h) {
                dead_chunks.push((h, Location::decode(v)?));
            }
            Ok(())
        })?;
        // Chunks recorded missing that nothing reaches any more.
        let mut dead_missing = Vec::new();
        for_each(kv, Space::Missing, &[], None, |k, _| {
            let h = hash_key(k)?;
            if !marks.chunks.contains(&h) {
                dead_missing.push(h);
            }
            Ok(())
        })?;

        // 2. Under the lock: mark what changed since, then delete.
        {
            let inner = self.vfs.lock();
            let txn = Txn::new(kv);
            let nodes = ReadNodes(&txn);
            for c in commits_after(kv, last_seq)? {
                marks.dir_tree(&nodes, Hash(c.root))?;
            }
            let mut records = Vec::new();
            for_each(kv, Space::Inodes, &[], None, |_, v| {
                records.push(codec::decode::<InodeRecord>(v, "inode")?);
                Ok(())
            })?;
            let (file, dir) = (kind_to_u8(Kind::File), kind_to_u8(Kind::Dir));
            for rec in &records {
                if rec.kind == file {
                    marks.content(&nodes, rec.hash())?;
                } else if rec.kind == dir {
                    marks.dir_tree(&nodes, rec.hash())?;
                }
            }
            for (_, of) in inner.files.iter() {
                marks.extents(&of.data.extents());
            }
            for hash in inner.files.displaced_hashes() {
                marks.content(&nodes, hash)?;
            }
            self.state().gc.pinned(&mut marks);
            let mut b = Batch::default();
            for h in dead_nodes.iter().filter(|h| !marks.nodes.contains(h)) {
                b.remove(Space::Nodes, h.as_bytes().to_vec());
                report.nodes_freed += 1;
            }
            for (h, loc) in dead_chunks
                .iter()
                .filter(|(h, _)| !marks.chunks.contains(h))
            {
                b.remove(Space::Chunks, h.as_bytes().to_vec());
                report.chunks_freed += 1;
                report.chunk_bytes_freed += u64::from(loc.len);
            }
            for h in dead_missing.iter().filter(|h| !marks.chunks.contains(h)) {
                b.remove(Space::Missing, h.as_bytes().to_vec());
            }
            for c in log.iter().filter(|c| !kept.contains(&c.seq)) {
                b.remove(Space::Commits, c.seq.to_be_bytes().to_vec());
            }
            if !b.is_empty() {
                kv.apply(b)?;
                self.state().gc.generation.fetch_add(1, Ordering::SeqCst);
            }
        }

        // 3. Packs, then make it all durable before any pack goes.
        let victims = self.rewrite_packs(&store)?;
        store.flush_durable()?;
        for id in &victims {
            store.packs().remove(*id)?;
        }
        report.packs_rewritten = victims.len() as u64;
        report.store_after = store.size_on_disk()?;
        tracing::info!(
            roots_kept = report.roots_kept,
            roots_dropped = report.roots_before - report.roots_kept,
            nodes = report.nodes_freed,
            chunks = report.chunks_freed,
            bytes = report.chunk_bytes_freed,
            packs = report.packs_rewritten,
            "history collected"
        );
        Ok(report)
    }

    /// Copies the live chunks of every pack that is mostly dead to the
    /// newest pack and moves the index to the copies. The active pack is
    /// closed first when it is itself mostly dead (and big enough to be
    /// worth it). Returns the packs that no index entry names any more (to
    /// delete once durable).
    fn rewrite_packs(&self, store: &Store) -> Result<Vec<u32>> {
        let kv = store.kv();
        let packs = store.packs();
        let (head, head_len) = packs.head();
        let mut head_used = 0u64;
        for_each(kv, Space::Chunks, &[], None, |_, v| {
            let loc = Location::decode(v)?;
            if loc.pack == head {
                head_used += RECORD_HEADER + u64::from(loc.len);
            }
            Ok(())
        })?;
        let seal = head_len >= SEAL_AT_LEAST && mostly_dead(head_used, head_len);
        let closed = {
            let _inner = self.vfs.lock();
            store.pack_barrier(seal)?
        };
        // Every pack before `closed` is fully indexed and never written
        // again: their live chunks are exactly what the index names.
        let mut live: BTreeMap<u32, Vec<(Hash, Location)>> = BTreeMap::new();
        for_each(kv, Space::Chunks, &[], None, |k, v| {
            let loc = Location::decode(v)?;
            if loc.pack < closed {
                live.entry(loc.pack).or_default().push((hash_key(k)?, loc));
            }
            Ok(())
        })?;
        let mut victims = Vec::new();
        let mut moves = Vec::new();
        for id in 1..closed {
            let size = packs.pack_len(id)?;
            if size == 0 {
                continue;
            }
            let chunks = live.remove(&id).unwrap_or_default();
            let mut used: u64 = chunks
                .iter()
                .map(|(_, l)| RECORD_HEADER + u64::from(l.len))
                .sum();
            if !mostly_dead(used, size) {
                continue;
            }
            // The tree nodes and commits the engine still holds are live
            // too: their records are what a rebuild reads.
            let records = mirror::live_records(store, id)?;
            used += records
                .iter()
                .map(|(_, _, b)| RECORD_HEADER + b.len() as u64)
                .sum::<u64>();
            if !mostly_dead(used, size) {
                continue;
            }
            for (kind, h, bytes) in &records {
                packs.append_record(*kind, h, bytes)?;
            }
            for (h, old) in chunks {
                let mut bytes = vec![0u8; old.len as usize];
                match store.read_chunk_range(&h, Some(old), 0, &mut bytes) {
                    Ok(()) => {}
                    // Quarantined: its bytes are as dead as a deleted chunk's.
                    Err(Error::BadChunk(_)) => continue,
                    Err(e) => return Err(e),
                }
                let new = packs.append(&h, &bytes)?;
                moves.push((h, old, new));
            }
            victims.push(id);
        }
        if moves.is_empty() {
            return Ok(victims);
        }
        let mut inner = self.vfs.lock();
        let mut b = Batch::default();
        for (h, old, new) in &moves {
            // Only a collection deletes or moves index entries, and this
            // is the only one running: the entry still names the old copy.
            match store.chunk_location(h)? {
                Some(cur) if cur == *old => {
                    b.put(Space::Chunks, h.as_bytes().to_vec(), new.encode().to_vec());
                }
                // Quarantined meanwhile (a reader found the old copy bad).
                None => {}
                _ => {
                    return Err(Error::corrupt(format!(
                        "chunk {h} moved during a collection"
                    )))
                }
            }
        }
        kv.apply(b)?;
        for of in inner.files.values_mut() {
            of.data.forget_locations();
        }
        drop(inner);
        Ok(victims)
    }
}

impl Vfs {
    /// Bumped by every collection that deleted something: a pull that
    /// began before a change of this number checks what it installs.
    pub fn gc_generation(&self) -> u64 {
        self.history.gc.generation.load(Ordering::SeqCst)
    }

    /// A new, empty set of pins for a transfer (see [`Pins`]).
    pub fn pins(&self) -> Pins {
        let pins = Pins::default();
        let mut all = self
            .history
            .gc
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&pins.0));
        pins
    }
}

/// Hashes (of nodes or chunks) that an in-flight transfer relies on: it
/// found them held and skipped fetching them, or stored them and has not
/// yet made them reachable from a root. Collections keep them. Pin a hash
/// *before* checking that it is held.
#[derive(Clone, Debug, Default)]
pub struct Pins(Arc<Mutex<HashSet<Hash>>>);

impl Pins {
    /// Keeps `hash` from collections until [`Pins::clear`].
    pub fn add(&self, hash: Hash) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash);
    }

    /// Drops every pin (the transfer's items are reachable, or abandoned).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The state collections share.
#[derive(Debug, Default)]
pub(super) struct GcState {
    /// Held by the running collection.
    running: Mutex<()>,
    generation: std::sync::atomic::AtomicU64,
    /// Every transfer's pins (dropped ones are pruned as new ones come).
    pins: Mutex<Vec<Weak<Mutex<HashSet<Hash>>>>>,
}

impl GcState {
    /// Marks every pinned hash (as a node and as a chunk: a hash names one
    /// or the other).
    fn pinned(&self, marks: &mut Marks) {
        let all = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for set in all.iter().filter_map(Weak::upgrade) {
            let set = set.lock().unwrap_or_else(|p| p.into_inner());
            marks.nodes.extend(set.iter().copied());
            marks.chunks.extend(set.iter().copied());
        }
    }
}
