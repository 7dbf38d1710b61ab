//! The free-space gate every write of a store passes before it reaches a
//! disk: pack appends, and every batch for the key-value engine
//! (namespace operations, commits, history, collections, installs).
//!
//! Why: sled 0.34 makes its first I/O error sticky (every later call
//! fails until the engine is reopened), so the engine must not meet a full
//! disk. The gate keeps a reserve of free space (DESIGN.md, "Full disk"):
//! a new operation is refused with ENOSPC when less than the reserve
//! would stay free; the engine's own hand-down of work already
//! acknowledged may dig into the reserve down to a quarter of it (that is
//! what the reserve is for). The reserve is only a figure compared with
//! statvfs: no ballast file, nothing preallocated, nothing that shows in
//! the store's size.
//!
//! Cost: one statvfs is about a microsecond, but a metadata operation is
//! only a few microseconds, so the figure is cached and bytes let through
//! are subtracted from it. It is read again when it is older than the
//! time a fast foreign writer ([`FOREIGN_RATE`]) would take to eat the
//! headroom above the reserve (at most [`MAX_AGE`]), when the bytes let
//! through reach a quarter of that headroom, and on every call near the
//! reserve or while refusing (so freed space is seen at once).
//!
//! No gate can stop another process from filling the disk to its last
//! byte between two looks: the engine may still meet ENOSPC, and the
//! store recovers from it (`overlay_kv.rs`, reopening the engine).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How fast another process may fill the disk, for deciding how long a
/// free-space figure stays good: about what `dd` reaches on a fast SSD.
pub const FOREIGN_RATE: u64 = 1 << 30;

/// The oldest a free-space figure may be when far from the reserve.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Bytes the engine may write for each byte of a batch it is handed:
/// sled logs every key and value, rewrites pages as they are merged, and
/// its segment cleaner copies live pages forward. Measured on this
/// store's metadata (mkdir, create, write, commit) sled's files grow by
/// 3 to 6 times the batch bytes; 8 leaves a margin.
pub const ENGINE_AMPLIFICATION: u64 = 8;

/// Bytes the engine may write at any flush whatever its batch: a log
/// segment it starts (512 KiB in sled 0.34) and its page-table snapshot.
pub const ENGINE_SLACK: u64 = 2 << 20;

/// What an engine hand-down of `batch_bytes` may cost on disk.
pub fn engine_need(batch_bytes: u64) -> u64 {
    batch_bytes
        .saturating_mul(ENGINE_AMPLIFICATION)
        .saturating_add(ENGINE_SLACK)
}

/// Reads the free space (bytes for unprivileged writers).
type Probe = Box<dyn Fn() -> Result<u64> + Send + Sync>;

struct Figure {
    /// Free bytes at the last look.
    free: u64,
    /// When that was (`None`: never looked).
    at: Option<Instant>,
    /// Bytes let through since.
    spent: u64,
}

/// The shared free-space gate of one store. Cheap to call; thread-safe.
pub struct SpaceGate {
    reserve: u64,
    probe: Probe,
    figure: Mutex<Figure>,
}

impl std::fmt::Debug for SpaceGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceGate")
            .field("reserve", &self.reserve)
            .finish()
    }
}

impl SpaceGate {
    /// A gate over the file system holding `dir`, keeping `reserve` bytes.
    pub fn for_dir(dir: &Path, reserve: u64) -> SpaceGate {
        let dir: PathBuf = dir.to_path_buf();
        SpaceGate::with_probe(reserve, Box::new(move || super::packs::free_space(&dir)))
    }

    /// A gate that reads free space with `probe` (tests give a fake disk).
    pub fn with_probe(reserve: u64, probe: Box<dyn Fn() -> Result<u64> + Send + Sync>) -> Self {
        SpaceGate {
            reserve,
            probe,
            figure: Mutex::new(Figure {
                free: 0,
                at: None,
                spent: 0,
            }),
        }
    }

    /// The reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Lets a new operation write `need` bytes, or refuses it with
    /// [`Error::NoSpace`] when less than the reserve would stay free.
    pub fn admit(&self, need: u64) -> Result<()> {
        self.admit_above(need, self.reserve)
    }

    /// Lets the engine write `need` bytes of work already acknowledged
    /// (the hand-down of gathered batches, a flush): it may use the
    /// reserve, down to a quarter of it.
    pub fn admit_engine(&self, need: u64) -> Result<()> {
        self.admit_above(need, self.reserve / 4)
    }

    /// Whether the disk has room above the reserve for `need` bytes, read
    /// now (for a recovery deciding whether to try the engine again).
    pub fn has_room_now(&self, need: u64) -> Result<bool> {
        let mut f = self.lock();
        self.look(&mut f)?;
        Ok(f.free >= self.reserve.saturating_add(need))
    }

