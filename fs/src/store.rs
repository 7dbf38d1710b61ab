//! The store: one folder holding the key-value engine (tree nodes, chunk
//! index, live namespace, commit log, node metadata), the packs and the
//! node's key. It is private to its owner: folders 0700, files 0600
//! ([`private`]).
//!
//! ```text
//! STORE/db/        the engine (sled): an index, rebuildable from the rest
//! STORE/packs/     chunks, tree nodes and commit records, append-only
//! STORE/node.key   the node's private key (PKCS#8 v2 DER)
//! ```
//!
//! The packs are the truth ([`mirror`]): an engine that is missing or
//! does not open is [`Error::IndexDamaged`], and `backer check --repair`
//! rebuilds it from the packs (`check/rebuild.rs`).

pub mod codec;
pub mod keyfile;
pub mod kv;
pub mod mem_kv;
pub(crate) mod mirror;
pub mod overlay_kv;
pub mod packs;
pub mod private;
mod seal;
pub mod sled_kv;
pub mod space_gate;
pub mod txn;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use kv::{Batch, Kv, Space};
pub use packs::{Location, Packs};
pub use txn::Txn;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::identity::{NodeId, NodeKey};

/// The store format this build writes and reads. 2: no pack extents
/// keyspace; the chunk index reaches the engine only after the pack bytes
/// it names are synced (format 1 needed a recovery pass instead). 3: the
/// node key is in `node.key`, not in the engine. 4: tree nodes and
/// commit records are written to the packs too ([`mirror`]): the engine
/// can be rebuilt from the packs.
pub const FORMAT_VERSION: u32 = 4;

/// The oldest format this build opens, upgrading it in place.
const OLDEST_FORMAT: u32 = 2;

pub(crate) const META_FORMAT: &[u8] = b"format";

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// The engine's cache bound in bytes.
    pub cache_bytes: u64,
    /// Free disk space kept in reserve: writes below it get ENOSPC.
    pub reserve_bytes: u64,
    /// A free-space gate of the caller's instead of one over the store's
    /// disk with `reserve_bytes` (tests give one over a fake disk).
    pub gate: Option<Arc<space_gate::SpaceGate>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: sled_kv::DEFAULT_CACHE_BYTES,
            reserve_bytes: packs::DEFAULT_RESERVE,
            gate: None,
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
    /// Chunks verified in this process, kept for the reads that follow.
    verified: verify::Verified,
    /// Held while an index entry is quarantined or a chunk recorded
    /// missing (each is a look, then a write).
    quarantining: Mutex<()>,
    /// Whether [`Space::Missing`] may hold anything: a store with nothing
    /// missing spares every new chunk a look there.
    missing_any: AtomicBool,
    /// The chunks this node wants back from its peers (every chunk in
    /// [`Space::Missing`], from the open on).
    wanted: crate::heal::Wanted,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

