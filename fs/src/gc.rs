//! Garbage collection of history: which roots a retention [`Policy`] keeps
//! ([`select`], pure), and what those roots reach ([`Marks`]).
//!
//! The collection itself needs the live namespace and open files, so it is
//! run by the vfs ([`crate::vfs::History::gc`]); this module has no I/O beyond
//! reading nodes through a [`NodeStore`].

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::tree::content::{self, ContentNode, Extent};
use crate::tree::dir::{self, DirNode};
use crate::tree::{Kind, NodeStore};

/// Which roots of the commit log to keep. The newest root is always kept.
///
/// A root is kept when any rule keeps it: it is younger than `all`; or it
/// is the newest root of its UTC hour and younger than `hourly`; or the
/// newest of its UTC day and younger than `daily`; or one of the
/// `keep_last` newest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Keep every root this recent.
    pub all: Duration,
    /// Keep one root per hour this far back.
    pub hourly: Duration,
    /// Keep one root per day this far back.
    pub daily: Duration,
    /// Also keep this many of the newest roots, however old.
    pub keep_last: usize,
}

impl Default for Policy {
    /// Every root for 24 hours, one per hour for 7 days, one per day for
    /// 90 days, and the latest always.
    fn default() -> Self {
        Policy {
            all: Duration::from_secs(24 * 3600),
            hourly: Duration::from_secs(7 * 24 * 3600),
            daily: Duration::from_secs(90 * 24 * 3600),
            keep_last: 1,
        }
    }
}

/// One root of the log, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dated {
    /// Its position in the log (larger is newer).
    pub seq: u64,
    /// Its time, in seconds since the epoch.
    pub secs: i64,
}

fn younger(now: i64, secs: i64, window: Duration) -> bool {
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(secs) < window
}

/// The roots of `log` that `policy` keeps at time `now` (seconds since the
/// epoch), by sequence number. `log` may be in any order. A root dated in
/// the future (a clock that jumped back) counts as new.
pub fn select(log: &[Dated], now: i64, policy: &Policy) -> BTreeSet<u64> {
    let mut newest_first = log.to_vec();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.seq));
    let mut keep = BTreeSet::new();
    let mut hours = HashSet::new();
    let mut days = HashSet::new();
    for (i, c) in newest_first.iter().enumerate() {
        let hour = c.secs.div_euclid(3600);
        let day = c.secs.div_euclid(86_400);
        // Buckets are claimed by the newest root in them, kept or not.
        let first_of_hour = hours.insert(hour);
        let first_of_day = days.insert(day);
        if i == 0
            || i < policy.keep_last
            || younger(now, c.secs, policy.all)
            || (first_of_hour && younger(now, c.secs, policy.hourly))
            || (first_of_day && younger(now, c.secs, policy.daily))
        {
            keep.insert(c.seq);
        }
    }
    keep
}

/// Everything some set of roots reaches: tree nodes (directory and
/// content) and chunks.
#[derive(Debug, Default)]
pub struct Marks {
    /// Node hashes reached.
    pub nodes: HashSet<Hash>,
    /// Chunk hashes reached.
    pub chunks: HashSet<Hash>,
}

