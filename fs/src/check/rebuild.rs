//! Rebuilding the database from the packs, as restic's `repair index`
//! does: the store's own files are the truth, the database an index
//! (DESIGN.md). Run by `backer check --repair` on a stopped store whose
//! database is missing or does not open.
//!
//! From the packs alone (every record checked against its hash; a record
//! that fails is left out, never trusted):
//! - the chunk index (the first good copy of each chunk);
//! - the tree nodes;
//! - the commit log (each commit's record, the later one when a number
//!   appears twice), the head (the newest commit whose tree is whole) and
//!   the edit clock (the largest any commit record carries);
//! - then, at the next open, the namespace is made from the head's tree
//!   (`Vfs::check_out`).
//!
//! Older commits are kept only when their trees are whole, nodes and
//! chunks: a collection removes a dropped root's nodes and chunks from
//! the index but their records stay in the packs until the pack is
//! rewritten, so a partial tree is history that was collected.
//!
//! What the packs do not hold is listed in [`NOT_RESTORED`]: facts local
//! to this machine that are not in the hashed tree.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::kv::{Batch, Kv, Space};
use crate::store::packs::{commit_record, Damage, Packs, RecordKind};
use crate::store::{self, codec, keyfile, private, sled_kv, FORMAT_VERSION};
use crate::tree::content::{self, ContentNode, Extent};
use crate::tree::dir::{self, DirNode};
use crate::tree::{Kind, NodeStore};
use crate::vfs::Commit;

/// What a rebuilt database cannot hold: local facts that are not in the
/// hashed tree. `backer check` prints them after a rebuild.
pub const NOT_RESTORED: &[&str] = &[
    "owners (uid/gid): every file belongs to the user who runs the node",
    "extended attributes",
    "hard links: each name is a file of its own",
    "setuid/setgid bits",
    "files that ignore patterns keep out of the tree",
    "changes not yet committed when the database was lost",
    "chunks recorded missing or quarantined (check finds them again)",
];

/// What a rebuild found and wrote (hashes in hex).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    /// Why the database had to be rebuilt.
    pub reason: String,
    /// Chunks indexed.
    pub chunks: u64,
    /// Tree nodes restored.
    pub nodes: u64,
    /// Commits restored to the log.
    pub commits: u64,
    /// Commit records left out: their trees are not whole (history a
    /// collection dropped, or records lost to damage).
    pub commits_left_out: u64,
    /// The restored head: commit number and root.
    pub head: Option<(u64, String)>,
    /// Pack bytes that hold no readable record.
    pub damaged: Vec<Damage>,
    /// Records whose bytes fail their hash (left out).
    pub bad_records: u64,
    /// What the packs do not hold ([`NOT_RESTORED`]).
    pub not_restored: Vec<String>,
}

/// Why the database of the stopped store at `dir` cannot be used, or
/// `None` when it opens.
pub fn damage_of(dir: &Path) -> Result<Option<String>> {
    match store::Store::open(dir) {
        Ok(_) => Ok(None),
        Err(Error::IndexDamaged(why)) => Ok(Some(why)),
        Err(e) => Err(e),
    }
}

/// A tree store over an engine's nodes.
struct KvNodes<'a>(&'a dyn Kv);

impl NodeStore for KvNodes<'_> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(Error::ReadOnly)
    }
}

/// Rebuilds the database of the stopped store at `dir` from its packs,
/// replacing a damaged one. `Err(Locked)` while a process holds it; a
/// store without its `node.key` is refused (a rebuild would make it
/// another node).
pub fn rebuild(dir: &Path, reason: String) -> Result<Rebuilt> {
    let _open = store::OpenLock::take(dir)?;
    store::finish_interrupted_swap(dir)?;
    if sled_kv::is_held(&store::db_dir(dir))? {
        return Err(Error::Locked);
    }
    let key = keyfile::read(dir)?.ok_or_else(|| {
        Error::NodeKey("node.key is missing: the store's identity cannot be rebuilt".into())
    })?;
    let packs = Packs::open(&dir.join("packs"))?;
    let new = store::db_new(dir);
    if new.exists() {
        std::fs::remove_dir_all(&new)
            .map_err(|e| Error::io(format!("remove {}", new.display()), e))?;
    }
    private::create_dir(&new)?;
    let mut out = Rebuilt {
        reason,
        not_restored: NOT_RESTORED.iter().map(|s| s.to_string()).collect(),
        ..Rebuilt::default()
    };
    {
        let kv = sled_kv::SledKv::open(&new, sled_kv::DEFAULT_CACHE_BYTES)?;
        let (commits, clock) = read_packs(&packs, &kv, &mut out)?;
        write_log(&kv, commits, clock, &mut out)?;
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            store::META_FORMAT,
            FORMAT_VERSION.to_be_bytes(),
        );
        kv.apply(b)?;
        kv.flush()?;
    }
    private::sync_dir(&new)?;
    swap_in(dir)?;
    drop(key);
    tracing::warn!(
        store = %dir.display(),
        chunks = out.chunks,
        nodes = out.nodes,
        commits = out.commits,
        "rebuilt the database from the packs"
    );
    Ok(out)
}

/// Moves the rebuilt database in place of the damaged one (if any),
/// as the upgrade's swap does (`store::finish_interrupted_swap`).
fn swap_in(dir: &Path) -> Result<()> {
    let (db, new, old) = (store::db_dir(dir), store::db_new(dir), store::db_old(dir));
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .map_err(|e| Error::io(format!("remove {}", old.display()), e))?;
    }
    if db.exists() {
        std::fs::rename(&db, &old).map_err(|e| Error::io(format!("rename {}", db.display()), e))?;
    }
    std::fs::rename(&new, &db).map_err(|e| Error::io(format!("rename {}", new.display()), e))?;
    private::sync_dir(dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .map_err(|e| Error::io(format!("remove {}", old.display()), e))?;
    }
    Ok(())
}

