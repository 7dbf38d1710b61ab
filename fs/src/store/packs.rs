//! Append-only pack files beside the key-value engine: the store's truth.
//!
//! sled 0.34 writes values over ~128 KiB as blob files it never fsyncs, and
//! large values bloat its log, so chunk bytes live here and only their
//! location lives in the index. Tree nodes and commit records are written
//! here too (format 4), beside their copies in the engine, so the engine
//! can be rebuilt from the packs alone (`check/rebuild.rs`). A pack is a
//! sequence of records:
//!
//! ```text
//! magic | length u32 LE | hash (32 bytes) | bytes
//! magic "BKC1": a chunk;     hash = blake3(bytes)
//!       "BKN1": a tree node; hash = its node hash (dir or content domain)
//!       "BKG1": a commit record ([`commit_record`]); hash = blake3(bytes)
//! ```
//!
//! The header makes a pack self-describing: every record's kind, length
//! and hash read without the index, and every record's bytes can be
//! checked against its hash, so the index can be checked (and rebuilt)
//! from the packs alone. Bytes are written with `write(2)` before
//! the index entry naming them is applied, so a `kill -9` never leaves an
//! index entry without its bytes; [`Packs::sync`] fsyncs them before the
//! engine's durable flush, so a power loss does not either.

pub mod commit_record;
mod scan;
pub use scan::{Damage, Record};

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::space_gate::SpaceGate;
use crate::error::{Error, Result};
use crate::hash::Hash;

/// Bytes before a chunk's data in its record.
pub const RECORD_HEADER: u64 = 4 + 4 + 32;

/// What a pack record holds; its magic says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// File bytes, named by their blake3 hash.
    Chunk,
    /// A tree node (directory or content list), named by its node hash.
    Node,
    /// A commit record ([`commit_record`]), named by its blake3 hash.
    Commit,
}

impl RecordKind {
    /// The magic that starts a record of this kind.
    pub fn magic(self) -> &'static [u8; 4] {
        match self {
            RecordKind::Chunk => b"BKC1",
            RecordKind::Node => b"BKN1",
            RecordKind::Commit => b"BKG1",
        }
    }

    /// The kind a record starting with `magic` has.
    pub fn of_magic(magic: &[u8]) -> Option<RecordKind> {
        [RecordKind::Chunk, RecordKind::Node, RecordKind::Commit]
            .into_iter()
            .find(|k| k.magic().as_slice() == magic)
    }

    /// Whether `bytes` are what a record of this kind named `hash` holds.
    pub fn verify(self, hash: &Hash, bytes: &[u8]) -> bool {
        match self {
            RecordKind::Chunk | RecordKind::Commit => Hash::of(bytes) == *hash,
            RecordKind::Node => {
                crate::tree::dir::verify_node(hash, bytes)
                    || crate::tree::content::verify_node(hash, bytes)
            }
        }
    }
}
/// A pack is closed and a new one started past this size: small enough
/// that GC can rewrite one cheaply, large enough to keep file counts low.
pub const PACK_TARGET_SIZE: u64 = 256 * 1024 * 1024;
/// Writes are refused (ENOSPC) when the disk holding the store has less
/// free space than this, so the engine never meets a full disk (sled makes
/// its first I/O error sticky): see [`super::space_gate`].
pub const DEFAULT_RESERVE: u64 = 64 * 1024 * 1024;
/// The margin above the reserve that [`Packs::has_ample_room`] asks for.
pub const AMPLE: u64 = 1 << 30;

/// How many appended bytes may wait in the page cache before we ask the
/// kernel to start writing them: a later fsync then has little left to do
/// (as a file written through would), instead of the whole file at once.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// Starts (does not wait for) writeback of a range: Linux's
/// sync_file_range(SYNC_FILE_RANGE_WRITE). Elsewhere the final fsync does
/// all the work.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd and a range; the call only schedules I/O.
        // Its result is advisory: failure leaves the work to fsync.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Where a chunk's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack number.
    pub pack: u32,
    /// Offset of the chunk's first byte (after the record header).
    pub offset: u64,
    /// Chunk length in bytes.
    pub len: u32,
}

