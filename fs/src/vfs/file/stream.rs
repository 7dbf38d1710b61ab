//! Folding a growing file without the vfs lock.
//!
//! A file written front to back (a copy, a download, `dd`) passes
//! [`super::FOLD_THRESHOLD`] of unflushed bytes again and again. Folding
//! inline would chunk, hash and store 16 MiB while every other request
//! waits on the lock; instead the write that crossed the threshold copies
//! the run out under the lock ([`FileData::begin_stream_fold`]), chunks,
//! hashes and stores it with the lock released ([`StreamFold::run`]), and
//! takes the lock again to swap the stored chunks in for those bytes
//! ([`FileData::finish_stream_fold`]). Meanwhile the other FUSE thread
//! keeps taking writes.
//!
//! Only the common shape qualifies: a written extent right after the
//! committed extents, holding most of the written bytes (later extents,
//! a stream's writes that arrived ahead of their turn, wait for the next
//! fold). The result is what
//! an inline fold would give (chunking restarts at the same cut and keeps
//! the last, still growing chunk in memory). If anything but an append
//! touched the file meanwhile (a write into the run, a truncate, an inline
//! fold), the result is dropped: its chunks are garbage for the next
//! collection, and the bytes are still in the overlay.

use super::{FileData, Seg};
use crate::chunk;
use crate::error::Result;
use crate::store::Store;
use crate::tree::content::Extent;
use crate::vfs::{Files, Ino, Pins};

/// A run of a file's bytes being folded without the lock.
#[derive(Debug)]
pub(crate) struct StreamFold {
    /// Where the run starts: a chunk boundary of the committed extents.
    lo: u64,
    /// Where the written extent starts (the end of the committed extents).
    start: u64,
    /// The file's epoch when the run was copied.
    epoch: u64,
    /// The run: committed bytes from `lo`, then the written extent.
    buf: Vec<u8>,
    /// Store the run's last chunk too: the file was closed, so its end
    /// is where the bytes end for now (a later append re-chunks from
    /// that chunk's start, as after any fold that stored the end).
    last: bool,
}

/// What [`StreamFold::run`] stored: the chunks of the run but its last.
#[derive(Debug)]
pub(crate) struct StreamFolded {
    extents: Vec<Extent>,
}

impl FileData {
    /// Starts a fold of the written tail if the file has the streaming
    /// shape and no such fold is under way; `None` otherwise. `last`
    /// stores the run's last chunk too (see [`StreamFold`]).
    pub(crate) fn begin_stream_fold(
        &mut self,
        store: &Store,
        last: bool,
    ) -> Result<Option<StreamFold>> {
        if self.folding.is_some() {
            return Ok(None);
        }
        let (start, len) = match self.overlay.iter().next() {
            Some((s, b)) => (*s, b.len() as u64),
            None => return Ok(None),
        };
        // Later extents may follow: two FUSE threads hand a stream's
        // writes over out of order, so the next one often lands before
        // the one that fills the gap. They stay in the overlay; the run
        // is the first extent, if it is most of what is written.
        if start != self.base_len || len < self.overlay_bytes / 2 {
            return Ok(None);
        }
        let lo = self.left_edge(start);
        // The buffer of the last fold, reused: a fresh 16 MiB each time
        // cost page faults and zeroing in the kernel.
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.reserve((start - lo + len) as usize);
        if lo < start {
            if !matches!(self.segment(lo), Seg::Data(_)) {
                return Ok(None);
            }
            buf.extend_from_slice(&self.read(store, lo, start - lo)?);
        }
        buf.extend_from_slice(&self.overlay[&start]);
        self.folding = Some(start + len);
        Ok(Some(StreamFold {
            lo,
            start,
            epoch: self.epoch,
            buf,
            last,
        }))
    }

    /// Swaps the stored chunks in for the bytes they hold, unless the file
    /// changed under the fold. Ends the fold either way; `false` if the
    /// result was dropped.
    pub(crate) fn finish_stream_fold(&mut self, t: StreamFold, done: Option<StreamFolded>) -> bool {
        let applied = self.apply_stream_fold(&t, done);
        self.spare = t.buf;
        applied
    }

