//! Whether every tree node and commit the database holds is backed by a
//! good record in the packs (format 4: the packs are what a rebuild
//! reads). A node or commit whose record is damaged or missing is
//! reported; `repair` writes its record again from the database's copy
//! (checked against its hash first: a damaged copy is never written).

use std::collections::HashSet;

use super::Report;
use crate::error::Result;
use crate::hash::Hash;
use crate::store::kv::for_each;
use crate::store::packs::{commit_record, Record, RecordKind};
use crate::store::{mirror, Space, Store};

/// What the database held when the check began (after a flush, so every
/// record of it is in the packs the check then reads).
#[derive(Default)]
pub(super) struct Expected {
    nodes: Vec<Hash>,
    commits: Vec<Vec<u8>>,
}

/// What the packs back, noted while they are read.
#[derive(Default)]
pub(super) struct Backed {
    nodes: HashSet<Hash>,
    commits: HashSet<Vec<u8>>,
}

impl Backed {
    /// Notes a record read from a pack with its bytes.
    pub(super) fn note(&mut self, rec: &Record, bytes: &[u8]) {
        if !rec.good {
            return;
        }
        match rec.kind {
            RecordKind::Chunk => {}
            RecordKind::Node => {
                self.nodes.insert(rec.hash);
            }
            RecordKind::Commit => {
                if let Some((_, commit)) = commit_record::decode(bytes) {
                    self.commits.insert(commit.to_vec());
                }
            }
        }
    }
}

/// Flushes the database (so the records of everything it holds are in
/// the packs) and lists its nodes and commits.
pub(super) fn expected(store: &Store) -> Result<Expected> {
    store.flush_durable()?;
    let mut e = Expected::default();
    for_each(store.kv(), Space::Nodes, &[], None, |k, _| {
        if let Ok(h) = <[u8; 32]>::try_from(k) {
            e.nodes.push(Hash(h));
        }
        Ok(())
    })?;
    for_each(store.kv(), Space::Commits, &[], None, |_, v| {
        e.commits.push(v.to_vec());
        Ok(())
    })?;
    Ok(e)
}

/// Reports (and with `repair` writes again) the nodes and commits of
/// `expected` that `backed` lacks and the database still holds.
pub(super) fn check(
    store: &Store,
    expected: Expected,
    backed: &Backed,
    repair: bool,
    r: &mut Report,
) -> Result<()> {
    let kv = store.kv();
    let mut wrote = false;
    for h in expected.nodes {
        if backed.nodes.contains(&h) {
            continue;
        }
        // Collected meanwhile: nothing to back.
        let Some(bytes) = kv.get(Space::Nodes, h.as_bytes())? else {
            continue;
        };
        r.unbacked.push(format!("node {}", h.to_hex()));
        if repair && RecordKind::Node.verify(&h, &bytes) {
            store.packs().append_record(RecordKind::Node, &h, &bytes)?;
            r.repaired.backed.push(format!("node {}", h.to_hex()));
            wrote = true;
        }
    }
    let clock = mirror::clock_of(kv)?;
    for c in expected.commits {
        if backed.commits.contains(&c) {
            continue;
        }
        let id = Hash::of(&c).to_hex();
        r.unbacked.push(format!("commit record {id}"));
        if repair {
            mirror::write_commit(store.packs(), clock, &c)?;
            r.repaired.backed.push(format!("commit record {id}"));
            wrote = true;
        }
    }
    if wrote {
        store.packs().sync()?;
    }
    Ok(())
}
