//! `backer check`: verify the whole store against its own files, as
//! restic's `check` does (and, with `repair`, what its `repair index`
//! does from the packs alone).
//!
//! Three passes:
//! 1. **Packs**, front to back by their record headers (no index): every
//!    record's bytes are hashed; bytes that hold no readable record are
//!    reported as damaged ranges.
//! 2. **The index** against what the packs hold: every entry must name a
//!    record with its hash and length whose bytes check out. An entry
//!    whose bytes fail is a bad chunk; one whose bytes are good but whose
//!    record header is damaged is a bad record (the store reads it, but a
//!    rebuild from the packs would lose it).
//! 3. **Trees**: every node reachable from the kept roots (the commit
//!    log) is read and checked against its hash; every chunk they name
//!    must be held. Chunks recorded missing ([`Space::Missing`]) are
//!    reported too.
//! 4. **Backing**: every tree node and commit the database holds must
//!    have a good record in the packs (what a rebuild reads).
//!
//! `repair` changes only what the store's own files prove: a bad chunk
//! whose good copy lies elsewhere in the packs is re-indexed there, any
//! other is quarantined (the index no longer claims it: it reads as
//! missing, and a pull or a write of the same bytes brings it back); a
//! bad record is written again as a whole new record; a chunk the trees
//! name that the index lacks is re-indexed from a good record when the
//! packs hold one; a tree node or commit whose record in the packs is
//! missing or damaged is written again from the database's copy
//! (`check/backing.rs`). Last, the chunks still missing are healed from
//! the running node's connected peers ([`crate::heal::repair`]). A
//! database that is missing or does not open is rebuilt from the packs by
//! [`run_damaged`] (`check/rebuild.rs`).
//!
//! It runs on a stopped store or beside a running node (reads only
//! committed data; a collection moving chunks meanwhile is looked up
//! again, never reported as damage).

mod backing;
pub mod rebuild;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::ignore::Patterns;
use crate::store::kv::for_each;
use crate::store::packs::{Damage, Location, Record, RecordKind};
use crate::store::{Space, Store};
use crate::tree::content::{self, ContentNode, Extent};
use crate::tree::dir::{self, DirNode};
use crate::tree::{Kind, NodeStore};

/// What a check read and found (hashes in hex).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Pack files read.
    pub packs: u64,
    /// Pack bytes read and hashed.
    pub bytes: u64,
    /// Records found in the packs.
    pub records: u64,
    /// Chunk index entries checked.
    pub index_entries: u64,
    /// Kept roots walked.
    pub roots: u64,
    /// Tree nodes read and verified.
    pub nodes: u64,
    /// Distinct chunks the kept trees name.
    pub chunks: u64,
    /// Ranges of pack bytes that hold no readable record.
    pub damaged: Vec<Damage>,
    /// Index entries whose bytes fail their hash or cannot be read.
    pub bad_chunks: Vec<String>,
    /// Index entries whose bytes check out but whose record header does
    /// not (a rebuild from the packs would lose them).
    pub bad_records: Vec<String>,
    /// Chunks the trees name, or recorded missing, that the store does
    /// not hold.
    pub missing_chunks: Vec<String>,
    /// Tree nodes that fail their hash or do not decode.
    pub bad_nodes: Vec<String>,
    /// Tree nodes a kept tree names that the store lacks.
    pub missing_nodes: Vec<String>,
    /// Whether this check repaired what it could.
    pub repair: bool,
    /// What the repair did.
    pub repaired: Repaired,
    /// How many of the problems above are still there (0: the store is
    /// whole). `backer check` exits 1 while this is not 0.
    pub still_bad: u64,
    /// Why a repair healed no more from peers, if it did not heal all
    /// (see [`crate::heal::repair`]).
    #[serde(default)]
    pub heal_note: Option<String>,
    /// Tree nodes and commits the database holds whose record in the
    /// packs is missing or damaged (a rebuild would lose them).
    #[serde(default)]
    pub unbacked: Vec<String>,
    /// Why the database (the index) is missing or does not open, when it
    /// is (then nothing else was checked: `--repair` rebuilds it).
    #[serde(default)]
    pub index_damaged: Option<String>,
    /// What a rebuild of the database from the packs did, when this
    /// check ran one.
    #[serde(default)]
    pub rebuilt: Option<Box<rebuild::Rebuilt>>,
}

/// What `repair` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repaired {
    /// Chunks whose index entry now names a good copy found in the packs.
    pub reindexed: Vec<String>,
    /// Chunks written again as a new record (their header was damaged).
    pub rewritten: Vec<String>,
    /// Bad chunks quarantined (no good copy here: they read as missing).
    pub quarantined: Vec<String>,
    /// Missing chunks fetched again from a connected peer.
    #[serde(default)]
    pub healed: Vec<String>,
    /// Tree nodes and commits whose record was written again from the
    /// database's copy.
    #[serde(default)]
    pub backed: Vec<String>,
}

