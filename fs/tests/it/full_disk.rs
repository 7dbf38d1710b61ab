//! A full disk: ENOSPC reaches the writer (at close(2) when the disk is
//! tight), namespace operations included, the store stays consistent,
//! bytes a failed release was given stay in memory for a later commit,
//! and the last commit before a close waits for room rather than drop
//! acknowledged work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backer_fs::store::space_gate::SpaceGate;
use backer_fs::store::{Options, Store};
use backer_fs::vfs::*;

use crate::util::*;

fn errno<T: std::fmt::Debug>(r: backer_fs::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

/// Free bytes of the fake disk when it has room: close enough to the
/// 64 MiB reserve that the gate looks at every call (far from it, a
/// figure may be up to a second old, and the test would race it).
const ROOM: u64 = 100 << 20;

/// Store options whose free-space gate reads a fake disk: its free bytes
/// are what the test stores in the returned counter.
fn fake_disk() -> (Options, Arc<AtomicU64>) {
    let free = Arc::new(AtomicU64::new(ROOM));
    let f = free.clone();
    let gate = SpaceGate::with_probe(64 << 20, Box::new(move || Ok(f.load(Ordering::SeqCst))));
    let opts = Options {
        gate: Some(Arc::new(gate)),
        ..Options::default()
    };
    (opts, free)
}

#[test]
fn a_full_disk_gives_enospc_and_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Arc::new(Store::create(&path).unwrap());
        let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
        let (_, fh) = vfs.names().create(ME, ROOT, b"kept", 0o644, false).unwrap();
        vfs.files().write(fh, 0, b"kept bytes").unwrap();
        vfs.files().fsync(fh).unwrap();
        vfs.files().release(fh).unwrap();
    }
    let (opts, free) = fake_disk();
    let store = Arc::new(Store::open_with(&path, opts).unwrap());
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    let (a, fh) = vfs.names().create(ME, ROOT, b"big", 0o644, false).unwrap();
    vfs.files().write(fh, 0, &random_bytes(100_000, 9)).unwrap(); // buffered
                                                                  // Another process fills the disk: every write is refused.
    free.store(0, Ordering::SeqCst);
    assert_eq!(errno(vfs.files().fsync(fh)), libc::ENOSPC);
    assert_eq!(errno(vfs.files().release(fh)), libc::ENOSPC);
    assert_eq!(
        errno(vfs.files().release(fh)),
        libc::EBADF,
        "the handle is gone after a failed release"
    );
    // The bytes stay in memory for a later commit to store (a failed
    // release loses nothing it was given); the store holds none of them.
    assert_eq!(vfs.names().getattr(a.ino).unwrap().size, 100_000);
    // Namespace operations and commits are refused too, before the
    // engine could meet the full disk.
    assert_eq!(
        errno(vfs.names().mkdir(ME, ROOT, b"d", 0o755)),
        libc::ENOSPC
    );
    assert_eq!(errno(vfs.commit()), libc::ENOSPC);
    assert_eq!(
        vfs.names().getattr(a.ino).unwrap().size,
        100_000,
        "still kept"
    );
    // Room again: what was acknowledged (the create) is kept at the close.
    free.store(ROOM, Ordering::SeqCst);
    drop(vfs);
    let mut fs = TestFs { dir, vfs: None };
    fs.reopen();
    assert_eq!(fs.get(fs.path("kept").unwrap()), b"kept bytes");
    assert_eq!(fs.get(fs.path("big").unwrap()), b"");
}

/// A close leaves storing the bytes to the release only when the disk has
/// ample room; near a full disk it stores them itself, so close(2) is the
/// call that reports ENOSPC (the kernel drops a RELEASE's error).
#[test]
fn close_reports_enospc_when_the_disk_is_tight() {
    use backer_fs::store::packs::{free_space, AMPLE};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::create(&path).unwrap());
    let free = free_space(&path).unwrap();
    let open = |reserve: u64| {
        let opts = Options {
            reserve_bytes: reserve,
            ..Options::default()
        };
        Vfs::new(
            Arc::new(Store::open_with(&path, opts).unwrap()),
            VfsOptions::default(),
        )
        .unwrap()
    };
    // Room for these bytes, but not ample room: the close stores them.
    if free > AMPLE + (64 << 20) {
        let vfs = open(free - AMPLE / 2);
        let (a, fh) = vfs
            .names()
            .create(ME, ROOT, b"tight", 0o644, false)
            .unwrap();
        vfs.files().write(fh, 0, &random_bytes(100_000, 3)).unwrap();
        vfs.files().flush(fh).unwrap();
        vfs.commit().unwrap();
        let store = vfs.store();
        let e = backer_fs::tree::dir::get(&*store, vfs.root_hash().unwrap(), b"tight")
            .unwrap()
            .expect("stored at the close: in the next commit");
        assert_eq!((e.size, a.ino.0 > 0), (100_000, true));
        vfs.files().release(fh).unwrap();
    }
    // No room at all: close(2) gets ENOSPC, and the release too.
    let (opts, free) = fake_disk();
    let vfs = Vfs::new(
        Arc::new(Store::open_with(&path, opts).unwrap()),
        VfsOptions::default(),
    )
    .unwrap();
    let (_, fh) = vfs.names().create(ME, ROOT, b"full", 0o644, false).unwrap();
    free.store(0, Ordering::SeqCst);
    vfs.files().write(fh, 0, &random_bytes(100_000, 4)).unwrap();
    assert_eq!(errno(vfs.files().flush(fh)), libc::ENOSPC);
    assert_eq!(errno(vfs.files().release(fh)), libc::ENOSPC);
}

/// Acknowledged mkdirs that no commit could save before the disk filled
/// are saved by the last commit at close, which waits for room.
#[test]
fn the_last_commit_waits_for_room_and_keeps_acknowledged_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::create(&path).unwrap());
    let (opts, free) = fake_disk();
    let vfs = Arc::new(
        Vfs::new(
            Arc::new(Store::open_with(&path, opts).unwrap()),
            VfsOptions::default(),
        )
        .unwrap(),
    );
    // A committer that only commits at its end.
    let hour = std::time::Duration::from_secs(3600);
    let committer = Committer::spawn(vfs.clone(), hour, hour, |_| ()).unwrap();
    for i in 0..100 {
        vfs.names()
            .mkdir(ME, ROOT, format!("d{i}").as_bytes(), 0o755)
            .unwrap();
    }
    free.store(0, Ordering::SeqCst);
    assert_eq!(
        errno(vfs.names().mkdir(ME, ROOT, b"refused", 0o755)),
        libc::ENOSPC
    );
    let stopping = std::thread::spawn(move || drop(committer));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !stopping.is_finished(),
        "the last commit gave up at once on a full disk"
    );
    free.store(ROOM, Ordering::SeqCst);
    stopping.join().unwrap();
    drop(vfs);
    let mut fs = TestFs { dir, vfs: None };
    fs.reopen();
    for i in 0..100 {
        fs.vfs()
            .names()
            .lookup(ROOT, format!("d{i}").as_bytes())
            .unwrap_or_else(|e| panic!("d{i} was acknowledged and is gone: {e}"));
    }
    assert_eq!(
        errno(fs.vfs().names().lookup(ROOT, b"refused")),
        libc::ENOENT
    );
}