impl Marks {
    /// Marks the directory tree `root` and everything beneath it. Nodes
    /// already marked are not read again (trees share most of their
    /// nodes). A missing node is an error: a collection that cannot see
    /// everything a root reaches must not delete anything.
    pub fn dir_tree(&mut self, store: &impl NodeStore, root: Hash) -> Result<()> {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if h == Hash::ZERO || !self.nodes.insert(h) {
                continue;
            }
            match dir::read_node(store, h).map_err(|e| missing(h, e))? {
                DirNode::Internal { children, .. } => {
                    stack.extend(children.into_iter().map(|(_, c)| c));
                }
                DirNode::Leaf(entries) => {
                    for e in entries.iter().filter(|e| !e.deleted) {
                        match e.kind {
                            Kind::Dir => stack.push(e.hash),
                            Kind::File => self.content(store, e.hash)?,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks the content tree `root` and its chunks.
    pub fn content(&mut self, store: &impl NodeStore, root: Hash) -> Result<()> {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if h == Hash::ZERO || !self.nodes.insert(h) {
                continue;
            }
            match content::read_node(store, h).map_err(|e| missing(h, e))? {
                ContentNode::Internal { children, .. } => {
                    stack.extend(children.into_iter().map(|(c, _)| c));
                }
                ContentNode::Leaf(extents) => self.extents(&extents),
            }
        }
        Ok(())
    }

    /// Marks the chunks of `extents`.
    pub fn extents(&mut self, extents: &[Extent]) {
        for e in extents {
            if let Extent::Data { hash, .. } = e {
                self.chunks.insert(*hash);
            }
        }
    }
}

/// Checks that everything the directory tree `root` reaches is stored:
/// every node (read through `store`) and every chunk (`has_chunk`).
/// Errors: [`Error::Corrupt`] naming the first thing missing.
pub fn check_whole(
    store: &impl NodeStore,
    root: Hash,
    has_chunk: impl Fn(&Hash) -> Result<bool>,
) -> Result<()> {
    let mut m = Marks::default();
    m.dir_tree(store, root)?;
    for c in &m.chunks {
        if !has_chunk(c)? {
            return Err(Error::corrupt(format!("chunk {c} is missing")));
        }
    }
    Ok(())
}

/// [`check_whole`], but the chunks of files that `ignored` ignores need
/// not be held: this node never fetches them (`vfs/ignored.rs`). Their
/// content nodes must be, as every directory node.
pub fn check_whole_ignoring(
    store: &impl NodeStore,
    root: Hash,
    ignored: &crate::ignore::Patterns,
    has_chunk: impl Fn(&Hash) -> Result<bool>,
) -> Result<()> {
    if ignored.is_empty() {
        return check_whole(store, root, has_chunk);
    }
    let mut wanted = Marks::default();
    let mut skipped = Marks::default();
    let mut stack: Vec<(Hash, Vec<u8>)> = vec![(root, Vec::new())];
    let mut seen = HashSet::new();
    while let Some((h, path)) = stack.pop() {
        if h == Hash::ZERO || !seen.insert(h) {
            continue;
        }
        match dir::read_node(store, h).map_err(|e| missing(h, e))? {
            DirNode::Internal { children, .. } => {
                stack.extend(children.into_iter().map(|(_, c)| (c, path.clone())));
            }
            DirNode::Leaf(entries) => {
                for e in entries.iter().filter(|e| !e.deleted) {
                    let child = crate::vfs::child_path(&path, &e.name);
                    match e.kind {
                        Kind::Dir => stack.push((e.hash, child)),
                        Kind::File if ignored.matches(&child).is_ignored() => {
                            skipped.content(store, e.hash)?
                        }
                        Kind::File => wanted.content(store, e.hash)?,
                        _ => {}
                    }
                }
            }
        }
    }
    for c in &wanted.chunks {
        if !has_chunk(c)? {
            return Err(Error::corrupt(format!("chunk {c} is missing")));
        }
    }
    Ok(())
}

fn missing(h: Hash, e: Error) -> Error {
    match e {
        Error::NotFound => Error::corrupt(format!("node {h} is missing")),
        e => e,
    }
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Roots in the log before.
    pub roots_before: u64,
    /// Roots kept.
    pub roots_kept: u64,
    /// Tree nodes deleted.
    pub nodes_freed: u64,
    /// Chunks deleted.
    pub chunks_freed: u64,
    /// Bytes of the deleted chunks.
    pub chunk_bytes_freed: u64,
    /// Packs rewritten (their live chunks copied out) or deleted.
    pub packs_rewritten: u64,
    /// Store size on disk before and after, in bytes.
    pub store_before: u64,
    /// See `store_before`.
    pub store_after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;

    fn log(times: &[i64]) -> Vec<Dated> {
        times
            .iter()
            .enumerate()
            .map(|(i, &secs)| Dated {
                seq: i as u64 + 1,
                secs,
            })
            .collect()
    }

    #[test]
    fn default_policy_thins_by_age() {
        let now = 1_000 * D;
        // Oldest first: 200 d ago; two in one day 10 d ago; two in one
        // hour 31 h ago; two in the last hour.
        let times = [
            now - 200 * D,
            now - 10 * D + H,
            now - 10 * D + 2 * H,
            now - 31 * H + 600,
            now - 31 * H + 1200,
            now - H,
            now - H + 600,
        ];
        let kept = select(&log(&times), now, &Policy::default());
        // 200 d: outside every window. 10 d: one per day (the newer one).
        // 31 h: one per hour (the newer one). 1 h: both (all).
        assert_eq!(kept, BTreeSet::from([3, 5, 6, 7]));
    }

    #[test]
    fn keep_last_and_the_newest_always() {
        let zero = Policy {
            all: Duration::ZERO,
            hourly: Duration::ZERO,
            daily: Duration::ZERO,
            keep_last: 0,
        };
        let times = [10, 20, 30, 40];
        assert_eq!(select(&log(&times), 1_000, &zero), BTreeSet::from([4]));
        let two = Policy {
            keep_last: 2,
            ..zero
        };
        assert_eq!(select(&log(&times), 1_000, &two), BTreeSet::from([3, 4]));
        assert!(select(&[], 0, &two).is_empty());
    }

    proptest! {
        #[test]
        fn selection_is_stable(
            times in proptest::collection::vec(0i64..400 * D, 1..80),
            all in 0u64..3 * D as u64,
            hourly in 0u64..10 * D as u64,
            daily in 0u64..100 * D as u64,
            keep_last in 0usize..5,
        ) {
            let mut times = times;
            times.sort();
            let now = 400 * D;
            let p = Policy {
                all: Duration::from_secs(all),
                hourly: Duration::from_secs(hourly),
                daily: Duration::from_secs(daily),
                keep_last,
            };
            let full = log(&times);
            let kept = select(&full, now, &p);
            // The newest is always kept, and nothing outside the log.
            prop_assert!(kept.contains(&(full.len() as u64)));
            prop_assert!(kept.iter().all(|s| *s >= 1 && *s <= full.len() as u64));
            // Every root younger than `all` is kept.
            for c in &full {
                if now - c.secs < all as i64 {
                    prop_assert!(kept.contains(&c.seq));
                }
            }
            // A second collection at the same time keeps the same roots:
            // collecting is idempotent.
            let rest: Vec<Dated> = full.iter().copied().filter(|c| kept.contains(&c.seq)).collect();
            prop_assert_eq!(select(&rest, now, &p), kept);
        }
    }
}
