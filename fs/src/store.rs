//! The store: one folder holding the key-value engine (tree nodes, chunk
//! index, live namespace, commit log, node metadata) and the chunk packs.
//!
//! ```text
//! STORE/db/        the engine (sled)
//! STORE/packs/     chunk bytes, append-only
//! ```

pub mod codec;
pub mod kv;
pub mod mem_kv;
pub mod overlay_kv;
pub mod packs;
pub mod sled_kv;
pub mod txn;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use kv::{Batch, Kv, Space};
pub use packs::{Location, Packs};
pub use txn::Txn;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::identity::{NodeId, NodeKey};

/// The store format this build writes and reads. 2: no pack extents
/// keyspace; the chunk index reaches the engine only after the pack bytes
/// it names are synced (format 1 needed a recovery pass instead).
pub const FORMAT_VERSION: u32 = 2;

const META_FORMAT: &[u8] = b"format";
const META_KEY: &[u8] = b"node_key";

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// The engine's cache bound in bytes.
    pub cache_bytes: u64,
    /// Free disk space kept in reserve: writes below it get ENOSPC.
    pub reserve_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: sled_kv::DEFAULT_CACHE_BYTES,
            reserve_bytes: packs::DEFAULT_RESERVE,
        }
    }
}

/// An open store. Cheap to share behind an `Arc`.
pub struct Store {
    dir: PathBuf,
    kv: Arc<dyn Kv>,
    packs: Arc<Packs>,
    key: NodeKey,
    id: NodeId,
    /// Held (shared) by chunk writes that run without the vfs lock, from
    /// their append to their index entry; a collection takes it alone to
    /// know that every pack before the active one is fully indexed.
    appending: RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

fn db_dir(dir: &Path) -> PathBuf {
    dir.join("db")
}

impl Store {
    /// Creates a store in `dir` (made if missing) with a new node key.
    /// `Err(Exists)` if a store is already there.
    pub fn create(dir: &Path) -> Result<Store> {
        Self::create_with(dir, Options::default())
    }