/// Checks the stopped store at `dir` whose database is missing or does
/// not open (`why`, from [`Error::IndexDamaged`]): without `repair`, a
/// report that says so (one problem); with it, rebuilds the database from
/// the packs ([`rebuild::rebuild`]) and checks the store it made (with
/// repair).
pub fn run_damaged(dir: &std::path::Path, why: String, repair: bool) -> Result<Report> {
    if !repair {
        return Ok(Report {
            index_damaged: Some(why),
            still_bad: 1,
            ..Report::default()
        });
    }
    let rebuilt = rebuild::rebuild(dir, why)?;
    // The namespace is made from the rebuilt log at the first open of the
    // tree: do it now, as the user running the check.
    let vfs = crate::vfs::Vfs::new(
        std::sync::Arc::new(Store::open(dir)?),
        crate::vfs::VfsOptions {
            owner: crate::vfs::Ctx {
                // SAFETY: getuid/getgid cannot fail.
                uid: unsafe { libc::getuid() },
                // SAFETY: as above.
                gid: unsafe { libc::getgid() },
            },
            ..crate::vfs::VfsOptions::default()
        },
    )?;
    let mut r = run(&vfs.store(), true)?;
    r.rebuilt = Some(Box::new(rebuilt));
    Ok(r)
}

/// Verifies `store`; with `repair`, fixes what its own files allow.
pub fn run(store: &Store, repair: bool) -> Result<Report> {
    let mut r = Report {
        repair,
        ..Report::default()
    };
    let expected = backing::expected(store)?;
    let scanned = scan_packs(store, &mut r)?;
    check_index(store, &scanned, repair, &mut r)?;
    let patterns = crate::vfs::saved_ignore_patterns(store.kv())?;
    let named = walk_trees(store, &patterns, &mut r)?;
    check_held(store, &scanned, named, repair, &mut r)?;
    backing::check(store, expected, &scanned.backed, repair, &mut r)?;
    for list in [
        &mut r.bad_chunks,
        &mut r.bad_records,
        &mut r.missing_chunks,
        &mut r.bad_nodes,
        &mut r.missing_nodes,
    ] {
        list.sort();
        list.dedup();
    }
    if repair {
        crate::heal::repair::from_peers(store, &mut r, crate::heal::repair::REPAIR_WAIT)?;
    }
    let fixed = |list: &[String], by: &[&[String]]| {
        list.iter()
            .filter(|h| !by.iter().any(|l| l.contains(h)))
            .count() as u64
    };
    let rep = &r.repaired;
    // A quarantined chunk is no longer bad; it counts again as missing if
    // a tree still names it.
    r.still_bad = fixed(&r.bad_chunks, &[&rep.reindexed, &rep.quarantined])
        + fixed(&r.bad_records, &[&rep.rewritten])
        + r.missing_chunks.len() as u64
        + r.bad_nodes.len() as u64
        + r.missing_nodes.len() as u64
        + fixed(&r.unbacked, &[&rep.backed]);
    Ok(r)
}

/// What pass 1 found.
#[derive(Default)]
struct Scanned {
    /// Every record, by where its bytes are.
    records: HashMap<(u32, u64), Record>,
    /// A good copy of each chunk, where the packs hold one.
    good: HashMap<Hash, Location>,
    /// Packs up to here were read (the active one up to its length then).
    head: (u32, u64),
    /// The tree nodes and commits the packs hold good records of.
    backed: backing::Backed,
}

impl Scanned {
    /// Whether `loc` lies past what was read (appended since).
    fn is_newer(&self, loc: &Location) -> bool {
        loc.pack > self.head.0 || (loc.pack == self.head.0 && loc.offset >= self.head.1)
    }
}

fn scan_packs(store: &Store, r: &mut Report) -> Result<Scanned> {
    let packs = store.packs();
    let mut s = Scanned {
        head: packs.head(),
        ..Scanned::default()
    };
    for id in packs.ids()? {
        if id > s.head.0 {
            continue;
        }
        let end = if id == s.head.0 { s.head.1 } else { u64::MAX };
        r.bytes += packs.scan_bytes(
            id,
            end,
            |rec, bytes| {
                r.records += 1;
                s.backed.note(&rec, bytes);
                if rec.good && rec.kind == RecordKind::Chunk {
                    s.good.entry(rec.hash).or_insert(rec.loc);
                }
                s.records.insert((rec.loc.pack, rec.loc.offset), rec);
            },
            |d| r.damaged.push(d),
        )?;
        r.packs += 1;
    }
    Ok(s)
}

