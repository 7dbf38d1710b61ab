//! The one "root published" event (`Vfs::observe_roots`): the observer
//! hears of a root only once the engine made it durable, holds no vfs lock
//! (it may call back into the vfs), and hears of an installed merge only
//! after the install was let go (on a mount: after the kernel was told).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backer_fs::store::mem_kv::MemKv;
use backer_fs::store::overlay_kv::OverlayKv;
use backer_fs::store::Store;
use backer_fs::vfs::{read_log, CommitInfo, Vfs, VfsOptions, ROOT};

use crate::kv_suite::Shared;
use crate::util::ME;

struct Fixture {
    _dir: tempfile::TempDir,
    /// The engine under a write-back overlay: what reached it is what a
    /// crash would leave (the overlay hands writes down at a flush).
    disk: Arc<MemKv>,
    vfs: Arc<Vfs>,
    /// What the observer saw: the commit, and the newest commit on disk
    /// then (its sequence number).
    seen: mpsc::Receiver<(CommitInfo, u64)>,
}

/// A vfs over an overlay on `disk`, whose observer records what it is told, after
/// calling back into the vfs (which deadlocks if the vfs lock is held).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(MemKv::new());
    let kv = Arc::new(OverlayKv::new(Shared::new(disk.clone())));
    let store = Store::with_engine(dir.path(), kv, Default::default()).unwrap();
    let vfs = Arc::new(Vfs::new(Arc::new(store), VfsOptions::default()).unwrap());
    let (tx, seen) = mpsc::channel();
    let (weak, on_disk) = (Arc::downgrade(&vfs), disk.clone());
    let tx = Mutex::new(tx);
    vfs.observe_roots(move |c| {
        let v = weak.upgrade().expect("the vfs lives");
        assert_eq!(v.root_hash().unwrap(), c.root, "the vfs answers");
        v.names().getattr(ROOT).unwrap();
        let log = read_log(&*on_disk, 1).unwrap();
        let seq = log.first().map_or(0, |c| c.seq);
        let _ = tx.lock().unwrap().send((c.clone(), seq));
    });
    Fixture {
        _dir: dir,
        disk,
        vfs,
        seen,
    }
}

/// Runs `f` on another thread; fails the test if it does not end soon
/// (an observer called under the vfs lock deadlocks when it calls back).
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("finished (no deadlock)")
}

fn put(vfs: &Vfs, name: &[u8]) {
    let (_, fh) = vfs.names().create(ME, ROOT, name, 0o644, false).unwrap();
    vfs.files().write(fh, 0, b"bytes").unwrap();
    vfs.files().release(fh).unwrap();
}

#[test]
fn a_root_is_published_once_durable_and_without_the_vfs_lock() {
    let f = fixture();
    let vfs = f.vfs.clone();
    // A commit that is not made durable is not published.
    put(&vfs, b"a");
    let first = vfs.commit().unwrap().unwrap();
    assert!(f.seen.try_recv().is_err(), "not durable, not told");
    assert!(read_log(&*f.disk, 1).unwrap().is_empty());

    // Every durable commit path tells it, and the disk holds it by then.
    let v = vfs.clone();
    within_seconds(move || v.commit_durable().unwrap());
    let (c, on_disk) = f.seen.try_recv().expect("told after the flush");
    assert_eq!((c.seq, on_disk), (first.seq, first.seq));

    let v = vfs.clone();
    let second = within_seconds(move || {
        put(&v, b"b");
        v.sync().unwrap();
        v.root_hash().unwrap()
    });
    let (c, on_disk) = f.seen.try_recv().expect("told by sync");
    assert_eq!((c.root, on_disk), (second, c.seq));

    let v = vfs.clone();
    within_seconds(move || {
        put(&v, b"c");
        v.commit_background(Default::default()).unwrap()
    });
    let (c, on_disk) = f.seen.try_recv().expect("told by the background commit");
    assert_eq!(on_disk, c.seq);
    assert!(f.seen.try_recv().is_err(), "each root once");
}

#[test]
fn an_installed_root_is_published_only_after_the_install_is_let_go() {
    let f = fixture();
    let vfs = f.vfs.clone();
    put(&vfs, b"a");
    let old = vfs.commit_durable().unwrap().unwrap();
    put(&vfs, b"b");
    vfs.commit_durable().unwrap().unwrap();
    while f.seen.try_recv().is_ok() {}

    // Install the older tree, as a merge would a peer's.
    let installed = vfs
        .install_with(|_, base| Ok(Some((old.root, base))))
        .unwrap()
        .expect("installed");
    let durable = vfs.make_durable().unwrap();
    // Another flush meanwhile (an fsync, the committer) tells nothing yet:
    // on a mount the kernel has not been told of the install.
    let v = vfs.clone();
    within_seconds(move || v.sync().unwrap());
    assert!(f.seen.try_recv().is_err(), "held while the install lives");
    assert!(vfs.names().lookup(ROOT, b"b").is_err(), "installed");
    let seq = installed.commit.seq;
    drop(installed);
    vfs.publish(durable);
    let (c, on_disk) = f.seen.try_recv().expect("told once let go");
    assert_eq!((c.seq, c.root, on_disk), (seq, old.root, seq));
}

/// Makes `on` the observer of `vfs`: it hears each root with the vfs and
/// a sender to the receiver returned.
fn observe_with<T: Send + 'static>(
    vfs: &Arc<Vfs>,
    on: impl Fn(&Arc<Vfs>, &CommitInfo, mpsc::Sender<T>) + Send + Sync + 'static,
) -> mpsc::Receiver<T> {
    let weak = Arc::downgrade(vfs);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    vfs.observe_roots(move |c| {
        let v = weak.upgrade().unwrap();
        let tx = tx.lock().unwrap().clone();
        on(&v, c, tx);
    });
    rx
}

#[test]
fn an_observer_may_make_a_durable_commit_itself() {
    let f = fixture();
    let vfs = f.vfs.clone();
    let rx = observe_with(&vfs, |v, c, tx| {
        if c.seq == 1 {
            put(v, b"from the observer");
            v.sync().unwrap();
        }
        let _ = tx.send(c.seq);
    });
    drop(f.seen);
    let v = vfs.clone();
    within_seconds(move || {
        put(&v, b"a");
        v.sync().unwrap()
    });
    // The observer's own commit is told after it returned, in order.
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn an_observer_may_replace_itself() {
    let f = fixture();
    let vfs = f.vfs.clone();
    let rx = observe_with(&vfs, |v, c, tx| {
        let _ = tx.send(("first", c.seq));
        let tx = Mutex::new(tx);
        v.observe_roots(move |c| {
            let _ = tx.lock().unwrap().send(("second", c.seq));
        });
    });
    drop(f.seen);
    let v = vfs.clone();
    within_seconds(move || {
        put(&v, b"a");
        v.sync().unwrap();
        put(&v, b"b");
        v.sync().unwrap()
    });
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [("first", 1), ("second", 2)]
    );
}