    /// Free bytes on the disk, read now.
    pub fn free_now(&self) -> Result<u64> {
        let mut f = self.lock();
        self.look(&mut f)?;
        Ok(f.free)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Figure> {
        self.figure.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn look(&self, f: &mut Figure) -> Result<()> {
        f.free = (self.probe)()?;
        f.at = Some(Instant::now());
        f.spent = 0;
        Ok(())
    }

    fn admit_above(&self, need: u64, floor: u64) -> Result<()> {
        let mut f = self.lock();
        let wanted = floor.saturating_add(need);
        if self.due(&f, wanted) {
            self.look(&mut f)?;
        }
        let left = f.free.saturating_sub(f.spent);
        if left < wanted {
            return Err(Error::NoSpace);
        }
        f.spent = f.spent.saturating_add(need);
        Ok(())
    }

    /// Whether the cached figure must be read again before letting
    /// `wanted` bytes (floor included) be counted against it.
    fn due(&self, f: &Figure, wanted: u64) -> bool {
        let Some(at) = f.at else { return true };
        let left = f.free.saturating_sub(f.spent);
        // Near the reserve (or refusing): every call looks, so neither a
        // foreign writer nor freed space goes unseen.
        let near = self.reserve.saturating_add(wanted);
        if left < near {
            return true;
        }
        let headroom = left - wanted;
        if f.spent >= headroom / 4 {
            return true;
        }
        let max_age = Duration::from_secs_f64(headroom as f64 / FOREIGN_RATE as f64).min(MAX_AGE);
        at.elapsed() >= max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

    /// A gate over a fake disk: its free bytes and how often it was read.
    fn fake(reserve: u64, free: u64) -> (SpaceGate, Arc<AtomicU64>, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(free));
        let looks = Arc::new(AtomicU64::new(0));
        let (f, l) = (free.clone(), looks.clone());
        let gate = SpaceGate::with_probe(
            reserve,
            Box::new(move || {
                l.fetch_add(1, Ordering::SeqCst);
                Ok(f.load(Ordering::SeqCst))
            }),
        );
        (gate, free, looks)
    }

    #[test]
    fn far_from_the_reserve_the_figure_is_cached() {
        let (gate, _, looks) = fake(64 * MIB, 100 << 30);
        for _ in 0..10_000 {
            gate.admit(4096).unwrap();
        }
        // 40 MB let through of ~100 GB headroom: looked once (or twice
        // if the machine stalled past MAX_AGE).
        assert!(looks.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn refuses_below_the_reserve_and_admits_again_once_space_is_freed() {
        let (gate, free, _) = fake(64 * MIB, 1 << 30);
        gate.admit(MIB).unwrap();
        // Another process fills the disk: the bytes let through since the
        // last look bring the figure close to the reserve, so the gate
        // looks again and sees it.
        free.store(10 * MIB, Ordering::SeqCst);
        let mut refused = false;
        for _ in 0..1000 {
            if let Err(e) = gate.admit(MIB) {
                assert_eq!(e.errno(), libc::ENOSPC);
                refused = true;
                break;
            }
        }
        assert!(refused, "the gate never noticed the full disk");
        // Every call looks while refusing: freed space is seen at once.
        free.store(1 << 30, Ordering::SeqCst);
        gate.admit(MIB).unwrap();
    }

    #[test]
    fn near_the_reserve_every_call_looks() {
        let (gate, free, looks) = fake(64 * MIB, 100 * MIB);
        gate.admit(1000).unwrap();
        let before = looks.load(Ordering::SeqCst);
        for _ in 0..100 {
            gate.admit(1000).unwrap();
        }
        assert_eq!(looks.load(Ordering::SeqCst), before + 100);
        // A foreign writer took the last bytes above the reserve: the very
        // next call refuses.
        free.store(64 * MIB, Ordering::SeqCst);
        assert!(gate.admit(1000).is_err());
    }

    #[test]
    fn bytes_let_through_count_against_the_figure() {
        // 1 GiB headroom, no foreign writer: the gate looks again after a
        // quarter of it was let through, and refuses at the reserve even
        // if the disk itself were never read again.
        let (gate, free, _) = fake(64 * MIB, 64 * MIB + (1 << 30));
        let mut let_through = 0u64;
        while gate.admit(MIB).is_ok() {
            let_through += MIB;
            // The disk fills with what was let through.
            free.fetch_sub(MIB, Ordering::SeqCst);
            assert!(let_through <= 1 << 30, "let more through than the headroom");
        }
        assert_eq!(let_through, 1 << 30);
    }

    #[test]
    fn the_engine_may_use_the_reserve_for_acknowledged_work() {
        let (gate, _, _) = fake(64 * MIB, 40 * MIB);
        assert!(gate.admit(MIB).is_err());
        gate.admit_engine(engine_need(MIB)).unwrap();
        assert!(gate.admit_engine(30 * MIB).is_err());
        assert!(!gate.has_room_now(0).unwrap());
    }

    #[test]
    fn a_failing_probe_is_an_error_not_a_pass() {
        let gate = SpaceGate::with_probe(
            MIB,
            Box::new(|| Err(Error::io("statvfs", std::io::Error::other("gone")))),
        );
        assert!(gate.admit(1).is_err());
    }
}