    fn apply_stream_fold(&mut self, t: &StreamFold, done: Option<StreamFolded>) -> bool {
        // No fold under way: this is another opening of the file (it was
        // closed meanwhile), which never saw these bytes.
        if self.folding.take().is_none() {
            return false;
        }
        let Some(done) = done else { return false };
        if self.epoch != t.epoch {
            return false;
        }
        let consumed: u64 = done.extents.iter().map(Extent::len).sum();
        let end = t.lo + consumed;
        let Some(b) = self.overlay.get(&t.start) else {
            return false;
        };
        if end < t.start || end > t.start + b.len() as u64 || self.base_len != t.start {
            return false;
        }
        let mut b = self.overlay.remove(&t.start).expect("checked above");
        let cut = (end - t.start) as usize;
        b.drain(..cut);
        self.overlay_bytes -= cut as u64;
        if !b.is_empty() {
            self.overlay.insert(end, b);
        }
        let i = self.extent_index(t.lo);
        self.base.truncate(i);
        let mut at = t.lo;
        for e in done.extents {
            self.base.push((at, e));
            at += e.len();
        }
        self.base_len = at;
        self.epoch += 1;
        true
    }

    /// Whether a fold without the lock is under way.
    pub(crate) fn stream_folding(&self) -> bool {
        self.folding.is_some()
    }
}