pub(crate) fn db_dir(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// Where an upgrade writes the new database before swapping it in.
pub(crate) fn db_new(dir: &Path) -> PathBuf {
    dir.join("db.new")
}

/// Where the old database waits, after the swap, to be removed.
pub(crate) fn db_old(dir: &Path) -> PathBuf {
    dir.join("db.old")
}

/// The format version an engine holds, if this build can open it.
fn format_of(kv: &dyn Kv) -> Result<u32> {
    let format = kv
        .get(Space::Meta, META_FORMAT)?
        .ok_or_else(|| Error::corrupt("store has no format version"))?;
    let found = u32::from_be_bytes(
        format
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupt("format version"))?,
    );
    if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&found) {
        return Err(Error::Format {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(found)
}

/// Opens the engine in `dir/db`; an engine that does not open for any
/// reason but a lock (sled: "Read corrupted data", a missing file) is
/// [`Error::IndexDamaged`]: the packs can rebuild it.
fn open_engine(dir: &Path, cache_bytes: u64) -> Result<sled_kv::SledKv> {
    let kv = match sled_kv::SledKv::open(&db_dir(dir), cache_bytes) {
        Ok(kv) => kv,
        Err(e @ (Error::Locked | Error::NoSpace)) => return Err(e),
        Err(e) => return Err(Error::IndexDamaged(e.to_string())),
    };
    match kv.get(Space::Meta, META_FORMAT) {
        Ok(Some(_)) => {
            let held = kv.flushes();
            match seal::read(&db_dir(dir)) {
                Some(sealed) if sealed > held => Err(Error::IndexDamaged(format!(
                    "the database lost writes it had made durable (flush {sealed} was sealed, \
                     it holds {held}): its files are damaged"
                ))),
                _ => Ok(kv),
            }
        }
        // sled makes an empty database of a folder whose files are gone.
        Ok(None) => Err(Error::IndexDamaged(
            "the database holds no store (its files are missing)".into(),
        )),
        Err(e) => Err(Error::IndexDamaged(e.to_string())),
    }
}

/// Whether the packs in `dir` hold any bytes: a store whose database is
/// missing, rather than no store (or an `init` cut short).
pub(crate) fn packs_hold_records(dir: &Path) -> Result<bool> {
    let packs = dir.join("packs");
    let list = match std::fs::read_dir(&packs) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("list {}", packs.display()), e)),
    };
    for ent in list {
        let ent = ent.map_err(|e| Error::io("list packs", e))?;
        let is_pack = ent.file_name().to_string_lossy().ends_with(".pack");
        if is_pack && ent.metadata().map(|m| m.len() > 0).unwrap_or(false) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What an upgrade to [`FORMAT_VERSION`] changes in the engine (the key
/// file is written before: [`keyfile::resolve`]).
fn upgrade_batch() -> Batch {
    let mut b = Batch::default();
    b.put(Space::Meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
    b.remove(Space::Meta, keyfile::LEGACY_KEY);
    b
}

/// Makes the store at `dir` private ([`private::tighten`]), saying so once
/// if it was not (a store made by an earlier version).
fn tighten_logged(dir: &Path) -> Result<()> {
    let changed = private::tighten(dir)?;
    if changed > 0 {
        tracing::warn!(
            store = %dir.display(),
            changed,
            "the store was readable by others: made it private (folders 0700, files 0600)"
        );
    }
    Ok(())
}

/// Held while a process opens or creates the store: the upgrade swaps
/// database folders while it holds no engine lock, and a second process
/// opening meanwhile (a CLI command racing a starting node) could make a
/// new empty `db/` or remove the only complete copy. With this lock, every
/// open's swap, cleanup and upgrade run alone; the engine's own lock then
/// keeps the opened store exclusive. Released when the open returns.
pub(crate) struct OpenLock {
    _file: std::fs::File,
}

impl OpenLock {
    pub(crate) fn take(dir: &Path) -> Result<OpenLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join("open.lock");
        let f = private::open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(OpenLock { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }
}

/// Finishes an upgrade that stopped between moving the old database
/// aside and moving the new one in (both are complete by then).
pub(crate) fn finish_interrupted_swap(dir: &Path) -> Result<()> {
    let (db, new, old) = (db_dir(dir), db_new(dir), db_old(dir));
    if !db.exists() && new.is_dir() && old.is_dir() {
        std::fs::rename(&new, &db)
            .map_err(|e| Error::io(format!("rename {}", new.display()), e))?;
        private::sync_dir(dir)?;
    }
    Ok(())
}

/// Removes what an interrupted upgrade left (an unfinished copy, an old
/// database already replaced). Called with the engine's lock held.
pub(crate) fn remove_upgrade_leftovers(dir: &Path) -> Result<()> {
    for p in [db_new(dir), db_old(dir)] {
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
        }
    }
    Ok(())
}

/// Upgrades a sled store to [`FORMAT_VERSION`]: a rewritten copy of the
/// database (without the old key: sled keeps removed values in its log),
/// swapped in by two renames that [`finish_interrupted_swap`] completes
/// after a crash; the original is untouched until then.
fn upgrade_sled(dir: &Path, sled: sled_kv::SledKv, cache_bytes: u64) -> Result<sled_kv::SledKv> {
    let (db, new, old) = (db_dir(dir), db_new(dir), db_old(dir));
    private::create_dir(&new)?;
    sled.copy_to(&new, upgrade_batch(), cache_bytes)?;
    drop(sled);
    private::sync_dir(&new)?;
    std::fs::rename(&db, &old).map_err(|e| Error::io(format!("rename {}", db.display()), e))?;
    std::fs::rename(&new, &db).map_err(|e| Error::io(format!("rename {}", new.display()), e))?;
    private::sync_dir(dir)?;
    std::fs::remove_dir_all(&old).map_err(|e| Error::io(format!("remove {}", old.display()), e))?;
    tracing::info!(store = %dir.display(), format = FORMAT_VERSION, "upgraded the store");
    sled_kv::SledKv::open(&db, cache_bytes)
}

impl Store {
    /// Creates a private store in `dir` (made 0700 if missing) with a new
    /// node key. `Err(Exists)` if a store is already there; a folder that
    /// holds anything else is refused ([`Error::Request`]): the store
    /// would make it private and call it its own. A `node.key` without a
    /// database (an init that was cut short) is kept, not replaced.
    pub fn create(dir: &Path) -> Result<Store> {
        Self::create_with(dir, Options::default())
    }

    /// [`Store::create`] with options.
    pub fn create_with(dir: &Path, opts: Options) -> Result<Store> {
        if db_dir(dir).exists() {
            return Err(Error::Exists);
        }
        if packs_hold_records(dir)? {
            // A store whose database was lost: a new one would hide its
            // history (and `check --repair` brings it back).
            return Err(Error::IndexDamaged(
                "the database folder db/ is missing".into(),
            ));
        }
        if !private::holds_only_store_names(dir)? {
            return Err(Error::Request(format!(
                "{} is not empty and holds no store: make the store in a new or empty folder",
                dir.display()
            )));
        }
        private::create_dir(dir)?;
        let _open = OpenLock::take(dir)?;
        finish_interrupted_swap(dir)?;
        if db_dir(dir).exists() || db_new(dir).exists() || db_old(dir).exists() {
            return Err(Error::Exists);
        }
        let key = Self::key_for_new_store(dir)?;
        private::create_dir(&db_dir(dir))?;
        let kv = sled_kv::SledKv::open(&db_dir(dir), opts.cache_bytes)?;
        let mut b = Batch::default();
        b.put(Space::Meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
        kv.apply(b)?;
        kv.flush()?;
        private::tighten(dir)?;
        Self::finish_open(dir, Arc::new(overlay_kv::OverlayKv::new(kv)), key, opts)
    }

    /// The key in `dir/node.key`, made and written if there is none.
    fn key_for_new_store(dir: &Path) -> Result<NodeKey> {
        match keyfile::read(dir)? {
            Some(key) => Ok(key),
            None => {
                let key = NodeKey::generate()?;
                keyfile::write(dir, &key)?;
                Ok(key)
            }
        }
    }

    /// Opens the store in `dir`. `Err(NotFound)` if there is none.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, Options::default())
    }

    /// [`Store::open`] with options. A store of an earlier format is
    /// upgraded in place, and one readable by others made private.
    pub fn open_with(dir: &Path, opts: Options) -> Result<Store> {
        if !dir.is_dir() {
            return Err(Error::NotFound);
        }
        let _open = OpenLock::take(dir)?;
        finish_interrupted_swap(dir)?;
        if !db_dir(dir).is_dir() {
            return Err(if packs_hold_records(dir)? {
                Error::IndexDamaged("the database folder db/ is missing".into())
            } else {
                Error::NotFound
            });
        }
        let mut kv = open_engine(dir, opts.cache_bytes)?;
        let format = format_of(&kv)?;
        // Only a database that proved itself replaces the leftovers: an
        // empty or foreign `db/` must never cost the copies beside it.
        remove_upgrade_leftovers(dir)?;
        let (key, legacy) = keyfile::resolve(dir, &kv)?;
        if format < 4 {
            // Before format 4 the packs held chunks only. Written (and
            // synced) before the format says 4, so a crash here repeats
            // this step rather than skip it.
            let packs = Packs::open(&dir.join("packs"))?;
            let n = mirror::write_all(&packs, &kv)?;
            tracing::info!(records = n, "wrote the tree nodes and commits to the packs");
        }
        if legacy || format < 3 {
            // The old key must leave sled's files: a rewritten copy.
            kv = upgrade_sled(dir, kv, opts.cache_bytes)?;
        } else if format < FORMAT_VERSION {
            // Nothing to remove: the new format number, in place.
            kv.apply(upgrade_batch())?;
            kv.flush()?;
            tracing::info!(store = %dir.display(), format = FORMAT_VERSION, "upgraded the store");
        }
        tighten_logged(dir)?;
        Self::finish_open(dir, Arc::new(overlay_kv::OverlayKv::new(kv)), key, opts)
    }

    /// Opens a store over any engine, packs and key in `dir` (tests use
    /// this with [`mem_kv::MemKv`]). Initialises the metadata if the
    /// engine is empty.
    pub fn with_engine(dir: &Path, kv: Arc<dyn Kv>, opts: Options) -> Result<Store> {
        private::create_dir(dir)?;
        if kv.get(Space::Meta, META_FORMAT)?.is_none() {
            Self::key_for_new_store(dir)?;
            let mut b = Batch::default();
            b.put(Space::Meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
            kv.apply(b)?;
        }
        let format = format_of(kv.as_ref())?;
        let (key, legacy) = keyfile::resolve(dir, kv.as_ref())?;
        if format < 4 {
            mirror::write_all(&Packs::open(&dir.join("packs"))?, kv.as_ref())?;
        }
        if legacy || format < FORMAT_VERSION {
            kv.apply(upgrade_batch())?;
        }
        Self::finish_open(dir, kv, key, opts)
    }

    fn finish_open(dir: &Path, kv: Arc<dyn Kv>, key: NodeKey, opts: Options) -> Result<Store> {
        let id = key.node_id();
        // One gate for every write: pack appends and engine batches alike.
        let gate = opts
            .gate
            .clone()
            .unwrap_or_else(|| Arc::new(space_gate::SpaceGate::for_dir(dir, opts.reserve_bytes)));
        let mut packs = Packs::open(&dir.join("packs"))?;
        packs.set_gate(gate.clone());
        kv.guard_with(gate);
        let packs = Arc::new(packs);
        // The chunk index names pack bytes: it reaches the disk only after
        // they do, so after any crash every indexed chunk is whole (what a
        // crash leaves past the synced end of a pack is named by nothing,
        // and later appends go after it).
        // Tree nodes and commits reach the packs the same way, before the
        // engine holds them ([`mirror`]).
        let synced = packs.clone();
        let clock = mirror::clock_of(kv.as_ref())?;
        kv.before_handing_down(Box::new(move |batch| {
            mirror::write_batch(&synced, batch, clock)?;
            synced.sync().map(|_| ())
        }));
        let missing_any = !kv.scan(Space::Missing, &[], None, 1)?.is_empty();
        let store = Store {
            dir: dir.to_path_buf(),
            kv,
            packs,
            key,
            id,
            appending: RwLock::new(()),
            verified: verify::Verified::default(),
            quarantining: Mutex::new(()),
            missing_any: AtomicBool::new(missing_any),
            wanted: crate::heal::Wanted::default(),
        };
        if missing_any {
            store.wanted.want_all(store.missing_chunks()?);
        }
        Ok(store)
    }

    /// Runs `tidy` if no process holds the store at `dir` open (a node
    /// that died left its socket behind), and says whether it ran. Asked
    /// under the open lock, so an open racing this waits for it rather
    /// than failing on the engine lock it tries, and a node that holds
    /// the store keeps what it made (its new socket).
    ///
    /// Errors: I/O errors taking the locks; `Ok(false)` for no store.
    pub fn tidy_if_unheld(dir: &Path, tidy: impl FnOnce()) -> Result<bool> {
        if !db_dir(dir).is_dir() {
            return Ok(false);
        }
        let _open = OpenLock::take(dir)?;
        if sled_kv::is_held(&db_dir(dir))? {
            return Ok(false);
        }
        tidy();
        Ok(true)
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
        if self.missing_any.load(Ordering::SeqCst)
            && txn.get(Space::Missing, hash.as_bytes())?.is_some()
        {
            // A good copy again: a quarantined or unobtainable chunk healed.
            txn.remove(Space::Missing, hash.as_bytes().to_vec());
        }
        Ok(hash)
    }

    /// See [`Packs::has_ample_room`].
    pub fn has_ample_room(&self, bytes: u64) -> Result<bool> {
        self.packs.has_ample_room(bytes)
    }

    /// Stores a chunk whose hash the caller verified, index entry
    /// included, at once (for writers outside the vfs lock: a pull).
    /// A chunk that was wanted back ([`Store::wanted`]) is healed.
    pub fn put_verified_chunk(&self, data: &[u8], hash: Hash) -> Result<()> {
        {
            let _gate = self.appending.read().unwrap_or_else(|p| p.into_inner());
            let mut txn = Txn::new(self.kv());
            self.put_hashed_chunk(&mut txn, data, hash)?;
            txn.commit()?;
        }
        if self.wanted.contains(&hash) {
            tracing::info!(chunk = %hash, "a wanted chunk is stored again: healed");
            self.wanted.healed(&hash);
        }
        Ok(())
    }

    /// The chunks this node wants back from its peers: what the peer
    /// manager serves, and what a reader that met a bad chunk waits on.
    pub fn wanted(&self) -> &crate::heal::Wanted {
        &self.wanted
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