/// Indexes every good chunk and node record into `kv`; returns the
/// commit records (by number, the later record winning) and the largest
/// clock.
fn read_packs(
    packs: &Packs,
    kv: &dyn Kv,
    out: &mut Rebuilt,
) -> Result<(BTreeMap<u64, Vec<u8>>, u64)> {
    const BATCH: usize = 10_000;
    let mut chunks = HashSet::new();
    let mut nodes = HashSet::new();
    let mut commits = BTreeMap::new();
    let mut clock = 0u64;
    let mut b = Batch::default();
    let mut failed = None;
    for id in packs.ids()? {
        packs.scan_bytes(
            id,
            u64::MAX,
            |r, bytes| {
                if failed.is_some() {
                    return;
                }
                if !r.good {
                    out.bad_records += 1;
                    return;
                }
                match r.kind {
                    RecordKind::Chunk => {
                        if chunks.insert(r.hash) {
                            b.put(Space::Chunks, r.hash.as_bytes().to_vec(), r.loc.encode());
                        }
                    }
                    RecordKind::Node => {
                        if nodes.insert(r.hash) {
                            b.put(Space::Nodes, r.hash.as_bytes().to_vec(), bytes.to_vec());
                        }
                    }
                    RecordKind::Commit => {
                        if let Some((c, commit)) = commit_record::decode(bytes) {
                            if let Ok(parsed) = codec::decode::<Commit>(commit, "commit") {
                                clock = clock.max(c);
                                commits.insert(parsed.seq, commit.to_vec());
                            }
                        }
                    }
                }
                if b.ops.len() >= BATCH {
                    if let Err(e) = kv.apply(std::mem::take(&mut b)) {
                        failed = Some(e);
                    }
                }
            },
            |d| out.damaged.push(d),
        )?;
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    kv.apply(b)?;
    out.chunks = chunks.len() as u64;
    out.nodes = nodes.len() as u64;
    Ok((commits, clock))
}

/// Writes the log: the newest commit whose tree's nodes are all there is
/// the head; older ones are kept when their trees are whole.
fn write_log(
    kv: &dyn Kv,
    commits: BTreeMap<u64, Vec<u8>>,
    clock: u64,
    out: &mut Rebuilt,
) -> Result<()> {
    let nodes = KvNodes(kv);
    let mut whole = HashSet::new();
    let mut b = Batch::default();
    let mut head: Option<Commit> = None;
    for (seq, bytes) in commits.into_iter().rev() {
        let c: Commit = codec::decode(&bytes, "commit")?;
        let (nodes_ok, chunks_ok) = walk(&nodes, kv, Hash(c.root), &mut whole)?;
        let keep = if head.is_none() {
            nodes_ok
        } else {
            nodes_ok && chunks_ok
        };
        if !keep {
            out.commits_left_out += 1;
            continue;
        }
        b.put(Space::Commits, seq.to_be_bytes().to_vec(), bytes);
        out.commits += 1;
        if head.is_none() {
            head = Some(c);
        }
    }
    if let Some(h) = &head {
        let mut v = h.seq.to_be_bytes().to_vec();
        v.extend_from_slice(&h.root);
        b.put(Space::Meta, crate::vfs::META_HEAD, v);
        out.head = Some((h.seq, Hash(h.root).to_hex()));
    }
    b.put(
        Space::Meta,
        crate::store::mirror::META_CLOCK,
        clock.to_be_bytes().to_vec(),
    );
    kv.apply(b)
}

/// Whether the tree `root` has all its nodes, and all its chunks indexed.
/// `whole`: nodes already known to head whole subtrees (filled by walks
/// that found everything).
fn walk(
    nodes: &KvNodes<'_>,
    kv: &dyn Kv,
    root: Hash,
    whole: &mut HashSet<Hash>,
) -> Result<(bool, bool)> {
    let mut seen = HashSet::new();
    let (mut nodes_ok, mut chunks_ok) = (true, true);
    let mut stack = vec![(root, true)];
    while let Some((h, is_dir)) = stack.pop() {
        if h == Hash::ZERO || whole.contains(&h) || !seen.insert(h) {
            continue;
        }
        if nodes.get_node(&h)?.is_none() {
            nodes_ok = false;
            continue;
        }
        let read = if is_dir {
            dir::read_node(nodes, h).map(|n| match n {
                DirNode::Internal { children, .. } => {
                    stack.extend(children.into_iter().map(|(_, c)| (c, true)));
                }
                DirNode::Leaf(entries) => {
                    for e in entries.iter().filter(|e| !e.deleted) {
                        match e.kind {
                            Kind::Dir => stack.push((e.hash, true)),
                            Kind::File => stack.push((e.hash, false)),
                            _ => {}
                        }
                    }
                }
            })
        } else {
            content::read_node(nodes, h).map(|n| match n {
                ContentNode::Internal { children, .. } => {
                    stack.extend(children.into_iter().map(|(c, _)| (c, false)));
                }
                ContentNode::Leaf(extents) => {
                    for e in extents {
                        if let Extent::Data { hash, .. } = e {
                            if chunks_ok
                                && kv
                                    .get(Space::Chunks, hash.as_bytes())
                                    .ok()
                                    .flatten()
                                    .is_none()
                            {
                                chunks_ok = false;
                            }
                        }
                    }
                }
            })
        };
        if read.is_err() {
            nodes_ok = false;
        }
    }
    if nodes_ok && chunks_ok {
        whole.extend(seen);
    }
    Ok((nodes_ok, chunks_ok))
}
