//! The overlay on a full disk, over an engine that fails as sled 0.34
//! does: its first I/O error is sticky until it is reopened, and a reopen
//! keeps only what its last successful flush made durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::OverlayKv;
use crate::error::{Error, Result};
use crate::store::kv::{Batch, KeyValue, Kv, Space};
use crate::store::mem_kv::MemKv;
use crate::store::space_gate::SpaceGate;

/// An engine on a disk that can be made full.
#[derive(Default)]
struct Flaky {
    /// What survives a reopen.
    durable: Mutex<Batch>,
    /// The engine as the process sees it.
    live: MemKv,
    /// Writes since the last flush (replayed onto `durable` at a flush).
    unflushed: Mutex<Batch>,
    /// The disk is full: the next apply or flush fails.
    full: AtomicBool,
    /// Only flushes fail (the apply fitted in memory).
    full_at_flush_only: AtomicBool,
    /// Failed once: everything fails until reopened.
    stuck: AtomicBool,
    reopens: AtomicU64,
}

fn enospc() -> Error {
    Error::io("sled", std::io::Error::from_raw_os_error(libc::ENOSPC))
}

impl Flaky {
    fn fail_if_full(&self) -> Result<()> {
        if self.stuck.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        if self.full.load(Ordering::SeqCst) {
            self.stuck.store(true, Ordering::SeqCst);
            return Err(enospc());
        }
        Ok(())
    }

    fn durable_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mem = MemKv::new();
        mem.apply(self.durable.lock().unwrap().clone()).unwrap();
        mem.get(Space::Meta, key).unwrap()
    }
}

impl Kv for Flaky {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live.get(space, key)
    }
    fn scan(&self, s: Space, p: &[u8], a: Option<&[u8]>, n: usize) -> Result<Vec<KeyValue>> {
        self.live.scan(s, p, a, n)
    }
    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>> {
        self.live.last(space, prefix)
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        if !self.full_at_flush_only.load(Ordering::SeqCst) {
            self.fail_if_full()?;
        }
        self.unflushed.lock().unwrap().ops.extend(batch.ops.clone());
        self.live.apply(batch)
    }
    fn flush(&self) -> Result<()> {
        self.fail_if_full()?;
        let done = std::mem::take(&mut *self.unflushed.lock().unwrap());
        self.durable.lock().unwrap().ops.extend(done.ops);
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
    fn reopen(&self, replay: Vec<Batch>) -> Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.reopens.fetch_add(1, Ordering::SeqCst);
        self.stuck.store(false, Ordering::SeqCst);
        // What was not flushed is gone, as after sled's recovery.
        self.unflushed.lock().unwrap().ops.clear();
        // Rebuild `live` from the durable state, then replay.
        let mut wipe = Batch::default();
        for (k, _) in self.live.scan(Space::Meta, &[], None, usize::MAX)? {
            wipe.remove(Space::Meta, k);
        }
        self.live.apply(wipe)?;
        self.live.apply(self.durable.lock().unwrap().clone())?;
        for b in replay {
            self.unflushed.lock().unwrap().ops.extend(b.ops.clone());
            self.live.apply(b)?;
        }
        self.flush()
    }
}

fn put(k: &str) -> Batch {
    let mut b = Batch::default();
    b.put(Space::Meta, k.as_bytes(), k.as_bytes());
    b
}

/// An overlay over a [`Flaky`] engine and a gate over a fake disk whose
/// free bytes the test sets.
fn gated(free: u64) -> (OverlayKv<Flaky>, Arc<AtomicU64>) {
    let free = Arc::new(AtomicU64::new(free));
    let f = free.clone();
    let gate = Arc::new(SpaceGate::with_probe(
        64 << 20,
        Box::new(move || Ok(f.load(Ordering::SeqCst))),
    ));
    let overlay = OverlayKv::new(Flaky::default());
    overlay.guard_with(gate);
    (overlay, free)
}