impl Files<'_> {
    /// Runs a fold begun by a write without the lock, then swaps its
    /// chunks in (see [`StreamFold`]). A failure leaves the bytes
    /// in the overlay, for the next fold to store.
    pub(in crate::vfs) fn finish_stream_fold(&self, ino: Ino, t: StreamFold) -> Result<()> {
        let store = self.vfs.store();
        let pins = self.vfs.pins();
        let done = t.run(&store, &pins);
        let mut inner = self.vfs.lock();
        let (done, err) = match done {
            Ok(d) => (d, None),
            Err(e) => (None, Some(e)),
        };
        if let Some(of) = inner.files.get_mut(ino) {
            of.data.finish_stream_fold(t, done);
        }
        drop(inner);
        drop(pins);
        {
            let _g = self
                .vfs
                .stream_folded
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.vfs.stream_folded.1.notify_all();
        }
        match err {
            // ENOSPC and friends reach the writer now, like an inline fold's.
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until `ino` has no fold without the lock under way (a writer
    /// far ahead of it is held back here, not under the lock).
    pub(in crate::vfs) fn wait_for_stream_fold(&self, ino: Ino) {
        let (m, cv) = &self.vfs.stream_folded;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        // The check runs with `m` held and the finisher notifies with it
        // held after its swap, so a wakeup cannot fall between the two.
        while self
            .vfs
            .lock()
            .files
            .get(ino)
            .is_some_and(|of| of.data.stream_folding())
        {
            g = cv
                .wait_timeout(g, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl StreamFold {
    /// Chunks, hashes and stores the run but its last chunk (which keeps
    /// growing), unless the fold is `last`. Runs without the vfs lock:
    /// every chunk is pinned before it is stored, so a collection cannot
    /// take it before the swap. `None` when there is nothing to store yet.
    pub(crate) fn run(&self, store: &Store, pins: &Pins) -> Result<Option<StreamFolded>> {
        let chunks = chunk::cut_and_hash(&self.buf);
        let keep = if self.last {
            &chunks[..]
        } else {
            &chunks[..chunks.len().saturating_sub(1)]
        };
        if keep.is_empty() {
            return Ok(None);
        }
        let mut extents = Vec::with_capacity(keep.len());
        for chunk::Chunk { range: c, hash } in keep.iter().cloned() {
            pins.add(hash);
            store.put_verified_chunk(&self.buf[c.clone()], hash)?;
            extents.push(Extent::Data {
                hash,
                len: c.len() as u32,
            });
        }
        Ok(Some(StreamFolded { extents }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};

    use super::*;
    use crate::store::{mem_kv::MemKv, Options, Txn};

    /// What a file written in one go is chunked into: the extents every
    /// way of writing the same bytes must end with.
    fn canonical(data: &[u8]) -> Vec<Extent> {
        chunk::chunks(data)
            .into_iter()
            .map(|c| Extent::Data {
                hash: c.hash,
                len: c.range.len() as u32,
            })
            .collect()
    }

    /// Writes `b` at `off` to the file and to its model.
    fn write_at(f: &mut FileData, model: &mut Vec<u8>, off: usize, b: &[u8]) {
        f.write(off as u64, b);
        if model.len() < off + b.len() {
            model.resize(off + b.len(), 0);
        }
        model[off..off + b.len()].copy_from_slice(b);
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Append this many bytes.
        Append(usize),
        /// Write this many bytes this far past the end (a stream's write
        /// that arrives before the one filling the gap; see `Fill`).
        Ahead(usize, usize),
        /// Fill the oldest gap an `Ahead` left.
        Fill,
        /// Overwrite at this fraction of the file.
        Overwrite(u8, usize),
        /// Begin a fold without the lock (if the shape allows); `true`
        /// stores the last chunk too, as a release does.
        Begin(bool),
        /// Run and finish the oldest fold begun.
        Finish,
        /// An inline partial fold.
        Fold,
        /// Truncate to this fraction of the file.
        Truncate(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (1usize..400_000).prop_map(Step::Append),
            2 => (1usize..300_000, 1usize..300_000).prop_map(|(gap, n)| Step::Ahead(gap, n)),
            2 => Just(Step::Fill),
            1 => (any::<u8>(), 1usize..5_000).prop_map(|(at, n)| Step::Overwrite(at, n)),
            3 => any::<bool>().prop_map(Step::Begin),
            3 => Just(Step::Finish),
            1 => Just(Step::Fold),
            1 => any::<u8>().prop_map(Step::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever interleaving of appends, overwrites, truncates and
        /// folds (with or without the lock), the file reads back as
        /// written and ends chunked exactly as if written in one go.
        #[test]
        fn stream_folds_match_writing_in_one_go(
            committed in prop_oneof![Just(0usize), 1usize..700_000],
            steps in proptest::collection::vec(step(), 1..60),
            seed in any::<u64>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::with_engine(dir.path(), Arc::new(MemKv::new()), Options::default()).unwrap();
            let pins = Pins::default();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // A file closed before (its last chunk cut by its end, not by
            // its content), or a new one.
            let mut model = vec![0u8; committed];
            rng.fill_bytes(&mut model);
            let mut txn = Txn::new(store.kv());
            for c in chunk::chunks(&model) {
                store.put_chunk(&mut txn, &model[c.range]).unwrap();
            }
            txn.commit().unwrap();
            let mut f = FileData::new(canonical(&model));
            let mut pending: Option<StreamFold> = None;
            let mut fills = std::collections::VecDeque::new();
            for s in &steps {
                match *s {
                    Step::Append(n) => {
                        let mut b = vec![0u8; n];
                        rng.fill_bytes(&mut b);
                        f.write(model.len() as u64, &b);
                        model.extend_from_slice(&b);
                    }
                    Step::Ahead(gap, n) => {
                        let mut fill = vec![0u8; gap];
                        rng.fill_bytes(&mut fill);
                        fills.push_back((model.len(), fill));
                        let mut b = vec![0u8; n];
                        rng.fill_bytes(&mut b);
                        let off = model.len() + gap;
                        f.write(off as u64, &b);
                        model.resize(off, 0);
                        model.extend_from_slice(&b);
                    }
                    Step::Fill => {
                        if let Some((off, b)) = fills.pop_front() {
                            write_at(&mut f, &mut model, off, &b);
                        }
                    }
                    Step::Overwrite(at, n) => {
                        let off = model.len() * usize::from(at) / 256;
                        let mut b = vec![0u8; n];
                        rng.fill_bytes(&mut b);
                        f.write(off as u64, &b);
                        if model.len() < off + n {
                            model.resize(off + n, 0);
                        }
                        model[off..off + n].copy_from_slice(&b);
                    }
                    Step::Begin(last) => {
                        if pending.is_none() {
                            pending = f.begin_stream_fold(&store, last).unwrap();
                        }
                    }
                    Step::Finish => {
                        if let Some(t) = pending.take() {
                            let done = t.run(&store, &pins).unwrap();
                            f.finish_stream_fold(t, done);
                        }
                    }
                    Step::Fold => {
                        let mut txn = Txn::new(store.kv());
                        f.fold(&store, &mut txn, false).unwrap();
                        txn.commit().unwrap();
                    }
                    Step::Truncate(at) => {
                        let n = model.len() * usize::from(at) / 256;
                        f.truncate(&store, n as u64).unwrap();
                        model.truncate(n);
                        // A fill past the end now would leave a hole
                        // (which writing in one go would not have).
                        fills.retain(|(off, _)| *off <= n);
                    }
                }
                prop_assert_eq!(f.size, model.len() as u64);
                let got = f.read(&store, 0, f.size).unwrap();
                prop_assert!(got == model, "reads differ from what was written");
            }
            if let Some(t) = pending.take() {
                let done = t.run(&store, &pins).unwrap();
                f.finish_stream_fold(t, done);
            }
            while let Some((off, b)) = fills.pop_front() {
                write_at(&mut f, &mut model, off, &b);
            }
            let mut txn = Txn::new(store.kv());
            f.fold(&store, &mut txn, true).unwrap();
            txn.commit().unwrap();
            prop_assert!(f.read(&store, 0, f.size).unwrap() == model);
            prop_assert_eq!(f.extents(), canonical(&model));
        }
    }
}
