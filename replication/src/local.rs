//! The local side of a sync: what [`crate::reconcile`] asks of this node's
//! store, as a trait ([`Local`]), with two implementations: [`VfsLocal`]
//! over a real store and its live namespace, and [`MemLocal`] in memory.

use std::collections::HashMap;
use std::sync::Arc;

use backer_fs::store::{Batch, Space};
use backer_fs::tree::{dir, MemNodes, NodeStore};
use backer_fs::vfs::{Installed, Pins, Vfs};
use backer_fs::{Error, Hash, Result};

use crate::merge::{merge_roots, Merged};

/// This node's store, as a sync sees it. Reads are answers to the peer's
/// requests and the local half of the merkle descent; writes are verified
/// items from the peer (the caller has checked every hash). The merge is
/// run by the session's driver when the state machine hands it out
/// ([`crate::Reconcile::poll_merge`]).
pub trait Local {
    /// The committed root.
    fn root(&self) -> Result<Hash>;
    /// The bytes of the tree node (directory or content) `hash`, if held.
    fn node(&self, hash: &Hash) -> Result<Option<Vec<u8>>>;
    /// [`Local::node`] for a node of the tree being pulled: if held, the
    /// pull relies on it instead of fetching it, so it must stay held
    /// until the merge (a history collection must not take it).
    fn pulled_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.node(hash)
    }
    /// Stores a verified node.
    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()>;
    /// Whether the chunk `hash` is held (asked by a pull, which relies on
    /// a held chunk staying held until the merge).
    fn has_chunk(&self, hash: &Hash) -> Result<bool>;
    /// The bytes of the chunk `hash`, if held.
    fn chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>>;
    /// Stores a verified chunk.
    fn put_chunk(&mut self, hash: Hash, bytes: &[u8]) -> Result<()>;
    /// Stores a verified chunk this node wanted back (a heal, outside
    /// any pull).
    fn heal_chunk(&mut self, hash: Hash, bytes: &[u8]) -> Result<()> {
        self.put_chunk(hash, bytes)
    }
    /// The peer could not produce the chunk `hash` that its tree names:
    /// remember it as missing (the merge goes ahead without it).
    fn chunk_unavailable(&mut self, hash: &Hash) -> Result<()> {
        let _ = hash;
        Ok(())
    }
    /// Whether this node's ignore patterns keep `path` (from the root,
    /// `/`-separated) out of its mount: a pull fetches no chunks for such
    /// a file.
    fn ignores(&self, path: &[u8], is_dir: bool) -> bool {
        let _ = (path, is_dir);
        false
    }
    /// Merges the tree `remote` (every node and chunk it needs is held,
    /// or recorded missing by [`Local::chunk_unavailable`]) into the
    /// committed tree, commits the result, and returns it.
    fn merge(&mut self, remote: Hash) -> Result<Merged>;
}

/// A read-only [`NodeStore`] view of a [`Local`].
pub struct LocalNodes<'a, L: ?Sized>(pub &'a L);

impl<L: Local + ?Sized> NodeStore for LocalNodes<'_, L> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.node(hash)
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(Error::ReadOnly)
    }
}

/// A node held in memory: for tests and examples.
#[derive(Clone, Debug)]
pub struct MemLocal {
    /// Tree nodes.
    pub nodes: MemNodes,
    /// Chunks by hash.
    pub chunks: HashMap<Hash, Vec<u8>>,
    /// The committed root.
    pub root: Hash,
}

impl MemLocal {
    /// A node holding the empty tree.
    pub fn new() -> MemLocal {
        let mut nodes = MemNodes::new();
        let root = dir::empty(&mut nodes).expect("memory store");
        MemLocal {
            nodes,
            chunks: HashMap::new(),
            root,
        }
    }
}

impl Default for MemLocal {
    fn default() -> Self {
        MemLocal::new()
    }
}

impl Local for MemLocal {
    fn root(&self) -> Result<Hash> {
        Ok(self.root)
    }

