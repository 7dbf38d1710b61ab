//! One test suite run against every [`Kv`] engine (sled and memory), so a
//! new engine only has to pass it.

use backer_fs::store::kv::{Batch, Kv, Space};
use backer_fs::store::mem_kv::MemKv;
use backer_fs::store::overlay_kv::OverlayKv;
use backer_fs::store::sled_kv::SledKv;

fn engines() -> Vec<(&'static str, Box<dyn Kv>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledKv::open(&dir.path().join("db"), 8 << 20).unwrap();
    vec![
        ("mem", Box::new(MemKv::new()), None),
        ("sled", Box::new(sled), Some(dir)),
    ]
}

#[test]
fn get_put_remove_and_spaces_are_separate() {
    for (name, kv, _d) in engines() {
        let mut b = Batch::default();
        b.put(Space::Inodes, b"k".to_vec(), b"inode".to_vec());
        b.put(Space::Nodes, b"k".to_vec(), b"node".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(
            kv.get(Space::Inodes, b"k").unwrap().as_deref(),
            Some(&b"inode"[..]),
            "{name}"
        );
        assert_eq!(
            kv.get(Space::Nodes, b"k").unwrap().as_deref(),
            Some(&b"node"[..]),
            "{name}"
        );
        assert_eq!(kv.get(Space::Meta, b"k").unwrap(), None, "{name}");
        let mut b = Batch::default();
        b.remove(Space::Inodes, b"k".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(kv.get(Space::Inodes, b"k").unwrap(), None, "{name}");
        assert!(kv.get(Space::Nodes, b"k").unwrap().is_some(), "{name}");
    }
}

#[test]
fn batch_later_write_wins() {
    for (name, kv, _d) in engines() {
        let mut b = Batch::default();
        b.put(Space::Meta, b"a".to_vec(), b"1".to_vec());
        b.remove(Space::Meta, b"a".to_vec());
        b.put(Space::Meta, b"b".to_vec(), b"1".to_vec());
        b.put(Space::Meta, b"b".to_vec(), b"2".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(kv.get(Space::Meta, b"a").unwrap(), None, "{name}");
        assert_eq!(
            kv.get(Space::Meta, b"b").unwrap().as_deref(),
            Some(&b"2"[..]),
            "{name}"
        );
    }
}

#[test]
fn scan_prefix_after_limit_and_last() {
    for (name, kv, _d) in engines() {
        let mut b = Batch::default();
        for k in [&b"a1"[..], b"a2", b"a3", b"b1", b"a\xff", b"\xff\xff"] {
            b.put(Space::Dirents, k.to_vec(), k.to_vec());
        }
        b.put(Space::Cookies, b"a0".to_vec(), b"x".to_vec());
        kv.apply(b).unwrap();
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(kv.scan(Space::Dirents, b"a", None, 10).unwrap()),
            vec![
                b"a1".to_vec(),
                b"a2".to_vec(),
                b"a3".to_vec(),
                b"a\xff".to_vec()
            ],
            "{name}"
        );
        assert_eq!(
            keys(kv.scan(Space::Dirents, b"a", Some(b"a1"), 2).unwrap()),
            vec![b"a2".to_vec(), b"a3".to_vec()],
            "{name}"
        );
        assert_eq!(
            keys(kv.scan(Space::Dirents, b"\xff", None, 10).unwrap()),
            vec![b"\xff\xff".to_vec()],
            "{name}"
        );
        assert_eq!(
            kv.last(Space::Dirents, b"a").unwrap().map(|p| p.0),
            Some(b"a\xff".to_vec()),
            "{name}"
        );
        assert_eq!(kv.last(Space::Dirents, b"c").unwrap(), None, "{name}");
        assert_eq!(
            kv.scan(Space::Commits, b"", None, 10).unwrap().len(),
            0,
            "{name}"
        );
        assert_eq!(
            kv.scan(Space::Dirents, b"", None, 100).unwrap().len(),
            6,
            "{name}"
        );
    }
}

#[test]
fn sled_batches_survive_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = SledKv::open(&dir.path().join("db"), 8 << 20).unwrap();
        let mut b = Batch::default();
        for i in 0u32..1000 {
            b.put(Space::Chunks, i.to_be_bytes().to_vec(), vec![7u8; 100]);
        }
        kv.apply(b).unwrap();
        kv.flush().unwrap();
    }
    let kv = SledKv::open(&dir.path().join("db"), 8 << 20).unwrap();
    assert_eq!(
        kv.scan(Space::Chunks, b"", None, usize::MAX).unwrap().len(),
        1000
    );
}

#[test]
fn sled_refuses_a_second_open_while_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _kv = SledKv::open(&dir.path().join("db"), 8 << 20).unwrap();
    // A second process would be refused; within one process sled's lock is
    // per file handle too, so a second open fails the same way.
    match SledKv::open(&dir.path().join("db"), 8 << 20) {
        Err(e) => assert_eq!(e.errno(), libc::EBUSY, "{e}"),
        Ok(_) => panic!("second open of a locked store succeeded"),
    }
}