#[test]
fn an_engine_failure_refuses_writes_then_reopens_and_keeps_every_acknowledged_write() {
    // Close to the reserve, so the gate looks at every call.
    let (overlay, free) = gated(100 << 20);
    overlay.apply(put("a")).unwrap();
    overlay.flush().unwrap();
    // Acknowledged, then handed to the engine, which took them in memory
    // but could not make them durable: another process took the last
    // bytes between the gate's look and the engine's write.
    overlay.apply(put("b")).unwrap();
    overlay.inner().full.store(true, Ordering::SeqCst);
    overlay
        .inner()
        .full_at_flush_only
        .store(true, Ordering::SeqCst);
    let e = overlay.flush().unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC);
    assert!(overlay.is_broken());
    free.store(0, Ordering::SeqCst);
    overlay
        .inner()
        .full_at_flush_only
        .store(false, Ordering::SeqCst);
    // While it is broken, writes are refused with ENOSPC, not taken.
    let e = overlay.apply(put("refused")).unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC);
    assert_eq!(overlay.get(Space::Meta, b"refused").unwrap(), None);
    // Reads still see everything acknowledged.
    assert_eq!(overlay.get(Space::Meta, b"b").unwrap(), Some(b"b".to_vec()));
    // Space is freed: the next write reopens the engine, replays "b".
    overlay.inner().full.store(false, Ordering::SeqCst);
    free.store(100 << 20, Ordering::SeqCst);
    overlay.apply(put("c")).unwrap();
    assert!(!overlay.is_broken());
    assert_eq!(overlay.inner().reopens.load(Ordering::SeqCst), 1);
    overlay.flush().unwrap();
    for k in ["a", "b", "c"] {
        assert_eq!(
            overlay.inner().durable_get(k.as_bytes()),
            Some(k.as_bytes().to_vec()),
            "{k} was acknowledged and must be durable"
        );
    }
    assert_eq!(overlay.inner().durable_get(b"refused"), None);
}

#[test]
fn a_failed_hand_down_keeps_the_writes_for_the_reopened_engine() {
    let overlay = OverlayKv::new(Flaky::default());
    overlay.apply(put("x")).unwrap();
    overlay.inner().full.store(true, Ordering::SeqCst);
    assert_eq!(overlay.flush().unwrap_err().errno(), libc::ENOSPC);
    // A reopen while the disk is still full fails and is not retried
    // at once; the write stays pending and readable.
    assert_eq!(overlay.flush().unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(overlay.get(Space::Meta, b"x").unwrap(), Some(b"x".to_vec()));
    overlay.inner().full.store(false, Ordering::SeqCst);
    // The first reopen attempt failed less than a second ago: wait it out
    // the way the committer does (it retries).
    let mut flushed = overlay.flush();
    for _ in 0..100 {
        if flushed.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        flushed = overlay.flush();
    }
    flushed.unwrap();
    assert_eq!(overlay.inner().durable_get(b"x"), Some(b"x".to_vec()));
}

#[test]
fn below_the_reserve_nothing_reaches_the_engine_and_nothing_is_lost() {
    let (overlay, free) = gated(100 << 20);
    overlay.apply(put("kept")).unwrap();
    // Another process fills the disk to a few MiB above nothing.
    free.store(4 << 20, Ordering::SeqCst);
    assert_eq!(overlay.apply(put("new")).unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(overlay.flush().unwrap_err().errno(), libc::ENOSPC);
    // The engine never saw the full disk: nothing to reopen.
    assert!(!overlay.is_broken());
    assert!(!overlay.inner().stuck.load(Ordering::SeqCst));
    free.store(100 << 20, Ordering::SeqCst);
    overlay.apply(put("new")).unwrap();
    overlay.flush().unwrap();
    assert_eq!(overlay.inner().durable_get(b"kept"), Some(b"kept".to_vec()));
    assert_eq!(overlay.inner().durable_get(b"new"), Some(b"new".to_vec()));
    assert_eq!(overlay.inner().reopens.load(Ordering::SeqCst), 0);
}