fn check_index(store: &Store, s: &Scanned, repair: bool, r: &mut Report) -> Result<()> {
    let mut entries = Vec::new();
    for_each(store.kv(), Space::Chunks, &[], None, |k, v| {
        entries.push((hash_key(k)?, Location::decode(v)?));
        Ok(())
    })?;
    for (hash, loc) in entries {
        r.index_entries += 1;
        let rec = s.records.get(&(loc.pack, loc.offset));
        let header_ok = rec.is_some_and(|rec| rec.hash == hash && rec.loc.len == loc.len);
        if header_ok && rec.is_some_and(|rec| rec.good) {
            continue;
        }
        let why = match store.probe(&hash, &loc)? {
            None if header_ok || s.is_newer(&loc) => continue,
            why => why,
        };
        if store.chunk_location(&hash)? != Some(loc) {
            continue; // moved by a collection (or quarantined) meanwhile
        }
        let hex = hash.to_hex();
        let Some(why) = why else {
            r.bad_records.push(hex.clone());
            if repair && store.rewrite_record(&hash, loc)? {
                r.repaired.rewritten.push(hex);
            }
            continue;
        };
        r.bad_chunks.push(hex.clone());
        if !repair {
            continue;
        }
        if let Some(&good) = s.good.get(&hash).filter(|g| **g != loc) {
            if store.reindex(&hash, Some(loc), good)? {
                r.repaired.reindexed.push(hex);
                continue;
            }
        }
        store.quarantine(&hash, loc, &why)?;
        r.repaired.quarantined.push(hex);
    }
    Ok(())
}

/// Walks every kept root; returns the chunks the trees name, but for
/// those only files this node ignores name: their content is absent on
/// purpose (`vfs/ignored.rs`), so a chunk of theirs that is not held is
/// not missing.
fn walk_trees(store: &Store, patterns: &Patterns, r: &mut Report) -> Result<HashSet<Hash>> {
    let mut roots: Vec<Hash> = crate::history::commits(store)?
        .iter()
        .map(|c| Hash(c.root))
        .collect();
    roots.sort();
    roots.dedup();
    r.roots = roots.len() as u64;
    let mut seen = HashSet::new();
    let mut named = HashSet::new();
    // Nodes met only under ignored paths; a node met there first is
    // walked again if a replicated path names it too.
    let mut seen_ignored = HashSet::new();
    let root_path: Rc<[u8]> = Rc::from(&b""[..]);
    let mut stack: Vec<(Hash, Walk)> = roots
        .into_iter()
        .map(|h| (h, Walk::Dir(root_path.clone())))
        .collect();
    while let Some((h, walk)) = stack.pop() {
        let ignored = matches!(walk, Walk::Content { wanted: false });
        if h == Hash::ZERO || seen.contains(&h) || (ignored && !seen_ignored.insert(h)) {
            continue;
        }
        if !ignored {
            seen.insert(h);
        }
        if store.get_node(&h)?.is_none() {
            r.missing_nodes.push(h.to_hex());
            continue;
        }
        let read = match &walk {
            Walk::Dir(path) => dir::read_node(store, h).map(|n| match n {
                DirNode::Internal { children, .. } => {
                    stack.extend(
                        children
                            .into_iter()
                            .map(|(_, c)| (c, Walk::Dir(path.clone()))),
                    );
                }
                DirNode::Leaf(entries) => {
                    for e in entries.iter().filter(|e| !e.deleted) {
                        let child = crate::vfs::child_path(path, &e.name);
                        match e.kind {
                            Kind::Dir => stack.push((e.hash, Walk::Dir(child.into()))),
                            Kind::File => {
                                let wanted = !patterns.matches(&child).is_ignored();
                                stack.push((e.hash, Walk::Content { wanted }))
                            }
                            _ => {}
                        }
                    }
                }
            }),
            Walk::Content { wanted } => content::read_node(store, h).map(|n| match n {
                ContentNode::Internal { children, .. } => {
                    stack.extend(
                        children
                            .into_iter()
                            .map(|(c, _)| (c, Walk::Content { wanted: *wanted })),
                    );
                }
                ContentNode::Leaf(extents) => {
                    for e in extents {
                        if let Extent::Data { hash, .. } = e {
                            if *wanted {
                                named.insert(hash);
                            }
                        }
                    }
                }
            }),
        };
        match read {
            Ok(()) => r.nodes += 1,
            Err(Error::Corrupt(_)) => r.bad_nodes.push(h.to_hex()),
            Err(e) => return Err(e),
        }
    }
    r.chunks = named.len() as u64;
    Ok(named)
}

/// What the tree walk reads a node as.
enum Walk {
    /// A directory node, of the directory at this path.
    Dir(Rc<[u8]>),
    /// A content node; `wanted`: of a file this node does not ignore.
    Content { wanted: bool },
}

/// Every chunk the trees name, and every one recorded missing, must be
/// held; with `repair`, re-indexes those the packs hold a good copy of.
fn check_held(
    store: &Store,
    s: &Scanned,
    mut named: HashSet<Hash>,
    repair: bool,
    r: &mut Report,
) -> Result<()> {
    named.extend(store.missing_chunks()?);
    let mut wanted: Vec<Hash> = named.into_iter().collect();
    wanted.sort();
    for hash in wanted {
        if store.chunk_location(&hash)?.is_some() {
            continue;
        }
        if repair {
            if let Some(&good) = s.good.get(&hash) {
                if store.reindex(&hash, None, good)? {
                    r.repaired.reindexed.push(hash.to_hex());
                    continue;
                }
            }
        }
        r.missing_chunks.push(hash.to_hex());
    }
    Ok(())
}

fn hash_key(k: &[u8]) -> Result<Hash> {
    Ok(Hash(k.try_into().map_err(|_| {
        Error::corrupt("a chunk index key of the wrong length")
    })?))
}