impl Location {
    /// The 16-byte index encoding.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.pack.to_be_bytes());
        b[4..12].copy_from_slice(&self.offset.to_be_bytes());
        b[12..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Decodes [`Location::encode`]'s bytes.
    pub fn decode(b: &[u8]) -> Result<Location> {
        if b.len() != 16 {
            return Err(Error::corrupt("chunk location of wrong length"));
        }
        Ok(Location {
            pack: u32::from_be_bytes(b[..4].try_into().expect("4 bytes")),
            offset: u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(b[12..].try_into().expect("4 bytes")),
        })
    }
}

struct Writer {
    id: u32,
    /// Shared so a sync can fsync it without holding the writer.
    file: Arc<File>,
    len: u64,
    /// Bytes before this offset of the active pack are on their way to
    /// the disk (writeback started).
    started: u64,
    /// Packs written since the last sync (the active one included).
    unsynced: Vec<u32>,
    /// A pack file was created since the last sync: its directory entry
    /// must be made durable too.
    dir_unsynced: bool,
    /// An fsync of a pack failed. Linux reports a writeback error to a
    /// file once, so a later fsync would succeed with the bytes lost:
    /// every later sync fails instead (the node must be restarted).
    sync_failed: bool,
}

/// The pack files of a store.
pub struct Packs {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// One sync at a time: a sync that found nothing left to do must not
    /// return while another one's fsyncs are still running.
    syncing: Mutex<()>,
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// The store's free-space gate, shared with its engine.
    gate: Arc<SpaceGate>,
}

fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

/// Sizes of the file system holding a path, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Total size.
    pub total: u64,
    /// Free bytes.
    pub free: u64,
    /// Free bytes for unprivileged writers.
    pub avail: u64,
    /// Free inodes.
    pub files_free: u64,
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_space(path: &Path) -> Result<u64> {
    Ok(disk_space(path)?.avail)
}

/// The sizes of the file system holding `path` (statvfs).
pub fn disk_space(path: &Path) -> Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument("path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to
    // writable memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io("statvfs", std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ by platform
    let frsize = st.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    Ok(DiskSpace {
        total: st.f_blocks as u64 * frsize,
        free: st.f_bfree as u64 * frsize,
        avail: st.f_bavail as u64 * frsize,
        files_free: st.f_favail as u64,
    })
}

impl Packs {
    /// Opens the packs in `dir` (creating it), appending to the newest.
    pub fn open(dir: &Path) -> Result<Packs> {
        super::private::create_dir(dir)?;
        let mut newest = 0u32;
        for ent in std::fs::read_dir(dir).map_err(|e| Error::io("list packs", e))? {
            let ent = ent.map_err(|e| Error::io("list packs", e))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".pack")
                .and_then(|n| n.parse::<u32>().ok())
            {
                newest = newest.max(n);
            }
        }
        let id = newest.max(1);
        let (file, len) = Self::open_for_append(dir, id)?;
        Ok(Packs {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                id,
                file: Arc::new(file),
                len,
                started: len,
                unsynced: vec![],
                dir_unsynced: true,
                sync_failed: false,
            }),
            syncing: Mutex::new(()),
            readers: Mutex::new(HashMap::new()),
            gate: Arc::new(SpaceGate::for_dir(dir, DEFAULT_RESERVE)),
        })
    }

    /// Sets the free-space reserve below which appends fail with ENOSPC
    /// (a gate of the packs' own).
    pub fn set_reserve(&mut self, bytes: u64) {
        self.gate = Arc::new(SpaceGate::for_dir(&self.dir, bytes));
    }

    /// Makes appends pass `gate` (the store's, shared with its engine).
    pub fn set_gate(&mut self, gate: Arc<SpaceGate>) {
        self.gate = gate;
    }

    fn open_for_append(dir: &Path, id: u32) -> Result<(File, u64)> {
        let path = pack_path(dir, id);
        let file = super::private::open_options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat pack", e))?
            .len();
        Ok((file, len))
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The free-space reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.gate.reserve()
    }

    /// The folder the packs are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one chunk and returns where it is. The bytes are handed to
    /// the kernel before this returns (they survive the process dying),
    /// and reach the disk at the next [`Packs::sync`].
    pub fn append(&self, hash: &Hash, data: &[u8]) -> Result<Location> {
        self.append_record(RecordKind::Chunk, hash, data)
    }

    /// Appends one record of `kind` (see [`Packs::append`]). A tree node
    /// or commit record reaches the disk at the next [`Packs::sync`],
    /// which the store runs before the engine's copy is handed down.
    pub fn append_record(&self, kind: RecordKind, hash: &Hash, data: &[u8]) -> Result<Location> {
        let len =
            u32::try_from(data.len()).map_err(|_| Error::InvalidArgument("chunk over 4 GiB"))?;
        let mut w = self.lock_writer();
        let need = RECORD_HEADER + data.len() as u64;
        self.gate.admit(need)?;
        if w.len > 0 && w.len + need > PACK_TARGET_SIZE {
            Self::next_pack(&self.dir, &mut w)?;
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        header[..4].copy_from_slice(kind.magic());
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..].copy_from_slice(hash.as_bytes());
        let start = w.len;
        // Two writes, not one of a copied record: a chunk's bytes go to
        // the kernel once (the file is O_APPEND and the writer is locked).
        let mut file = &*w.file;
        let written = file.write_all(&header).and_then(|()| file.write_all(data));
        if let Err(e) = written {
            // A short write leaves a torn record at the end; later appends
            // go after it, and no index entry names it.
            w.len = w.file.metadata().map(|m| m.len()).unwrap_or(start);
            return Err(Error::io("append to pack", e));
        }
        w.len = start + need;
        if w.len - w.started >= WRITEBACK_EVERY {
            start_writeback(&w.file, w.started, w.len - w.started);
            w.started = w.len;
        }
        let id = w.id;
        if !w.unsynced.contains(&id) {
            w.unsynced.push(id);
        }
        Ok(Location {
            pack: id,
            offset: start + RECORD_HEADER,
            len,
        })
    }

    /// Whether `bytes` more chunk bytes can be stored later with a wide
    /// margin: free space, read now, above the reserve by [`AMPLE`] plus
    /// 16 times `bytes`. A close leaves its fold to the release only then
    /// (several closes at once cannot realistically meet a full disk
    /// before their releases); otherwise it folds at once and reports
    /// ENOSPC itself.
    pub fn has_ample_room(&self, bytes: u64) -> Result<bool> {
        let free = self.gate.free_now()?;
        Ok(free
            >= self
                .reserve()
                .saturating_add(AMPLE)
                .saturating_add(bytes.saturating_mul(16)))
    }

    /// fsyncs every pack written since the last sync and returns the
    /// position (pack id, length) up to which every pack byte is now
    /// durable. The fsyncs run without holding the writer, so appends go
    /// on meanwhile (a commit's sync used to stall a streaming write for
    /// as long as the disk took); those appends are past the returned
    /// position and wait for the next sync.
    pub fn sync(&self) -> Result<(u32, u64)> {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (ids, head, files, dir) = {
            let mut w = self.lock_writer();
            if w.sync_failed {
                return Err(Error::io(
                    "fsync pack",
                    std::io::Error::other(
                        "an earlier fsync of a pack failed; check the disk and restart",
                    ),
                ));
            }
            let ids = std::mem::take(&mut w.unsynced);
            let files: Vec<Arc<File>> = ids
                .iter()
                .map(|&id| {
                    if id == w.id {
                        Ok(w.file.clone())
                    } else {
                        self.reader(id)
                    }
                })
                .collect::<Result<_>>()
                .inspect_err(|_| w.unsynced.clone_from(&ids))?;
            let dir = std::mem::take(&mut w.dir_unsynced);
            (ids, (w.id, w.len), files, dir)
        };
        let mut synced = files.iter().try_for_each(|f| f.sync_data());
        if synced.is_ok() && dir {
            // A new pack's name must survive too, or the index names a
            // file that a power loss took away.
            synced = File::open(&self.dir).and_then(|d| d.sync_all());
        }
        if let Err(e) = synced {
            let mut w = self.lock_writer();
            w.sync_failed = true;
            w.unsynced.extend(ids);
            w.dir_unsynced |= dir;
            return Err(Error::io("fsync pack", e));
        }
        Ok(head)
    }

    /// Closes the active pack and starts the next one, so a collection can
    /// rewrite what was active. Returns the new active pack's id.
    pub fn seal(&self) -> Result<u32> {
        let mut w = self.lock_writer();
        if w.len > 0 {
            Self::next_pack(&self.dir, &mut w)?;
        }
        Ok(w.id)
    }

    /// Switches the writer to a new pack after the active one.
    fn next_pack(dir: &Path, w: &mut Writer) -> Result<()> {
        let id = w.id + 1;
        let (file, len) = Self::open_for_append(dir, id)?;
        let old = w.id;
        if !w.unsynced.contains(&old) {
            w.unsynced.push(old);
        }
        w.id = id;
        w.file = Arc::new(file);
        w.len = len;
        w.started = len;
        w.dir_unsynced = true;
        Ok(())
    }

    /// The active pack and its length: everything before is written.
    pub fn head(&self) -> (u32, u64) {
        let w = self.lock_writer();
        (w.id, w.len)
    }

    /// The length of pack `id` on disk (0 if it does not exist).
    pub fn pack_len(&self, id: u32) -> Result<u64> {
        match std::fs::metadata(pack_path(&self.dir, id)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("stat pack", e)),
        }
    }

    /// Deletes the closed pack `id` (a collection copied out what it
    /// still held). Reads already under way finish on the open file.
    pub fn remove(&self, id: u32) -> Result<()> {
        if id >= self.head().0 {
            return Err(Error::InvalidArgument("the active pack cannot be removed"));
        }
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match std::fs::remove_file(pack_path(&self.dir, id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove pack", e)),
        }
    }

    fn reader(&self, id: u32) -> Result<Arc<File>> {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = readers.get(&id) {
            return Ok(f.clone());
        }
        let path = pack_path(&self.dir, id);
        let f = Arc::new(
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?,
        );
        readers.insert(id, f.clone());
        Ok(f)
    }

    /// Reads `buf.len()` bytes of the chunk at `loc`, starting `skip` bytes
    /// into it, unchecked: private to the store, whose readers check
    /// every chunk against its hash (`store/verify.rs`).
    pub(super) fn read_at(&self, loc: &Location, skip: u64, buf: &mut [u8]) -> Result<()> {
        if skip + buf.len() as u64 > u64::from(loc.len) {
            return Err(Error::InvalidArgument("read past the end of a chunk"));
        }
        let f = self.reader(loc.pack)?;
        f.read_exact_at(buf, loc.offset + skip).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(format!("pack {} shorter than its index", loc.pack))
            } else {
                Error::io("read pack", e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        let a = b"hello chunk".to_vec();
        let h = Hash::of(&a);
        let loc = packs.append(&h, &a).unwrap();
        // The durable position covers everything appended before the sync.
        assert_eq!(
            packs.sync().unwrap(),
            (loc.pack, RECORD_HEADER + a.len() as u64)
        );
        let mut whole = vec![0u8; a.len()];
        packs.read_at(&loc, 0, &mut whole).unwrap();
        assert_eq!(whole, a);
        let mut part = [0u8; 5];
        packs.read_at(&loc, 6, &mut part).unwrap();
        assert_eq!(&part, b"chunk");
        assert!(packs.read_at(&loc, 8, &mut part).is_err());
        drop(packs);
        let packs = Packs::open(dir.path()).unwrap();
        assert_eq!(packs.head().1, RECORD_HEADER + a.len() as u64);
        packs.read_at(&loc, 0, &mut whole).unwrap();
        assert_eq!(whole, a);
    }

    #[test]
    fn appends_go_on_while_a_sync_runs() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let h = Hash::of(&chunk);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                (0..200)
                    .map(|_| packs.append(&h, &chunk).unwrap())
                    .collect::<Vec<_>>()
            });
            let mut last = (0, 0);
            while !writer.is_finished() {
                let now = packs.sync().unwrap();
                assert!(now >= last, "the durable position never goes back");
                assert!(now <= packs.head());
                last = now;
            }
            let locs = writer.join().unwrap();
            // A final sync covers every append.
            let end = packs.sync().unwrap();
            let l = locs.last().unwrap();
            assert_eq!(end, (l.pack, l.offset + u64::from(l.len)));
        });
    }

    #[test]
    fn reserve_refuses_writes_with_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let mut packs = Packs::open(dir.path()).unwrap();
        packs.set_reserve(u64::MAX / 2);
        let err = packs.append(&Hash::of(b"x"), b"x").unwrap_err();
        assert_eq!(err.errno(), libc::ENOSPC);
    }
}
