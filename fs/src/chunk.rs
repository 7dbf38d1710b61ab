//! Content-defined chunking: FastCDC (the v2020 algorithm of the `fastcdc`
//! crate, pinned exactly in Cargo.toml) cuts file bytes where the content
//! says, so an insert only changes the chunks around it, and each chunk is
//! named by the blake3 hash of its bytes.
//!
//! The parameters are part of backer's format: two nodes that chunk the
//! same bytes differently would store and send them twice. Peers compare
//! [`params_fingerprint`] when they meet.
//!
//! Why 16 / 64 / 256 KiB:
//! - **64 KiB average** keeps the index small (16 k entries per GiB, ~1 M
//!   for a 64 GB folder, a few tens of MB of sled) and each chunk's fixed
//!   costs (index entry, pack header, a request on the wire) under 0.2 % of
//!   its bytes, while a small edit still re-sends only ~64-128 KiB.
//! - **16 KiB minimum** bounds the number of chunks a run of tiny cut
//!   points could produce (and so per-chunk overhead) at 4x the average.
//! - **256 KiB maximum** bounds how much one edit can re-send and how much a
//!   read-modify-write of a chunk costs, for data with no natural cut
//!   points (zeros, encrypted blobs).

use std::ops::Range;

use crate::hash::Hash;

/// The smallest chunk, except the last of a run of data.
pub const MIN_SIZE: u32 = 16 * 1024;
/// The average chunk size FastCDC aims at.
pub const AVG_SIZE: u32 = 64 * 1024;
/// The largest chunk: FastCDC always cuts here.
pub const MAX_SIZE: u32 = 256 * 1024;
/// Names the algorithm and library version whose boundaries we rely on.
pub const ALGORITHM: &str = "fastcdc-3.2.1-v2020-level1";

/// The bytes peers compare at hello: the algorithm and its parameters.
pub fn params_fingerprint() -> Vec<u8> {
    let mut v = ALGORITHM.as_bytes().to_vec();
    for n in [MIN_SIZE, AVG_SIZE, MAX_SIZE] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    v
}

/// Cut points of `data`, chunked from its first byte (which must be a cut
/// point: the start of a run of data or a previous cut). The last range
/// ends at the end of `data`, whether or not FastCDC would cut there.
pub fn cuts(data: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    fastcdc::v2020::FastCDC::new(data, MIN_SIZE, AVG_SIZE, MAX_SIZE)
        .map(|c| c.offset..c.offset + c.length)
}

/// A chunk of a buffer: where it is and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Byte range in the buffer.
    pub range: Range<usize>,
    /// blake3 of those bytes.
    pub hash: Hash,
}

/// Cuts `data` and hashes every chunk.
pub fn chunks(data: &[u8]) -> Vec<Chunk> {
    cuts(data)
        .map(|range| Chunk {
            hash: Hash::of(&data[range.clone()]),
            range,
        })
        .collect()
}

