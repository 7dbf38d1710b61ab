//! A regular file's bytes while it is open: the committed extents (chunks
//! and holes) plus an overlay of written bytes not yet chunked.
//!
//! Writes land in the overlay (a memcpy, no hashing on the request path).
//! A *fold* turns the overlay into chunks: it re-chunks only from the
//! chunk boundary at or before each written region, and keeps going past
//! the region until a new cut falls on an old one (after which FastCDC
//! would cut exactly as before) or the run of data ends. So the extents
//! are always what chunking every run of data from its start would give,
//! whatever the history of writes: the content hash depends on the bytes
//! (and holes), never on how they were written.
//!
//! A hole (never-written range) reads as zeros and stores nothing.

mod stream;
pub(crate) use stream::StreamFold;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::chunk;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::{Location, Space, Store, Txn};
use crate::tree::content::Extent;

/// Overlay bytes past which a write triggers a partial fold, bounding the
/// memory one file's unflushed writes can take.
pub(crate) const FOLD_THRESHOLD: u64 = 16 * 1024 * 1024;
/// How much of a run the fold reads ahead of the chunker (8 MiB: enough
/// for [`chunk::cut_and_hash`] to hash on two threads).
const FILL: usize = 32 * chunk::MAX_SIZE as usize;

/// What the new content holds at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    /// Data up to this offset (overlay or committed chunk).
    Data(u64),
    /// A hole (not written).
    Hole,
    /// Past the last data byte.
    Eof,
}

/// One open file's content.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileData {
    /// Committed extents with their start offsets, in order, no gaps.
    base: Vec<(u64, Extent)>,
    base_len: u64,
    /// Written bytes not yet chunked: non-overlapping extents by offset.
    overlay: BTreeMap<u64, Vec<u8>>,
    overlay_bytes: u64,
    /// The file's size; bytes past the extents and overlay are zeros.
    pub(crate) size: u64,
    locs: HashMap<Hash, Location>,
    /// Bumped by every change other than an append past a fold under way
    /// (see [`stream`]): a fold's result applies only at the same epoch.
    epoch: u64,
    /// The end of the run a fold without the lock is storing.
    folding: Option<u64>,
    /// That fold's buffer, kept for the next one.
    spare: Vec<u8>,
}

/// A read whose chunk bytes are still to be fetched ([`FileData::plan_read`]).
#[derive(Debug, Default)]
pub(crate) struct ReadPlan {
    /// Bytes the read returns.
    len: usize,
    /// Chunk bytes to fetch, in buffer order, not overlapping.
    chunks: Vec<PlannedChunk>,
    /// Written bytes (copied under the lock), laid over the chunk bytes.
    written: Vec<(usize, Vec<u8>)>,
}

/// `len` bytes of chunk `hash` (at `loc`), from `skip` into it, to go at
/// `at` in the buffer.
#[derive(Debug)]
struct PlannedChunk {
    hash: Hash,
    loc: Location,
    skip: u64,
    at: usize,
    len: usize,
}

