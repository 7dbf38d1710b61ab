//! [`Kv`] on sled 0.34: every keyspace is a one-byte prefix of one sled
//! tree, so a [`Batch`] across keyspaces is one atomic `apply_batch`.
//!
//! sled flushes itself every 500 ms by default; we turn that off and flush
//! on our own schedule, after the pack bytes the index names are fsynced
//! (DESIGN.md, "Ordering on disk").

use std::path::Path;

use super::kv::{prefix_end, Batch, KeyValue, Kv, Space};
use crate::error::{Error, Result};

/// sled's page cache bound. Its default is 1 GiB; a replica on a small
/// server must not pay that, and our hot metadata is far smaller.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long an open waits for another handle's lock to go away.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A [`Kv`] backed by a sled database in a folder.
pub struct SledKv {
    /// `None` while [`Kv::reopen`] could not open it again. Every call
    /// holds the lock for its length (reads share it), so a reopen, which
    /// takes it alone, knows no call still uses the old handle (a handle
    /// alive keeps sled's file lock).
    db: std::sync::RwLock<Option<sled::Db>>,
    dir: std::path::PathBuf,
    cache_bytes: u64,
    /// Flushes counted so far (`store/seal.rs`); held while a flush runs,
    /// so counts reach the engine and the seal file in order.
    flushes: std::sync::Mutex<u64>,
}

/// How long a reopen waits for the closed handle's lock to go away.
const REOPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn closed() -> Error {
    Error::io(
        "the storage engine is closed after an I/O error",
        std::io::Error::from_raw_os_error(libc::EIO),
    )
}

fn engine(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => Error::Locked,
        sled::Error::Io(io) => Error::io("sled", io),
        other => Error::Engine(Box::new(other)),
    }
}

fn to_sled(batch: Batch) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (space, k, v) in batch.ops {
        match v {
            Some(v) => b.insert(key(space, &k), v),
            None => b.remove(key(space, &k)),
        }
    }
    b
}

fn key(space: Space, k: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 1);
    v.push(space as u8);
    v.extend_from_slice(k);
    v
}

/// Whether a process holds the engine in `dir` open: sled keeps an
/// exclusive `flock` on `dir/db` while it is open. Tried without waiting
/// and let go at once (an open racing this one may fail on it: callers
/// hold the store's open lock).
///
/// Errors: I/O errors other than a missing engine (held by no one).
pub fn is_held(dir: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let path = dir.join("db");
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(false); // closing `f` lets go of it
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(true),
        _ => Err(Error::io(format!("lock {}", path.display()), e)),
    }
}

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    ///
    /// sled releases its file lock from background threads a moment after
    /// the last handle drops, so a reopen right after a close (a restart,
    /// a CLI command after a node stopped) retries briefly before calling
    /// the store [`Error::Locked`].
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledKv> {
        let db = Self::open_db(dir, cache_bytes, LOCK_WAIT)?;
        let seal_key = key(Space::Meta, super::seal::META_SEAL);
        let flushes = super::seal::decode(db.get(seal_key).map_err(engine)?.as_deref());
        Ok(SledKv {
            db: std::sync::RwLock::new(Some(db)),
            dir: dir.to_path_buf(),
            cache_bytes,
            flushes: std::sync::Mutex::new(flushes),
        })
    }

    /// How many flushes the database holds the count of (`store/seal.rs`).
    pub(crate) fn flushes(&self) -> u64 {
        *self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_db(dir: &Path, cache_bytes: u64, wait: std::time::Duration) -> Result<sled::Db> {
        let mut delay = std::time::Duration::from_millis(5);
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::open_once(dir, cache_bytes) {
                Err(Error::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Runs `f` on the open database (shared with other calls).
    fn with<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        let g = self.db.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(db) => f(db),
            None => Err(closed()),
        }
    }

    fn open_once(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                // sled reports a held lock as a generic I/O error on some
                // platforms: name it for the user either way.
                let msg = e.to_string();
                if msg.contains("lock")
                    || msg.contains("WouldBlock")
                    || msg.contains("Resource temporarily unavailable")
                {
                    Error::Locked
                } else {
                    engine(e)
                }
            })?;
        Ok(db)
    }

    /// Writes a copy of this database, with `changes` applied, into a new
    /// database in `to`, flushed; this one is left as it was. sled is
    /// log-structured: a removed value stays in its files until they are
    /// rewritten, and a secret (the node key of an earlier format) must
    /// leave them.
    pub fn copy_to(&self, to: &Path, changes: Batch, cache_bytes: u64) -> Result<()> {
        let copy = Self::open(to, cache_bytes)?;
        let g = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = g.as_ref().ok_or_else(closed)?;
        let copy_g = copy.db.read().unwrap_or_else(|p| p.into_inner());
        let copy_db = copy_g.as_ref().ok_or_else(closed)?;
        // Keys the changes write are not copied: a removed value must not
        // reach the copy's log even for a moment.
        let changed: std::collections::HashSet<Vec<u8>> = changes
            .ops
            .iter()
            .map(|(space, k, _)| key(*space, k))
            .collect();
        let mut batch = sled::Batch::default();
        for (n, item) in db.iter().enumerate() {
            let (k, v) = item.map_err(engine)?;
            if changed.contains(k.as_ref()) {
                continue;
            }
            batch.insert(k, v);
            if n % 10_000 == 9_999 {
                copy_db
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(engine)?;
            }
        }
        copy_db.apply_batch(batch).map_err(engine)?;
        copy_db.apply_batch(to_sled(changes)).map_err(engine)?;
        copy_db.flush().map_err(engine)?;
        Ok(())
    }
}

