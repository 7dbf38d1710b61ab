//! The engine's tree nodes and commits, written to the packs as well
//! (DESIGN.md: "The store's own files are the truth; sled is an index").
//!
//! The engine keeps its copies: reads of nodes and of the log stay there
//! (the fast path). The packs hold the copies a rebuild reads when the
//! engine is lost (`check/rebuild.rs`). Order on disk: the records are
//! appended and fsynced before the engine is handed the writes that hold
//! them ([`write_batch`] runs in the store's `before_handing_down` hook),
//! the same rule as for chunks and their index entries, so whatever the
//! engine ever made durable, the packs hold too.

use super::kv::{for_each, Batch, Kv, Space};
use super::packs::{commit_record, Packs, RecordKind};
use crate::error::{Error, Result};
use crate::hash::Hash;

/// The engine key of the node's edit clock (in [`Space::Meta`]).
pub(crate) const META_CLOCK: &[u8] = b"clock";

fn hash_key(k: &[u8]) -> Result<Hash> {
    Ok(Hash(k.try_into().map_err(|_| {
        Error::corrupt("a node key of the wrong length")
    })?))
}

/// Appends a record for every tree node and commit that `batch` puts
/// (not synced: the caller syncs before handing the batch down). A
/// commit record carries the edit clock the batch sets, or `clock`.
pub(crate) fn write_batch(packs: &Packs, batch: &Batch, clock: u64) -> Result<()> {
    let clock = batch
        .ops
        .iter()
        .rev()
        .find(|(s, k, _)| *s == Space::Meta && k.as_slice() == META_CLOCK)
        .and_then(|(_, _, v)| v.as_deref())
        .and_then(|v| v.try_into().ok())
        .map_or(clock, u64::from_be_bytes);
    for (space, k, v) in &batch.ops {
        match (space, v) {
            (Space::Nodes, Some(bytes)) => {
                packs.append_record(RecordKind::Node, &hash_key(k)?, bytes)?;
            }
            (Space::Commits, Some(bytes)) => write_commit(packs, clock, bytes)?,
            _ => {}
        }
    }
    Ok(())
}

/// Appends the record of one commit (its engine encoding) made at `clock`.
pub(crate) fn write_commit(packs: &Packs, clock: u64, commit: &[u8]) -> Result<()> {
    let rec = commit_record::encode(clock, commit);
    packs.append_record(RecordKind::Commit, &Hash::of(&rec), &rec)?;
    Ok(())
}

/// The edit clock the engine holds (0 when none).
pub(crate) fn clock_of(kv: &dyn Kv) -> Result<u64> {
    Ok(kv
        .get(Space::Meta, META_CLOCK)?
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// Appends a record for every tree node and commit the engine holds, and
/// syncs: the upgrade of a store made before format 4, whose packs held
/// chunks only. Returns how many records it wrote.
pub(crate) fn write_all(packs: &Packs, kv: &dyn Kv) -> Result<u64> {
    let clock = clock_of(kv)?;
    let mut n = 0u64;
    for_each(kv, Space::Nodes, &[], None, |k, v| {
        packs.append_record(RecordKind::Node, &hash_key(k)?, v)?;
        n += 1;
        Ok(())
    })?;
    for_each(kv, Space::Commits, &[], None, |_, v| {
        write_commit(packs, clock, v)?;
        n += 1;
        Ok(())
    })?;
    packs.sync()?;
    Ok(n)
}

/// Whether the record `(kind, hash, bytes)` backs something the engine
/// still holds: a node it has, or a commit whose entry in the log is this
/// very commit (a record of a commit that a crash kept from the engine,
/// whose number a later commit took, backs nothing).
pub(crate) fn is_live(kv: &dyn Kv, kind: RecordKind, hash: &Hash, bytes: &[u8]) -> Result<bool> {
    match kind {
        RecordKind::Chunk => Ok(false),
        RecordKind::Node => Ok(kv.get(Space::Nodes, hash.as_bytes())?.is_some()),
        RecordKind::Commit => {
            let Some((_, commit)) = commit_record::decode(bytes) else {
                return Ok(false);
            };
            let Ok(c) = super::codec::decode::<crate::vfs::Commit>(commit, "commit") else {
                return Ok(false);
            };
            Ok(kv.get(Space::Commits, &c.seq.to_be_bytes())?.as_deref() == Some(commit))
        }
    }
}

/// The records of pack `id` that back something the engine holds
/// ([`is_live`]): what a collection copies before it removes the pack.
/// Damaged records are left out (the engine's copy is checked and
/// written again by `backer check --repair`).
pub(crate) fn live_records(
    store: &super::Store,
    id: u32,
) -> Result<Vec<(RecordKind, Hash, Vec<u8>)>> {
    let mut found = Vec::new();
    store.packs().scan_bytes(
        id,
        u64::MAX,
        |r, bytes| {
            if r.good && r.kind != RecordKind::Chunk {
                found.push((r.kind, r.hash, bytes.to_vec()));
            }
        },
        |_| {},
    )?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (kind, hash, bytes) in found {
        if seen.insert((kind, hash)) && is_live(store.kv(), kind, &hash, &bytes)? {
            out.push((kind, hash, bytes));
        }
    }
    Ok(out)
}