impl ReadPlan {
    /// Reads the planned chunk bytes and returns the buffer.
    pub(crate) fn run(self, store: &Store) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len];
        self.run_into(store, &mut buf)?;
        Ok(buf)
    }

    /// How many bytes the read returns.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Fills `out` (exactly [`ReadPlan::len`] bytes, whatever it held)
    /// with the read's bytes: only holes are zeroed, so a reused buffer
    /// costs no memset of the chunk bytes. Every chunk is checked against
    /// its hash ([`Store::read_chunk_range`]).
    pub(crate) fn run_into(&self, store: &Store, out: &mut [u8]) -> Result<()> {
        debug_assert_eq!(out.len(), self.len);
        let mut done = 0;
        for c in &self.chunks {
            out[done..c.at].fill(0);
            let dst = &mut out[c.at..c.at + c.len];
            store.read_chunk_range(&c.hash, Some(c.loc), c.skip, dst)?;
            done = c.at + c.len;
        }
        out[done..].fill(0);
        for (at, bytes) in &self.written {
            out[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        Ok(())
    }
}

/// Whether no written extent starts in (`start`, `end`].
fn later_is_empty(overlay: &BTreeMap<u64, Vec<u8>>, start: u64, end: u64) -> bool {
    overlay
        .range((Bound::Excluded(start), Bound::Included(end)))
        .next()
        .is_none()
}

fn with_offsets(extents: impl IntoIterator<Item = Extent>) -> (Vec<(u64, Extent)>, u64) {
    let mut at = 0u64;
    let mut v = Vec::new();
    for e in extents {
        let len = e.len();
        if len == 0 {
            continue;
        }
        if let (Some((_, Extent::Hole { len: prev })), Extent::Hole { len }) = (v.last_mut(), e) {
            *prev += len;
        } else {
            v.push((at, e));
        }
        at += len;
    }
    (v, at)
}

impl FileData {
    /// A file holding `extents` (its committed content).
    pub(crate) fn new(extents: Vec<Extent>) -> FileData {
        let (base, base_len) = with_offsets(extents);
        FileData {
            base,
            base_len,
            size: base_len,
            ..FileData::default()
        }
    }

    /// Bytes written but not yet folded.
    pub(crate) fn overlay_bytes(&self) -> u64 {
        self.overlay_bytes
    }

    /// 512-byte blocks the content takes (holes excluded).
    pub(crate) fn blocks(&self) -> u64 {
        let data: u64 = self
            .base
            .iter()
            .filter_map(|(_, e)| match e {
                Extent::Data { len, .. } => Some(u64::from(*len)),
                Extent::Hole { .. } => None,
            })
            .sum();
        (data + self.overlay_bytes).div_ceil(512)
    }

    /// The committed extents, in order.
    pub(crate) fn extents(&self) -> Vec<Extent> {
        self.base.iter().map(|(_, e)| *e).collect()
    }

    /// Another file holding this content (copy_file_range of a whole
    /// file): the same extents and size, sharing every chunk. `None` while
    /// written bytes are not yet chunked (fold first) or a fold is under
    /// way.
    pub(crate) fn clone_content(&self) -> Option<FileData> {
        if !self.overlay.is_empty() || self.folding.is_some() {
            return None;
        }
        Some(FileData {
            base: self.base.clone(),
            base_len: self.base_len,
            size: self.size,
            locs: self.locs.clone(),
            ..FileData::default()
        })
    }

    /// Whether a fold without the lock is storing some of its bytes.
    pub(crate) fn fold_under_way(&self) -> bool {
        self.folding.is_some()
    }

    /// Whether the file is empty: no size, nothing written or folding.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0 && self.overlay.is_empty() && self.folding.is_none()
    }

    /// Forgets the chunk locations read so far (a collection moved them).
    pub(crate) fn forget_locations(&mut self) {
        self.locs.clear();
    }

    /// Index of the first extent ending after `at`.
    fn extent_index(&self, at: u64) -> usize {
        self.base.partition_point(|(s, e)| s + e.len() <= at)
    }

    fn location(&mut self, store: &Store, hash: &Hash) -> Result<Location> {
        if let Some(l) = self.locs.get(hash) {
            return Ok(*l);
        }
        let l = store.chunk_location(hash)?.ok_or(Error::BadChunk(*hash))?;
        self.locs.insert(*hash, l);
        Ok(l)
    }

    /// Reads up to `len` bytes at `off` (fewer at the end of the file).
    pub(crate) fn read(&mut self, store: &Store, off: u64, len: u64) -> Result<Vec<u8>> {
        self.plan_read(store, off, len)?.run(store)
    }

    /// What reading up to `len` bytes at `off` takes: written bytes are
    /// copied now, chunk bytes are located now and read by
    /// [`ReadPlan::run`], which needs no lock (the vfs runs it after
    /// releasing its lock, so two reads wait on the disk at once).
    pub(crate) fn plan_read(&mut self, store: &Store, off: u64, len: u64) -> Result<ReadPlan> {
        if off >= self.size {
            return Ok(ReadPlan::default());
        }
        let end = self.size.min(off.saturating_add(len));
        let mut plan = ReadPlan {
            len: (end - off) as usize,
            ..ReadPlan::default()
        };
        let mut i = self.extent_index(off);
        while i < self.base.len() && self.base[i].0 < end {
            let (s, e) = self.base[i];
            if let Extent::Data { hash, len } = e {
                let from = s.max(off);
                let to = (s + u64::from(len)).min(end);
                let loc = self.location(store, &hash)?;
                plan.chunks.push(PlannedChunk {
                    hash,
                    loc,
                    skip: from - s,
                    at: (from - off) as usize,
                    len: (to - from) as usize,
                });
            }
            i += 1;
        }
        let first = self
            .overlay
            .range(..=off)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(off);
        for (s, b) in self.overlay.range(first..end) {
            let from = (*s).max(off);
            let to = (s + b.len() as u64).min(end);
            if from < to {
                plan.written.push((
                    (from - off) as usize,
                    b[(from - s) as usize..(to - s) as usize].to_vec(),
                ));
            }
        }
        Ok(plan)
    }

    /// [`FileData::read`] appended to `out`; returns the bytes added. A
    /// range inside one written extent (what a fold reads) is copied
    /// straight from it, with no zeroed buffer in between.
    fn read_into(&mut self, store: &Store, off: u64, len: u64, out: &mut Vec<u8>) -> Result<usize> {
        if let Some((s, b)) = self.overlay.range(..=off).next_back() {
            let end = s + b.len() as u64;
            if off + len <= end.min(self.size) {
                out.extend_from_slice(&b[(off - s) as usize..(off + len - s) as usize]);
                return Ok(len as usize);
            }
        }
        let bytes = self.read(store, off, len)?;
        out.extend_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// Writes `data` at `off` into the overlay.
    pub(crate) fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.folding.is_some_and(|end| off < end) {
            self.epoch += 1;
        }
        let end = off + data.len() as u64;
        // The extent starting at or before `off` that reaches it: extend
        // it in place (sequential writes append to one buffer, amortised).
        let prev = self
            .overlay
            .range(..=off)
            .next_back()
            .filter(|(s, b)| *s + b.len() as u64 >= off)
            .map(|(s, _)| *s);
        let start = prev.unwrap_or(off);
        let mut buf = match prev {
            Some(s) => self.overlay.remove(&s).unwrap_or_default(),
            None => Vec::new(),
        };
        self.overlay_bytes -= buf.len() as u64;
        // Absorb every later extent that the write overlaps or touches.
        let later: Vec<u64> = self
            .overlay
            .range((Bound::Excluded(start), Bound::Included(end)))
            .map(|(s, _)| *s)
            .collect();
        let need = (end - start) as usize;
        let at = (off - start) as usize;
        if at == buf.len() && later_is_empty(&self.overlay, start, end) {
            // An append to the extent (a file written front to back): no
            // zero-fill of the new part.
            buf.extend_from_slice(data);
            self.overlay_bytes += buf.len() as u64;
            self.overlay.insert(start, buf);
            self.size = self.size.max(end);
            return;
        }
        if buf.len() < need {
            buf.resize(need, 0);
        }
        for s in later {
            if let Some(b) = self.overlay.remove(&s) {
                self.overlay_bytes -= b.len() as u64;
                let at = (s - start) as usize;
                if buf.len() < at + b.len() {
                    buf.resize(at + b.len(), 0);
                }
                buf[at..at + b.len()].copy_from_slice(&b);
            }
        }
        let at = (off - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        self.overlay_bytes += buf.len() as u64;
        self.overlay.insert(start, buf);
        self.size = self.size.max(end);
    }

    /// Sets the size, dropping or zero-extending the tail.
    pub(crate) fn truncate(&mut self, store: &Store, new_size: u64) -> Result<()> {
        self.epoch += 1;
        if new_size >= self.size {
            self.size = new_size;
            return Ok(());
        }
        // The extent straddling the new end: keep its surviving prefix as
        // overlay bytes, so the next fold re-chunks the shortened run.
        let i = self.extent_index(new_size);
        let mut keep = i;
        if i < self.base.len() && self.base[i].0 < new_size {
            let (s, e) = self.base[i];
            match e {
                Extent::Data { .. } => {
                    let bytes = self.read(store, s, new_size - s)?;
                    self.drop_overlay_from(s);
                    self.write(s, &bytes);
                }
                Extent::Hole { .. } => {
                    self.base[i].1 = Extent::Hole { len: new_size - s };
                    keep = i + 1;
                }
            }
        }
        self.base.truncate(keep);
        self.base_len = self.base.last().map_or(0, |(s, e)| s + e.len());
        self.drop_overlay_from(new_size);
        self.size = new_size;
        Ok(())
    }

    /// Removes overlay bytes at and after `at`.
    fn drop_overlay_from(&mut self, at: u64) {
        let later: Vec<u64> = self.overlay.range(at..).map(|(s, _)| *s).collect();
        for s in later {
            if let Some(b) = self.overlay.remove(&s) {
                self.overlay_bytes -= b.len() as u64;
            }
        }
        if let Some((s, b)) = self.overlay.range_mut(..at).next_back() {
            let keep = (at - s) as usize;
            if b.len() > keep {
                self.overlay_bytes -= (b.len() - keep) as u64;
                b.truncate(keep);
            }
        }
    }

    fn segment(&self, at: u64) -> Seg {
        if let Some((s, b)) = self.overlay.range(..=at).next_back() {
            if s + b.len() as u64 > at {
                return Seg::Data(s + b.len() as u64);
            }
        }
        let next_overlay = self
            .overlay
            .range((Bound::Excluded(at), Bound::Unbounded))
            .next()
            .map_or(u64::MAX, |(s, _)| *s);
        if at >= self.base_len {
            return if next_overlay == u64::MAX {
                Seg::Eof
            } else {
                Seg::Hole
            };
        }
        let (s, e) = self.base[self.extent_index(at)];
        match e {
            Extent::Data { len, .. } => Seg::Data((s + u64::from(len)).min(next_overlay)),
            Extent::Hole { .. } => Seg::Hole,
        }
    }

    /// Where re-chunking must start for bytes written at `at`: the start
    /// of the chunk holding `at`, or of the chunk ending right before it
    /// (the run of data continues into the write).
    fn left_edge(&self, at: u64) -> u64 {
        let i = self.extent_index(at);
        let prev_data = |j: usize| matches!(self.base.get(j), Some((_, Extent::Data { .. })));
        if i < self.base.len() && self.base[i].0 <= at {
            match self.base[i].1 {
                Extent::Data { .. } => self.base[i].0,
                Extent::Hole { .. } if self.base[i].0 == at && i > 0 && prev_data(i - 1) => {
                    self.base[i - 1].0
                }
                Extent::Hole { .. } => at,
            }
        } else if at == self.base_len && i > 0 && prev_data(i - 1) {
            self.base[i - 1].0
        } else {
            at
        }
    }

    /// Whether a committed chunk starts at `at` (a cut the new chunking
    /// can re-join).
    fn old_cut(&self, at: u64) -> bool {
        let i = self.extent_index(at);
        matches!(self.base.get(i), Some((s, Extent::Data { .. })) if *s == at)
    }

    /// Appends the committed extents covering `[from, to)` (a range with
    /// no overlay) to `out`.
    fn copy_old(&self, from: u64, to: u64, out: &mut Vec<Extent>) -> Result<()> {
        let mut at = from;
        let mut i = self.extent_index(from);
        while at < to {
            let Some(&(s, e)) = self.base.get(i) else {
                out.push(Extent::Hole { len: to - at });
                break;
            };
            let end = (s + e.len()).min(to);
            match e {
                Extent::Hole { .. } => out.push(Extent::Hole { len: end - at }),
                Extent::Data { .. } if s == at && end == s + e.len() => out.push(e),
                Extent::Data { .. } => return Err(Error::corrupt("fold would split a chunk")),
            }
            at = end;
            i += 1;
        }
        Ok(())
    }

    /// Chunks the overlay into the store. A final fold leaves no overlay
    /// and extents covering the whole size; a partial one keeps the
    /// file's last, still growing chunk in memory. Returns whether any
    /// chunk was written.
    pub(crate) fn fold(&mut self, store: &Store, txn: &mut Txn<'_>, last: bool) -> Result<()> {
        self.epoch += 1;
        let regions: Vec<(u64, u64)> = self
            .overlay
            .iter()
            .map(|(s, b)| (*s, s + b.len() as u64))
            .collect();
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut j = 0usize;
        let mut tail = None;
        while j < regions.len() {
            let (s, e) = regions[j];
            if e <= at {
                j += 1;
                continue;
            }
            let lo = self.left_edge(s.max(at)).max(at);
            self.copy_old(at, lo, &mut out)?;
            let (next, next_j, t) = self.chunk_run(store, txn, lo, &regions, j, last, &mut out)?;
            at = next;
            j = next_j;
            if t.is_some() {
                tail = t;
                break;
            }
        }
        if tail.is_none() {
            let end = if last { self.size } else { self.base_len };
            self.copy_old(at, end.max(at), &mut out)?;
        }
        let (base, base_len) = with_offsets(out);
        self.base = base;
        self.base_len = base_len;
        self.overlay.clear();
        self.overlay_bytes = 0;
        if let Some((s, b)) = tail {
            self.overlay_bytes = b.len() as u64;
            self.overlay.insert(s, b);
        }
        Ok(())
    }

    /// Chunks the run of data starting at the cut `from` until it re-joins
    /// the old cuts past every region it absorbed, or ends. Returns where
    /// it stopped, the next unprocessed region, and the kept tail, if any.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn chunk_run(
        &mut self,
        store: &Store,
        txn: &mut Txn<'_>,
        from: u64,
        regions: &[(u64, u64)],
        mut j: usize,
        last: bool,
        out: &mut Vec<Extent>,
    ) -> Result<(u64, usize, Option<(u64, Vec<u8>)>)> {
        let mut min_end = 0u64;
        while j < regions.len() && regions[j].0 <= from {
            min_end = min_end.max(regions[j].1);
            j += 1;
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = from;
        let mut run_ended = false;
        loop {
            while !run_ended && buf.len() < FILL {
                let at = buf_start + buf.len() as u64;
                match self.segment(at) {
                    Seg::Data(end) => {
                        let n = (end - at).min((FILL - buf.len()) as u64);
                        if self.read_into(store, at, n, &mut buf)? == 0 {
                            run_ended = true;
                        }
                    }
                    Seg::Hole | Seg::Eof => run_ended = true,
                }
            }
            if buf.is_empty() {
                return Ok((buf_start, j, None));
            }
            let mut consumed = 0usize;
            for chunk::Chunk { range: c, hash } in chunk::cut_and_hash(&buf) {
                let is_last = c.end == buf.len();
                if is_last && !run_ended {
                    break;
                }
                let end = buf_start + c.end as u64;
                if is_last && !last && self.segment(end) == Seg::Eof {
                    let start = buf_start + c.start as u64;
                    return Ok((start, j, Some((start, buf[c.start..].to_vec()))));
                }
                let bytes = &buf[c.clone()];
                let hash = store.put_hashed_chunk(txn, bytes, hash)?;
                if let Some(l) = txn.get(Space::Chunks, hash.as_bytes())? {
                    self.locs.insert(hash, Location::decode(&l)?);
                }
                out.push(Extent::Data {
                    hash,
                    len: bytes.len() as u32,
                });
                consumed = c.end;
                while j < regions.len() && regions[j].0 < end {
                    min_end = min_end.max(regions[j].1);
                    j += 1;
                }
                if is_last || (end >= min_end && self.old_cut(end)) {
                    return Ok((end, j, None));
                }
            }
            buf.drain(..consumed);
            buf_start += consumed as u64;
        }
    }
}