impl Kv for SledKv {
    fn get(&self, space: Space, k: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|db| Ok(db.get(key(space, k)).map_err(engine)?.map(|v| v.to_vec())))
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let full_prefix = key(space, prefix);
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(key(space, a)),
            _ => std::ops::Bound::Included(full_prefix.clone()),
        };
        let end = match prefix_end(&full_prefix) {
            Some(e) => std::ops::Bound::Excluded(e),
            None => std::ops::Bound::Unbounded,
        };
        self.with(|db| {
            let mut out = Vec::new();
            for item in db.range::<Vec<u8>, _>((start, end)).take(limit) {
                let (k, v) = item.map_err(engine)?;
                out.push((k[1..].to_vec(), v.to_vec()));
            }
            Ok(out)
        })
    }

    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>> {
        let full_prefix = key(space, prefix);
        self.with(|db| {
            let item = match prefix_end(&full_prefix) {
                Some(e) => db.range(full_prefix..e).next_back(),
                None => db.range(full_prefix..).next_back(),
            };
            match item {
                None => Ok(None),
                Some(r) => {
                    let (k, v) = r.map_err(engine)?;
                    Ok(Some((k[1..].to_vec(), v.to_vec())))
                }
            }
        })
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let b = to_sled(batch);
        self.with(|db| db.apply_batch(b).map_err(engine))
    }

    fn flush(&self) -> Result<()> {
        let mut count = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
        let next = *count + 1;
        self.with(|db| {
            let seal_key = key(Space::Meta, super::seal::META_SEAL);
            db.insert(seal_key, &next.to_be_bytes()[..])
                .map_err(engine)?;
            db.flush().map_err(engine).map(|_| ())
        })?;
        *count = next;
        // Durable: now the seal may say so (a failure only weakens the
        // check at the next open; the data is safe).
        if let Err(e) = super::seal::write(&self.dir, next) {
            tracing::warn!(error = %e, "cannot write the database's seal");
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.with(|db| db.size_on_disk().map_err(engine))
    }

    fn reopen(&self, replay: Vec<Batch>) -> Result<()> {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        // The old handle goes first: it holds sled's file lock (released
        // by sled's threads a moment later, which the open waits for).
        drop(g.take());
        let db = Self::open_db(&self.dir, self.cache_bytes, REOPEN_LOCK_WAIT)?;
        for b in replay {
            db.apply_batch(to_sled(b)).map_err(engine)?;
        }
        db.flush().map_err(engine)?;
        *g = Some(db);
        Ok(())
    }
}