    /// [`Store::create`] with options.
    pub fn create_with(dir: &Path, opts: Options) -> Result<Store> {
        if db_dir(dir).exists() {
            return Err(Error::Exists);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let kv = Arc::new(overlay_kv::OverlayKv::new(sled_kv::SledKv::open(
            &db_dir(dir),
            opts.cache_bytes,
        )?));
        let key = NodeKey::generate()?;
        let mut b = Batch::default();
        b.put(Space::Meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
        b.put(Space::Meta, META_KEY, key.pkcs8());
        kv.apply(b)?;
        kv.flush()?;
        let store = Self::finish_open(dir, kv, opts)?;
        Ok(store)
    }

    /// Opens the store in `dir`. `Err(NotFound)` if there is none.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, Options::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(dir: &Path, opts: Options) -> Result<Store> {
        if !db_dir(dir).is_dir() {
            return Err(Error::NotFound);
        }
        let kv = Arc::new(overlay_kv::OverlayKv::new(sled_kv::SledKv::open(
            &db_dir(dir),
            opts.cache_bytes,
        )?));
        Self::finish_open(dir, kv, opts)
    }

    /// Opens a store over any engine, packs in `dir/packs` (tests use this
    /// with [`mem_kv::MemKv`]). Initialises the metadata if the engine is
    /// empty.
    pub fn with_engine(dir: &Path, kv: Arc<dyn Kv>, opts: Options) -> Result<Store> {
        if kv.get(Space::Meta, META_FORMAT)?.is_none() {
            let key = NodeKey::generate()?;
            let mut b = Batch::default();
            b.put(Space::Meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
            b.put(Space::Meta, META_KEY, key.pkcs8());
            kv.apply(b)?;
        }
        Self::finish_open(dir, kv, opts)
    }

    fn finish_open(dir: &Path, kv: Arc<dyn Kv>, opts: Options) -> Result<Store> {
        let format = kv
            .get(Space::Meta, META_FORMAT)?
            .ok_or_else(|| Error::corrupt("store has no format version"))?;
        let found = u32::from_be_bytes(
            format
                .as_slice()
                .try_into()
                .map_err(|_| Error::corrupt("format version"))?,
        );
        if found != FORMAT_VERSION {
            return Err(Error::Format {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let key_bytes = kv
            .get(Space::Meta, META_KEY)?
            .ok_or_else(|| Error::corrupt("store has no node key"))?;
        let key = NodeKey::from_pkcs8(&key_bytes)?;
        let id = key.node_id();
        let mut packs = Packs::open(&dir.join("packs"))?;
        packs.set_reserve(opts.reserve_bytes);
        let packs = Arc::new(packs);
        // The chunk index names pack bytes: it reaches the disk only after
        // they do, so after any crash every indexed chunk is whole (what a
        // crash leaves past the synced end of a pack is named by nothing,
        // and later appends go after it).
        let synced = packs.clone();
        kv.before_handing_down(Box::new(move || synced.sync().map(|_| ())));
        Ok(Store {
            dir: dir.to_path_buf(),
            kv,
            packs,
            key,
            id,
            appending: RwLock::new(()),
        })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key-value engine.
    pub fn kv(&self) -> &dyn Kv {
        self.kv.as_ref()
    }

    /// The chunk packs.
    pub fn packs(&self) -> &Packs {
        &self.packs
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// This node's key pair.
    pub fn node_key(&self) -> &NodeKey {
        &self.key
    }

    /// Stores a chunk unless the index already has it (dedup), recording
    /// its location in `txn`. The bytes are in the kernel when this
    /// returns; the index entry lands with the transaction.
    pub fn put_chunk(&self, txn: &mut Txn<'_>, data: &[u8]) -> Result<Hash> {
        self.put_hashed_chunk(txn, data, Hash::of(data))
    }

    /// [`Store::put_chunk`] for bytes whose blake3 hash the caller has just
    /// computed (or verified): `hash` must be `Hash::of(data)`, or the
    /// store will hold a chunk under the wrong name (reads verify, and
    /// would report it corrupt).
    pub fn put_hashed_chunk(&self, txn: &mut Txn<'_>, data: &[u8], hash: Hash) -> Result<Hash> {
        debug_assert_eq!(hash, Hash::of(data));
        if txn.get(Space::Chunks, hash.as_bytes())?.is_some() {
            return Ok(hash);
        }
        let loc = self.packs.append(&hash, data)?;
        txn.put(
            Space::Chunks,
            hash.as_bytes().to_vec(),
            loc.encode().to_vec(),
        );
        Ok(hash)
    }

    /// See [`Packs::has_ample_room`].
    pub fn has_ample_room(&self, bytes: u64) -> Result<bool> {
        self.packs.has_ample_room(bytes)
    }

    /// Stores a chunk whose hash the caller verified, index entry
    /// included, at once (for writers outside the vfs lock: a pull).
    pub fn put_verified_chunk(&self, data: &[u8], hash: Hash) -> Result<()> {
        let _gate = self.appending.read().unwrap_or_else(|p| p.into_inner());
        let mut txn = Txn::new(self.kv());
        self.put_hashed_chunk(&mut txn, data, hash)?;
        txn.commit()
    }

    /// Waits until no chunk write outside the vfs lock is between its
    /// append and its index entry, closes the active pack if `seal`, and
    /// returns the active pack's id. Called with the vfs lock held, every
    /// pack before the returned one is then fully indexed: no later
    /// write appends to it.
    pub fn pack_barrier(&self, seal: bool) -> Result<u32> {
        let _gate = self.appending.write().unwrap_or_else(|p| p.into_inner());
        if seal {
            self.packs.seal()
        } else {
            Ok(self.packs.head().0)
        }
    }

    /// Where a chunk is, if the store has it.
    pub fn chunk_location(&self, hash: &Hash) -> Result<Option<Location>> {
        match self.kv.get(Space::Chunks, hash.as_bytes())? {
            Some(v) => Ok(Some(Location::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// A whole chunk, checked against its hash.
    pub fn read_chunk(&self, hash: &Hash) -> Result<Vec<u8>> {
        let loc = self.chunk_location(hash)?.ok_or(Error::NotFound)?;
        match self.packs.read_verified(hash, &loc) {
            Ok(b) => Ok(b),
            // A collection may have moved it between the lookup and the
            // read (and deleted the old pack): look again once.
            Err(e) => match self.chunk_location(hash)? {
                Some(now) if now != loc => self.packs.read_verified(hash, &now),
                _ => Err(e),
            },
        }
    }

    /// Makes everything written so far durable: pack bytes first, then
    /// the engine, so no durable index entry names bytes that are not
    /// (the engine's flush syncs the packs before it hands the index
    /// entries down; this syncs them itself for engines that do not).
    pub fn flush_durable(&self) -> Result<()> {
        self.packs.sync()?;
        self.kv.flush()
    }

    /// Bytes on disk: engine plus packs.
    pub fn size_on_disk(&self) -> Result<u64> {
        let mut total = self.kv.size_on_disk()?;
        let (head, _) = self.packs.head();
        for id in 1..=head {
            total += self.packs.pack_len(id)?;
        }
        Ok(total)
    }
}

/// A store is a read-only [`crate::tree::NodeStore`] of its committed
/// nodes (for tools that read trees; writes go through a [`Txn`]).
impl crate::tree::NodeStore for Store {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.kv.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(Error::ReadOnly)
    }
}