    fn node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.nodes.get_node(hash)
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        self.nodes.put_node(hash, bytes)
    }

    fn has_chunk(&self, hash: &Hash) -> Result<bool> {
        Ok(self.chunks.contains_key(hash))
    }

    fn chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.chunks.get(hash).cloned())
    }

    fn put_chunk(&mut self, hash: Hash, bytes: &[u8]) -> Result<()> {
        self.chunks.insert(hash, bytes.to_vec());
        Ok(())
    }

    fn merge(&mut self, remote: Hash) -> Result<Merged> {
        let m = merge_roots(&mut self.nodes, self.root, remote)?;
        self.root = m.root;
        Ok(m)
    }
}

/// A node's real store and live namespace: received items go to the store
/// (nodes to its key-value engine, chunks to its packs); a merge is
/// installed into the live namespace in bounded steps, each a commit made
/// durable before the kernel hears of it ([`Vfs::install_steps`]); the
/// last is announced. A merge cut off between steps leaves a consistent
/// tree, and the next pull skips what it holds.
#[derive(Clone)]
pub struct VfsLocal {
    vfs: Arc<Vfs>,
    on_install: Option<InstallHook>,
    /// Bytes received since the store was last made durable.
    unsynced: u64,
    /// Items received since then.
    unsynced_items: u64,
    /// The vfs's collection count at the last merge: if it moved, a
    /// collection may have deleted what this pull decided it need not
    /// fetch, so the merge checks that what it installs is whole.
    gc_seen: u64,
    /// What the pull under way relies on: kept by history collections
    /// until the merge has made it reachable.
    pins: Pins,
}

/// Received bytes after which a pull makes the store durable, so a node
/// killed mid-transfer keeps what it had (and fetches only the rest).
const SYNC_EVERY: u64 = 32 << 20;

/// Received items (nodes and chunks) after which a pull makes the store
/// durable too. Small files are many items and few bytes: without this, a
/// first sync of 20,000 small files reached sled as batches of 64k keys
/// (the group-commit overlay's own bound) and sled held its dirty pages in
/// memory (heaptrack: ~200 MiB of the receiver's 257 MiB peak were sled
/// tree nodes). An fsync per 4,096 items costs little beside them.
const SYNC_ITEMS: u64 = 4096;

/// Called after a merge was installed into the live namespace, with the
/// vfs lock released and before the new root is announced: where a mount
/// tells the kernel to drop what it cached of the changed names.
pub type InstallHook = Arc<dyn Fn(&Installed) + Send + Sync>;

impl VfsLocal {
    /// The sync side of `vfs`.
    pub fn new(vfs: Arc<Vfs>) -> VfsLocal {
        VfsLocal {
            gc_seen: vfs.gc_generation(),
            pins: vfs.pins(),
            vfs,
            on_install: None,
            unsynced: 0,
            unsynced_items: 0,
        }
    }

    /// The same, calling `hook` after every installed merge.
    pub fn with_install_hook(vfs: Arc<Vfs>, hook: InstallHook) -> VfsLocal {
        VfsLocal {
            gc_seen: vfs.gc_generation(),
            pins: vfs.pins(),
            vfs,
            on_install: Some(hook),
            unsynced: 0,
            unsynced_items: 0,
        }
    }

    /// The vfs underneath.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }
}

impl VfsLocal {
    /// Counts received bytes; makes the store durable every [`SYNC_EVERY`]
    /// bytes or [`SYNC_ITEMS`] items.
    fn received(&mut self, len: u64) -> Result<()> {
        self.unsynced += len;
        self.unsynced_items += 1;
        if self.unsynced >= SYNC_EVERY || self.unsynced_items >= SYNC_ITEMS {
            self.unsynced = 0;
            self.unsynced_items = 0;
            self.vfs.store().flush_durable()?;
        }
        Ok(())
    }
}

impl Local for VfsLocal {
    fn root(&self) -> Result<Hash> {
        self.vfs.root_hash()
    }

