//! Reading a pack front to back by its own record headers, without the
//! index: what `backer check` verifies, and what an index can be rebuilt
//! from. A record whose header does not read (or whose length leads
//! nowhere) is skipped up to the next record that proves itself: a magic
//! of any kind, a header, and bytes that hash to the header's hash.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{pack_path, Location, Packs, RecordKind, RECORD_HEADER};
use crate::error::{Error, Result};
use crate::hash::Hash;

/// The longest record a scan believes a header about (chunks are at most
/// 256 KiB): a damaged length never makes it read far.
const MAX_RECORD: u64 = 16 << 20;

/// How much a search for the next record reads at a time.
const WINDOW: usize = 1 << 20;

/// One record found in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// What it holds (its magic).
    pub kind: RecordKind,
    /// The hash its header names.
    pub hash: Hash,
    /// Where its bytes are.
    pub loc: Location,
    /// Whether the bytes hash to `hash`.
    pub good: bool,
}

/// Bytes of a pack that hold no readable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damage {
    /// The pack.
    pub pack: u32,
    /// Where the unreadable bytes start.
    pub offset: u64,
    /// How many there are.
    pub len: u64,
}

impl Damage {
    /// Whether the record of the chunk at `loc` (header included) has
    /// bytes in this range.
    pub fn touches(&self, loc: &Location) -> bool {
        let start = loc.offset.saturating_sub(RECORD_HEADER);
        let end = loc.offset + u64::from(loc.len);
        self.pack == loc.pack && self.offset < end && start < self.offset + self.len
    }
}

impl Packs {
    /// The ids of the packs on disk, in order.
    pub fn ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for ent in std::fs::read_dir(&self.dir).map_err(|e| Error::io("list packs", e))? {
            let ent = ent.map_err(|e| Error::io("list packs", e))?;
            let name = ent.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                ids.push(n);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Reads the first `end` bytes of pack `id` (all of it if shorter) by
    /// its record headers: `record` hears every record, `damage` every
    /// range of bytes that holds none. Returns the bytes read; a pack
    /// removed meanwhile (a collection) reads as empty.
    pub fn scan(
        &self,
        id: u32,
        end: u64,
        mut record: impl FnMut(Record),
        damage: impl FnMut(Damage),
    ) -> Result<u64> {
        self.scan_bytes(id, end, |r, _| record(r), damage)
    }

    /// [`Packs::scan`], handing each record's bytes with it (checked
    /// against its hash when the record is `good`).
    pub fn scan_bytes(
        &self,
        id: u32,
        end: u64,
        mut record: impl FnMut(Record, &[u8]),
        mut damage: impl FnMut(Damage),
    ) -> Result<u64> {
        let path = pack_path(&self.dir, id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat pack", e))?
            .len();
        let end = end.min(size);
        let mut s = Scanner {
            file: &file,
            id,
            end,
            buf: Vec::new(),
        };
        let mut pos = 0u64;
        while pos < end {
            match s.record_at(pos)? {
                Some(r) if r.good || s.boundary(r.loc.offset + u64::from(r.loc.len))? => {
                    record(r, &s.buf);
                    pos = r.loc.offset + u64::from(r.loc.len);
                }
                _ => {
                    let next = s.next_good(pos + 1)?;
                    damage(Damage {
                        pack: id,
                        offset: pos,
                        len: next - pos,
                    });
                    pos = next;
                }
            }
        }
        Ok(end)
    }
}

struct Scanner<'a> {
    file: &'a File,
    id: u32,
    end: u64,
    buf: Vec<u8>,
}

impl Scanner<'_> {
    fn read(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| Error::io("read pack", e))
    }

    /// The record whose header is at `pos`, if one reads there (its
    /// bytes hashed: `good`).
    fn record_at(&mut self, pos: u64) -> Result<Option<Record>> {
        if pos + RECORD_HEADER > self.end {
            return Ok(None);
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        self.read(pos, &mut header)?;
        let Some(kind) = RecordKind::of_magic(&header[..4]) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let offset = pos + RECORD_HEADER;
        if u64::from(len) > MAX_RECORD || offset + u64::from(len) > self.end {
            return Ok(None);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&header[8..]);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len as usize, 0);
        let read = self.read(offset, &mut buf);
        let good = read.is_ok() && kind.verify(&Hash(hash), &buf);
        self.buf = buf;
        read?;
        Ok(Some(Record {
            kind,
            hash: Hash(hash),
            loc: Location {
                pack: self.id,
                offset,
                len,
            },
            good,
        }))
    }

    /// Whether a record may start at `pos`: the end, or a magic.
    fn boundary(&self, pos: u64) -> Result<bool> {
        if pos >= self.end {
            return Ok(pos == self.end);
        }
        if pos + 4 > self.end {
            return Ok(false);
        }
        let mut m = [0u8; 4];
        self.read(pos, &mut m)?;
        Ok(RecordKind::of_magic(&m).is_some())
    }

    /// The first position from `from` on where a good record starts, or
    /// the end.
    fn next_good(&mut self, from: u64) -> Result<u64> {
        let mut at = from;
        let mut window = vec![0u8; WINDOW];
        while at + 4 <= self.end {
            let n = (self.end - at).min(WINDOW as u64) as usize;
            self.read(at, &mut window[..n])?;
            let mut i = 0;
            while i + 4 <= n {
                if RecordKind::of_magic(&window[i..i + 4]).is_some() {
                    let pos = at + i as u64;
                    if self.record_at(pos)?.is_some_and(|r| r.good) {
                        return Ok(pos);
                    }
                }
                i += 1;
            }
            // The last three bytes may begin a magic: look again from there.
            at += (n.saturating_sub(3)).max(1) as u64;
        }
        Ok(self.end)
    }
}