#[test]
fn overlay_merges_pending_writes_and_hands_them_over_at_flush_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let kv = OverlayKv::new(SledKv::open(&path, 8 << 20).unwrap());
        let mut b = Batch::default();
        b.put(Space::Dirents, b"a".to_vec(), b"1".to_vec());
        b.put(Space::Dirents, b"b".to_vec(), b"2".to_vec());
        kv.apply(b).unwrap();
        kv.flush().unwrap();
        // Pending on top of flushed: a removal and a new key.
        let mut b = Batch::default();
        b.remove(Space::Dirents, b"a".to_vec());
        b.put(Space::Dirents, b"c".to_vec(), b"3".to_vec());
        kv.apply(b).unwrap();
        let keys: Vec<_> = kv
            .scan(Space::Dirents, b"", None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(kv.get(Space::Dirents, b"a").unwrap(), None);
        // Dropped without a flush: a clean close keeps the pending writes.
    }
    let kv = SledKv::open(&path, 8 << 20).unwrap();
    assert_eq!(kv.get(Space::Dirents, b"a").unwrap(), None);
    assert_eq!(
        kv.get(Space::Dirents, b"c").unwrap().as_deref(),
        Some(&b"3"[..])
    );
}

/// An engine the test can look into while an overlay sits on it (what
/// the overlay handed down is what a crash would leave), and can make
/// fail.
pub(crate) struct Shared {
    engine: std::sync::Arc<MemKv>,
    /// While set, every apply fails, as an engine on a failing disk would.
    pub(crate) refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While not 0, every apply that writes this inode's record fails: one
    /// file stuck, the rest of the store working.
    pub(crate) refuse_ino: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    pub(crate) fn new(engine: std::sync::Arc<MemKv>) -> Shared {
        Shared {
            engine,
            refuse: Default::default(),
            refuse_ino: Default::default(),
        }
    }
}

impl Kv for Shared {
    fn get(&self, space: Space, key: &[u8]) -> backer_fs::Result<Option<Vec<u8>>> {
        self.engine.get(space, key)
    }
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> backer_fs::Result<Vec<backer_fs::store::kv::KeyValue>> {
        self.engine.scan(space, prefix, after, limit)
    }
    fn last(
        &self,
        space: Space,
        prefix: &[u8],
    ) -> backer_fs::Result<Option<backer_fs::store::kv::KeyValue>> {
        self.engine.last(space, prefix)
    }
    fn apply(&self, batch: Batch) -> backer_fs::Result<()> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            let e = std::io::Error::other("the engine refuses writes");
            return Err(backer_fs::Error::io("apply", e));
        }
        let ino = self.refuse_ino.load(std::sync::atomic::Ordering::SeqCst);
        if ino != 0
            && batch
                .ops
                .iter()
                .any(|(s, k, _)| *s == Space::Inodes && k[..] == ino.to_be_bytes())
        {
            let e = std::io::Error::other("the engine refuses this inode's writes");
            return Err(backer_fs::Error::io("apply", e));
        }
        self.engine.apply(batch)
    }
    fn flush(&self) -> backer_fs::Result<()> {
        self.engine.flush()
    }
    fn size_on_disk(&self) -> backer_fs::Result<u64> {
        self.engine.size_on_disk()
    }
}

/// The store syncs its packs in this hook: it must run before the engine
/// holds any of the writes it hands down (at a flush, and when enough
/// writes gathered that the overlay hands them down by itself), so no
/// chunk index entry reaches the disk before the bytes it names.
#[test]
fn overlay_runs_its_hook_before_the_engine_gets_the_writes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let engine = Arc::new(MemKv::new());
    let kv = OverlayKv::new(Shared::new(engine.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (engine.clone(), runs.clone());
    kv.before_handing_down(Box::new(move |_| {
        // Whatever was taken is not in the engine yet.
        assert_eq!(seen.get(Space::Chunks, b"last").unwrap(), None);
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }));
    let mut b = Batch::default();
    b.put(Space::Chunks, b"last".to_vec(), b"1".to_vec());
    kv.apply(b).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing handed down yet");
    assert_eq!(engine.get(Space::Chunks, b"last").unwrap(), None);
    kv.flush().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(engine.get(Space::Chunks, b"last").unwrap().is_some());
    // Enough writes without a flush: handed down by the overlay itself.
    engine
        .apply({
            let mut b = Batch::default();
            b.remove(Space::Chunks, b"last".to_vec());
            b
        })
        .unwrap();
    let mut b = Batch::default();
    for i in 0u32..70_000 {
        b.put(Space::Inodes, i.to_be_bytes().to_vec(), vec![1]);
    }
    b.put(Space::Chunks, b"last".to_vec(), b"2".to_vec());
    kv.apply(b).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(engine.get(Space::Chunks, b"last").unwrap().is_some());
    // A failing hook hands nothing down and keeps the writes.
    let kv = OverlayKv::new(Shared::new(Arc::new(MemKv::new())));
    kv.before_handing_down(Box::new(|_| Err(backer_fs::Error::NoSpace)));
    let mut b = Batch::default();
    b.put(Space::Chunks, b"k".to_vec(), b"v".to_vec());
    kv.apply(b).unwrap();
    assert!(kv.flush().is_err());
    assert!(kv.get(Space::Chunks, b"k").unwrap().is_some());
}