    fn node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.vfs.store().kv().get(Space::Nodes, hash.as_bytes())
    }

    fn pulled_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        // Pin first: a collection either sees the pin or ran before the
        // read (which then finds nothing and the pull fetches it).
        self.pins.add(*hash);
        self.node(hash)
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        self.pins.add(hash);
        let len = bytes.len() as u64;
        let mut b = Batch::default();
        b.put(Space::Nodes, hash.as_bytes().to_vec(), bytes);
        self.vfs.store().kv().apply(b)?;
        self.received(len)
    }

    fn has_chunk(&self, hash: &Hash) -> Result<bool> {
        self.pins.add(*hash);
        Ok(self.vfs.store().chunk_location(hash)?.is_some())
    }

    fn chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        match self.vfs.store().read_chunk(hash) {
            Ok(b) => Ok(Some(b)),
            // Damaged (now quarantined) or not held: the peer hears
            // `Missing` and the session goes on.
            Err(Error::BadChunk(_) | Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn chunk_unavailable(&mut self, hash: &Hash) -> Result<()> {
        // Pinned like a held chunk: a collection before the merge must
        // not drop the record of a chunk no root reaches yet.
        self.pins.add(*hash);
        self.vfs.store().record_missing(hash)
    }

    fn put_chunk(&mut self, hash: Hash, bytes: &[u8]) -> Result<()> {
        self.pins.add(hash);
        // The session verified the hash before handing the bytes over.
        self.vfs.store().put_verified_chunk(bytes, hash)?;
        self.received(bytes.len() as u64)
    }

    fn heal_chunk(&mut self, hash: Hash, bytes: &[u8]) -> Result<()> {
        // No pin: nothing of a pull relies on it. The store tells its
        // registry of wanted chunks, which wakes whoever waits on it.
        self.vfs.store().put_verified_chunk(bytes, hash)
    }

    fn ignores(&self, path: &[u8], is_dir: bool) -> bool {
        self.vfs.ignores(path, is_dir)
    }

    fn merge(&mut self, remote: Hash) -> Result<Merged> {
        let mut out: Option<Merged> = None;
        let vfs = self.vfs.clone();
        let store = vfs.store().clone();
        let pins = self.pins.clone();
        let seen = &mut self.gc_seen;
        let hook = self.on_install.clone();
        // Read before the install takes the vfs lock.
        let ignored = vfs.ignore_patterns();
        let step = vfs.install_step();
        // The merge runs outside the vfs lock, its new nodes written to
        // the store (pinned until installed); the install then goes in
        // steps (`Vfs::install_steps`), each durable before the kernel
        // hears of it, and peers hear of the last one.
        let last = vfs.install_steps(
            step,
            remote,
            |base| {
                let mut nodes = PinnedNodes {
                    kv: store.kv(),
                    pins: &pins,
                };
                let m = merge_roots(&mut nodes, base, remote)?;
                let generation = vfs.gc_generation();
                if generation != *seen {
                    // A collection ran since the pull decided what it need
                    // not fetch: what it installs must be whole (the pins
                    // keep it so from here on).
                    backer_fs::gc::check_whole_ignoring(&nodes, m.root, &ignored, |h| {
                        Ok(store.chunk_location(h)?.is_some() || store.is_missing(h)?)
                    })?;
                    *seen = generation;
                }
                out = Some(m);
                Ok(Some(m.root))
            },
            |installed, last| {
                // Durable, then the kernel told, then (at the end) peers
                // (`Vfs::publish`).
                let durable = vfs.make_durable()?;
                if let Some(hook) = &hook {
                    hook(&installed);
                }
                drop(installed);
                if last {
                    vfs.publish(durable);
                }
                Ok(())
            },
        );
        // Installed (or nothing to install, or failed): the pull starts
        // over next time.
        self.pins.clear();
        last?;
        Ok(match out {
            Some(m) => Merged {
                root: self.vfs.root_hash()?,
                ..m
            },
            None => Merged {
                root: self.vfs.root_hash()?,
                changed: 0,
                conflicts: 0,
            },
        })
    }
}

/// The store's tree nodes, written straight to its key-value engine (a
/// node is named by its hash, so one written twice or never used harms
/// nothing) and pinned until the merge that made them is installed.
struct PinnedNodes<'a> {
    kv: &'a dyn backer_fs::store::Kv,
    pins: &'a Pins,
}

impl NodeStore for PinnedNodes<'_> {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.kv.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        self.pins.add(hash);
        if self.kv.get(Space::Nodes, hash.as_bytes())?.is_none() {
            let mut b = Batch::default();
            b.put(Space::Nodes, hash.as_bytes().to_vec(), bytes);
            self.kv.apply(b)?;
        }
        Ok(())
    }
}
