//! The one door of chunk bytes: every chunk read (the mount, the snapshot
//! view, export, restore, a peer's request, a collection's copy) goes
//! through [`Store::read_chunk`] or [`Store::read_chunk_range`], which
//! check the bytes against the chunk's blake3 hash before anyone uses
//! them. The pack reads underneath are private to the store, so no reader
//! can skip the check.
//!
//! Only bytes verified in this process and still held in memory skip
//! re-hashing: a small cache of whole chunks that a read used only in
//! part (a sequential read whose requests straddle chunk boundaries reads
//! and hashes each chunk once). A cold read after a restart hashes again.
//! blake3 runs at ~4.5 GB/s per core here, several times what a mount
//! reads at.
//!
//! A copy that fails its check is quarantined: its index entry moves from
//! [`Space::Chunks`] to [`Space::Missing`] in one batch, so the store no
//! longer claims the chunk (a pull fetches it again, a write of the same
//! bytes stores a new copy) and collections count its bytes as dead. One
//! log line names the chunk; the reader gets [`Error::BadChunk`] (`EIO`),
//! never the bytes.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::kv::{for_each, Batch, Space};
use super::packs::Location;
use super::Store;
use crate::error::{Error, Result};
use crate::hash::Hash;

/// Bytes of verified chunks kept in memory (32 chunks of the largest size).
const CACHE_BYTES: usize = 8 << 20;

/// Whole chunks verified in this process, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    chunks: Mutex<VecDeque<(Hash, Arc<Vec<u8>>)>>,
}

impl Verified {
    fn get(&self, hash: &Hash) -> Option<Arc<Vec<u8>>> {
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks
            .iter()
            .rev()
            .find(|(h, _)| h == hash)
            .map(|(_, b)| b.clone())
    }

    fn put(&self, hash: Hash, bytes: Arc<Vec<u8>>) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.iter().any(|(h, _)| *h == hash) {
            return;
        }
        chunks.push_back((hash, bytes));
        let mut total: usize = chunks.iter().map(|(_, b)| b.len()).sum();
        while total > CACHE_BYTES {
            match chunks.pop_front() {
                Some((_, b)) => total -= b.len(),
                None => break,
            }
        }
    }

    fn forget(&self, hash: &Hash) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.retain(|(h, _)| h != hash);
    }
}

/// Why a read of a copy failed.
enum Fault {
    /// The copy is damaged: its bytes fail the hash, the pack is shorter
    /// than the index says, or the disk reports an I/O error there.
    Bad(String),
    /// Anything else (the copy may be fine): passed on as it is.
    Other(Error),
}

/// Copies `skip..skip + dst.len()` of `bytes` into `dst`.
fn copy_range(bytes: &[u8], skip: u64, dst: &mut [u8]) -> Result<()> {
    let src = usize::try_from(skip)
        .ok()
        .and_then(|s| bytes.get(s..s.checked_add(dst.len())?))
        .ok_or_else(|| Error::corrupt("a read past the end of a chunk"))?;
    dst.copy_from_slice(src);
    Ok(())
}

impl Store {
    /// A whole chunk, checked against its hash. [`Error::BadChunk`] when
    /// the store does not hold a good copy (the bad one is quarantined).
    pub fn read_chunk(&self, hash: &Hash) -> Result<Vec<u8>> {
        if let Some(b) = self.verified.get(hash) {
            return Ok(b.to_vec());
        }
        let loc = self.locate(hash)?;
        let mut buf = vec![0u8; loc.len as usize];
        self.fill(hash, loc, &mut buf)?;
        Ok(buf)
    }