/// [`chunks`] for a large buffer, on two threads: the cut points are
/// found in order on this thread (content-defined cutting is serial) while
/// a second thread hashes each chunk as soon as it is cut; once the last
/// cut is found this thread hashes too, from the other end of what is
/// left. Storing a stream is bound by cut + hash: overlapping them takes
/// the cutting off the critical path. Small buffers are done serially.
pub fn cut_and_hash(data: &[u8]) -> Vec<Chunk> {
    const PARALLEL_FROM: usize = 1 << 20;
    if data.len() < PARALLEL_FROM {
        return chunks(data);
    }
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex};
    /// Cut, not yet hashed chunks (index, range), and whether cutting ended.
    struct Queue {
        todo: VecDeque<(usize, Range<usize>)>,
        cut_all: bool,
    }
    let queue = Mutex::new(Queue {
        todo: VecDeque::new(),
        cut_all: false,
    });
    let ready = Condvar::new();
    let lock = || queue.lock().unwrap_or_else(|p| p.into_inner());
    let hash = |(i, r): (usize, Range<usize>)| (i, Hash::of(&data[r.clone()]), r);
    let mut done: Vec<(usize, Hash, Range<usize>)> = std::thread::scope(|s| {
        let helper = s.spawn(|| {
            let mut out = Vec::new();
            loop {
                let next = {
                    let mut q = lock();
                    loop {
                        if let Some(job) = q.todo.pop_front() {
                            break Some(job);
                        }
                        if q.cut_all {
                            break None;
                        }
                        q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
                    }
                };
                match next {
                    Some(job) => out.push(hash(job)),
                    None => return out,
                }
            }
        });
        for (i, r) in cuts(data).enumerate() {
            lock().todo.push_back((i, r));
            ready.notify_one();
        }
        lock().cut_all = true;
        ready.notify_all();
        let mut mine = Vec::new();
        while let Some(job) = lock().todo.pop_back() {
            mine.push(hash(job));
        }
        match helper.join() {
            Ok(theirs) => mine.extend(theirs),
            // Hashing cannot panic; if it did, hash what is missing here.
            Err(_) => {
                let have: std::collections::BTreeSet<usize> = mine.iter().map(|d| d.0).collect();
                for (i, r) in cuts(data).enumerate() {
                    if !have.contains(&i) {
                        mine.push(hash((i, r)));
                    }
                }
            }
        }
        mine
    });
    done.sort_unstable_by_key(|d| d.0);
    done.into_iter()
        .map(|(_, hash, range)| Chunk { range, hash })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn seeded(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        v
    }

    #[test]
    fn cutting_while_hashing_equals_doing_it_in_turn() {
        for (len, seed) in [(3 << 20, 5), ((1 << 20) + 17, 6), (9 << 20, 7), (1000, 8)] {
            let data = seeded(len, seed);
            assert_eq!(cut_and_hash(&data), chunks(&data), "{len} bytes");
        }
        // No natural cut points: every chunk is cut at the maximum size.
        let zeros = vec![0u8; 5 << 20];
        assert_eq!(cut_and_hash(&zeros), chunks(&zeros));
    }

    #[test]
    fn cuts_cover_the_input_within_bounds() {
        let data = seeded(4 << 20, 1);
        let mut next = 0;
        let all: Vec<_> = cuts(&data).collect();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.start, next);
            let len = r.len() as u32;
            assert!(len <= MAX_SIZE);
            if i + 1 < all.len() {
                assert!(len >= MIN_SIZE, "chunk {i} of {len} bytes");
            }
            next = r.end;
        }
        assert_eq!(next, data.len());
        assert!(cuts(&[]).next().is_none());
    }

    /// An insert near the start changes only the chunks around it: every
    /// chunk of the original from the second cut after the insert onward
    /// is found again, and at most 2 new chunks appear.
    #[test]
    fn insert_changes_only_nearby_chunks() {
        let data = seeded(8 << 20, 2);
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"an insert of a few bytes");
        edited.extend_from_slice(&data[1000..]);
        let before: std::collections::HashSet<Hash> =
            chunks(&data).into_iter().map(|c| c.hash).collect();
        let after = chunks(&edited);
        let new: Vec<_> = after.iter().filter(|c| !before.contains(&c.hash)).collect();
        assert!(
            !new.is_empty() && new.len() <= 2,
            "{} new chunks",
            new.len()
        );
        assert!(
            after.len() > 64,
            "8 MiB should be ~128 chunks, got {}",
            after.len()
        );
    }

    /// The boundaries are part of our format: a snapshot of the first
    /// chunks of seeded input, so they cannot drift unnoticed (e.g. by a
    /// fastcdc upgrade or a parameter change).
    #[test]
    fn boundaries_snapshot() {
        let data = seeded(1 << 20, 42);
        let got: Vec<(usize, String)> = chunks(&data)
            .iter()
            .map(|c| (c.range.len(), c.hash.to_hex()[..16].to_string()))
            .collect();
        let want = SNAPSHOT;
        let got_ref: Vec<(usize, &str)> = got.iter().map(|(l, h)| (*l, h.as_str())).collect();
        assert_eq!(
            got_ref, want,
            "chunk boundaries changed: this breaks the format"
        );
    }

    const SNAPSHOT: &[(usize, &str)] = &[
        (63368, "88858502566d0ca9"),
        (145278, "bb5560b1e5b48cbe"),
        (81959, "acf52c258547ee42"),
        (98980, "f03f175d714c6665"),
        (44061, "670e35e158cf9255"),
        (223795, "a34abc07af0f557a"),
        (87321, "b73ac6eb010928d5"),
        (91411, "e9a688d77a6a44a0"),
        (49147, "ed8b8a887b1da05b"),
        (70409, "2409dbbb65119493"),
        (92847, "b0b1f2629564f68d"),
    ];
}