    /// `dst.len()` bytes of the chunk `hash`, from `skip` bytes into it,
    /// checked against its hash (the whole chunk is read and hashed; one
    /// used in part is kept in memory for the reads that follow). `hint`
    /// is where the caller last saw it; a chunk moved since is looked up
    /// again.
    pub fn read_chunk_range(
        &self,
        hash: &Hash,
        hint: Option<Location>,
        skip: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        if let Some(b) = self.verified.get(hash) {
            return copy_range(&b, skip, dst);
        }
        let loc = match hint {
            Some(l) => l,
            None => self.locate(hash)?,
        };
        if skip == 0 && dst.len() == loc.len as usize {
            // The whole chunk: read and hash it in place, no copy.
            return self.fill(hash, loc, dst);
        }
        let mut buf = vec![0u8; loc.len as usize];
        self.fill(hash, loc, &mut buf)?;
        copy_range(&buf, skip, dst)?;
        self.verified.put(*hash, Arc::new(buf));
        Ok(())
    }

    /// Whether the store holds a copy of `hash` that reads back whole and
    /// matches it (quarantining it if not). Reads the disk even when the
    /// chunk is in memory: this is what a check asks.
    pub fn verify_chunk(&self, hash: &Hash) -> Result<bool> {
        let Some(loc) = self.chunk_location(hash)? else {
            return Ok(false);
        };
        let mut buf = vec![0u8; loc.len as usize];
        match self.fill(hash, loc, &mut buf) {
            Ok(()) => Ok(true),
            Err(Error::BadChunk(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The index's location of `hash`, or [`Error::BadChunk`].
    fn locate(&self, hash: &Hash) -> Result<Location> {
        self.chunk_location(hash)?.ok_or(Error::BadChunk(*hash))
    }

    /// Reads the chunk at `loc` into `buf` and checks it. A chunk that a
    /// collection moved since the caller located it (and whose old pack
    /// may be gone) is looked up again, once; a copy the index still
    /// names there that fails is quarantined.
    fn fill(&self, hash: &Hash, mut loc: Location, buf: &mut [u8]) -> Result<()> {
        let mut looked_again = false;
        loop {
            let fault = match self.read_checked(hash, &loc, buf) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            match self.chunk_location(hash)? {
                Some(now) if now != loc && !looked_again => {
                    looked_again = true;
                    loc = now;
                }
                Some(now) if now == loc => {
                    return match fault {
                        Fault::Bad(why) => {
                            self.quarantine(hash, loc, &why)?;
                            Err(Error::BadChunk(*hash))
                        }
                        Fault::Other(e) => Err(e),
                    };
                }
                // Quarantined or collected meanwhile.
                None => return Err(Error::BadChunk(*hash)),
                Some(_) => {
                    return Err(match fault {
                        Fault::Bad(why) => Error::corrupt(format!("chunk {hash}: {why}")),
                        Fault::Other(e) => e,
                    })
                }
            }
        }
    }

    /// One read of the copy at `loc` into `buf`, checked.
    fn read_checked(&self, hash: &Hash, loc: &Location, buf: &mut [u8]) -> Result<(), Fault> {
        if buf.len() != loc.len as usize {
            return Err(Fault::Bad(format!(
                "the index says {} bytes, the chunk has {}",
                loc.len,
                buf.len()
            )));
        }
        if let Err(e) = self.packs.read_at(loc, 0, buf) {
            return Err(match e {
                Error::Corrupt(why) => Fault::Bad(why),
                Error::Io { ref source, .. }
                    if source.raw_os_error() == Some(libc::EIO)
                        || source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Fault::Bad(e.to_string())
                }
                e => Fault::Other(e),
            });
        }
        if Hash::of(buf) != *hash {
            return Err(Fault::Bad("the bytes do not match the hash".into()));
        }
        Ok(())
    }

    /// Quarantines the copy of `hash` at `loc`, if the index still names
    /// it there: the index no longer claims the chunk and
    /// [`Space::Missing`] records where the bad copy was. Logs one line.
    pub(crate) fn quarantine(&self, hash: &Hash, loc: Location, why: &str) -> Result<()> {
        let _one = self.quarantining.lock().unwrap_or_else(|p| p.into_inner());
        if self.chunk_location(hash)? != Some(loc) {
            return Ok(()); // someone else did, or it moved
        }
        let mut b = Batch::default();
        b.remove(Space::Chunks, hash.as_bytes().to_vec());
        b.put(
            Space::Missing,
            hash.as_bytes().to_vec(),
            loc.encode().to_vec(),
        );
        self.kv.apply(b)?;
        self.missing_any.store(true, Ordering::SeqCst);
        self.verified.forget(hash);
        self.wanted.want(*hash);
        tracing::error!(
            chunk = %hash,
            pack = loc.pack,
            offset = loc.offset,
            why,
            "a chunk failed its check: quarantined (it is read as missing until a good copy comes)"
        );
        Ok(())
    }

    /// Why the copy of `hash` at `loc` is bad, if it is (read from the
    /// disk and hashed; nothing is quarantined: what a check without
    /// `--repair` asks).
    pub(crate) fn probe(&self, hash: &Hash, loc: &Location) -> Result<Option<String>> {
        let mut buf = vec![0u8; loc.len as usize];
        match self.read_checked(hash, loc, &mut buf) {
            Ok(()) => Ok(None),
            Err(Fault::Bad(why)) => Ok(Some(why)),
            Err(Fault::Other(e)) => Err(e),
        }
    }

    /// Points the index entry of `hash` at the good copy `new`, if the
    /// entry is still `expected` (`None`: absent); the chunk is no longer
    /// missing. Returns whether it did.
    pub(crate) fn reindex(
        &self,
        hash: &Hash,
        expected: Option<Location>,
        new: Location,
    ) -> Result<bool> {
        let _one = self.quarantining.lock().unwrap_or_else(|p| p.into_inner());
        if self.chunk_location(hash)? != expected {
            return Ok(false);
        }
        let mut b = Batch::default();
        b.put(
            Space::Chunks,
            hash.as_bytes().to_vec(),
            new.encode().to_vec(),
        );
        b.remove(Space::Missing, hash.as_bytes().to_vec());
        self.kv.apply(b)?;
        self.wanted.healed(hash);
        tracing::info!(chunk = %hash, pack = new.pack, offset = new.offset, "a chunk's index entry was rebuilt from the packs");
        Ok(true)
    }

    /// Stores the chunk at `loc` (whose bytes check out but whose record
    /// header does not) again as a whole new record, and points the index
    /// at it if it still names `loc`. Returns whether it did.
    pub(crate) fn rewrite_record(&self, hash: &Hash, loc: Location) -> Result<bool> {
        let mut buf = vec![0u8; loc.len as usize];
        if self.read_checked(hash, &loc, &mut buf).is_err() {
            return Ok(false);
        }
        let _gate = self.appending.read().unwrap_or_else(|p| p.into_inner());
        let new = self.packs.append(hash, &buf)?;
        self.reindex(hash, Some(loc), new)
    }

    /// Records that no peer could supply `hash`, which a tree here names
    /// (unless the store holds it after all).
    pub fn record_missing(&self, hash: &Hash) -> Result<()> {
        let _one = self.quarantining.lock().unwrap_or_else(|p| p.into_inner());
        if self.chunk_location(hash)?.is_some()
            || self.kv.get(Space::Missing, hash.as_bytes())?.is_some()
        {
            return Ok(());
        }
        let mut b = Batch::default();
        b.put(Space::Missing, hash.as_bytes().to_vec(), Vec::new());
        self.kv.apply(b)?;
        self.missing_any.store(true, Ordering::SeqCst);
        self.wanted.want(*hash);
        Ok(())
    }

    /// Whether `hash` is recorded as missing ([`Space::Missing`]).
    pub fn is_missing(&self, hash: &Hash) -> Result<bool> {
        if !self.missing_any.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(self.kv.get(Space::Missing, hash.as_bytes())?.is_some())
    }

    /// Every chunk recorded as missing, in hash order: quarantined copies
    /// and chunks no peer could supply, not yet stored again.
    pub fn missing_chunks(&self) -> Result<Vec<Hash>> {
        let mut out = Vec::new();
        for_each(self.kv(), Space::Missing, &[], None, |k, _| {
            let h: [u8; 32] = k
                .try_into()
                .map_err(|_| Error::corrupt("a missing-chunk key of the wrong length"))?;
            out.push(Hash(h));
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Txn;

    /// A store holding one chunk, and the chunk's hash and location.
    fn one_chunk(data: &[u8]) -> (tempfile::TempDir, Store, Hash, Location) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let mut txn = Txn::new(store.kv());
        let h = store.put_chunk(&mut txn, data).unwrap();
        txn.commit().unwrap();
        store.flush_durable().unwrap();
        let loc = store.chunk_location(&h).unwrap().unwrap();
        (dir, store, h, loc)
    }

    fn flip(store: &Store, pack: u32, at: u64) {
        use std::os::unix::fs::FileExt;
        let path = store.packs().dir().join(format!("{pack:08}.pack"));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_never_read_and_the_copy_is_quarantined() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (_d, store, h, loc) = one_chunk(&data);
        let mut part = [0u8; 10];
        store.read_chunk_range(&h, None, 5, &mut part).unwrap();
        assert_eq!(&part, &data[5..15]);
        flip(&store, loc.pack, loc.offset + 50_000);
        // The verified copy in memory still serves (it was checked).
        store.read_chunk_range(&h, None, 5, &mut part).unwrap();
        assert_eq!(&part, &data[5..15]);
        // The whole-chunk reader and the check read the disk.
        assert!(!store.verify_chunk(&h).unwrap());
        assert_eq!(store.chunk_location(&h).unwrap(), None);
        assert_eq!(store.missing_chunks().unwrap(), vec![h]);
        assert!(matches!(store.read_chunk(&h), Err(Error::BadChunk(x)) if x == h));
        let mut all = vec![0u8; data.len()];
        let err = store.read_chunk_range(&h, Some(loc), 0, &mut all);
        assert!(matches!(err, Err(Error::BadChunk(_))));
        // Writing the same bytes again stores a good copy and clears the record.
        let mut txn = Txn::new(store.kv());
        store.put_chunk(&mut txn, &data).unwrap();
        txn.commit().unwrap();
        assert_eq!(store.read_chunk(&h).unwrap(), data);
        assert!(store.missing_chunks().unwrap().is_empty());
    }

    #[test]
    fn a_cold_partial_read_of_a_damaged_chunk_fails() {
        let data = vec![3u8; 70_000];
        let (_d, store, h, loc) = one_chunk(&data);
        flip(&store, loc.pack, loc.offset + 69_999);
        let mut part = [0u8; 10];
        let err = store.read_chunk_range(&h, Some(loc), 0, &mut part);
        assert!(matches!(err, Err(Error::BadChunk(_))));
        assert_eq!(store.missing_chunks().unwrap(), vec![h]);
        assert!(store.is_missing(&h).unwrap());
    }

    #[test]
    fn recorded_missing_chunks_are_listed_until_stored() {
        let (_d, store, h, _) = one_chunk(b"held");
        store.record_missing(&h).unwrap();
        assert!(
            store.missing_chunks().unwrap().is_empty(),
            "held: not missing"
        );
        let other = Hash::of(b"elsewhere");
        store.record_missing(&other).unwrap();
        assert_eq!(store.missing_chunks().unwrap(), vec![other]);
        let store = {
            let dir = store.dir().to_path_buf();
            drop(store);
            Store::open(&dir).unwrap()
        };
        assert!(store.is_missing(&other).unwrap());
        let mut txn = Txn::new(store.kv());
        store.put_chunk(&mut txn, b"elsewhere").unwrap();
        txn.commit().unwrap();
        assert!(!store.is_missing(&other).unwrap());
    }
}
