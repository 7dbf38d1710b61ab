//! An operation whose transaction does not apply (the engine fails)
//! leaves the vfs's memory as it was: no handle, no open file claiming a
//! size or bytes the store does not hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use backer_fs::store::mem_kv::MemKv;
use backer_fs::store::{Space, Store};
use backer_fs::vfs::{Attr, Defer, Fh, Ino, SetAttr, SetTime, Vfs, VfsOptions, ROOT};

use crate::kv_suite::Shared;
use crate::util::ME;

#[test]
fn failed_opens_and_creates_leave_no_handle_or_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(Shared::new(Arc::new(MemKv::new())));
    let refuse = kv.refuse.clone();
    let store = Arc::new(Store::with_engine(dir.path(), kv, Default::default()).unwrap());
    let vfs = Vfs::new(store.clone(), VfsOptions::default()).unwrap();
    let (f, fh) = hello(&vfs);
    vfs.files().release(fh).unwrap();

    refuse.store(true, Ordering::SeqCst);
    assert!(
        vfs.files().open(f.ino, true, false).is_err(),
        "O_TRUNC: not applied"
    );
    assert_eq!(vfs.names().getattr(f.ino).unwrap().size, 5, "nor claimed");
    assert!(vfs.names().create(ME, ROOT, b"g", 0o644, false).is_err());
    refuse.store(false, Ordering::SeqCst);

    let fh = vfs.files().open(f.ino, false, false).unwrap();
    assert_eq!(vfs.files().read(fh, 0, 100).unwrap(), b"hello");
    vfs.files().release(fh).unwrap();
    // The failed create's inode number is handed out again: nothing of
    // the failed open of it is left, so once closed and unlinked it is
    // gone, not kept as an open orphan.
    let (g, fh) = vfs.names().create(ME, ROOT, b"g", 0o644, false).unwrap();
    vfs.files().write(fh, 0, b"abc").unwrap();
    vfs.files().release(fh).unwrap();
    vfs.names().unlink(ROOT, b"g").unwrap();
    let orphans = store.kv().scan(Space::Orphans, &[], None, 10).unwrap();
    assert!(orphans.is_empty(), "{g:?} is no orphan: {orphans:?}");
    assert!(vfs.names().getattr(g.ino).is_err());
}

/// Creates `f` in the root and writes "hello" through the handle
/// returned (still open).
fn hello(vfs: &Vfs) -> (Attr, Fh) {
    let (f, fh) = vfs.names().create(ME, ROOT, b"f", 0o644, false).unwrap();
    vfs.files().write(fh, 0, b"hello").unwrap();
    (f, fh)
}

/// Runs `op` while the engine refuses writes: it must fail.
fn refused<T: std::fmt::Debug>(refuse: &AtomicBool, op: impl FnOnce() -> backer_fs::Result<T>) {
    refuse.store(true, Ordering::SeqCst);
    let out = op();
    refuse.store(false, Ordering::SeqCst);
    assert!(out.is_err(), "the transaction is refused: {out:?}");
}

/// The bytes of `ino` that the store holds, read by a vfs that never had
/// the file open.
fn stored(store: Arc<Store>, ino: Ino) -> Vec<u8> {
    let fresh = Vfs::new(store, VfsOptions::default()).unwrap();
    let fh = fresh.files().open(ino, false, false).unwrap();
    fresh.files().read(fh, 0, 100).unwrap()
}

/// A vfs over an engine that refuses writes while `refuse` is set.
fn refusing() -> (
    tempfile::TempDir,
    Arc<Store>,
    Vfs,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (dir, store, vfs, kv) = over_shared(VfsOptions::default());
    (dir, store, vfs, kv.refuse.clone())
}

/// A vfs opened with `opts` over an engine whose failures the returned
/// [`Shared`] injects.
fn over_shared(opts: VfsOptions) -> (tempfile::TempDir, Arc<Store>, Vfs, Arc<Shared>) {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(Shared::new(Arc::new(MemKv::new())));
    let engine = kv.clone();
    let store = Arc::new(Store::with_engine(dir.path(), engine, Default::default()).unwrap());
    let vfs = Vfs::new(store.clone(), opts).unwrap();
    (dir, store, vfs, kv)
}

#[test]
fn a_failed_fsync_keeps_the_bytes_to_store_and_a_retry_stores_them() {
    let (_dir, store, vfs, refuse) = refusing();
    let (f, fh) = hello(&vfs);
    refused(&refuse, || vfs.files().fsync(fh));
    vfs.files().fsync(fh).unwrap();
    assert_eq!(stored(store, f.ino), b"hello");
}

#[test]
fn a_failed_truncate_leaves_the_other_handles_bytes() {
    let (_dir, _store, vfs, refuse) = refusing();
    let (f, fh) = hello(&vfs);
    vfs.files().release(fh).unwrap();
    let held = vfs.files().open(f.ino, false, false).unwrap();
    refused(&refuse, || vfs.files().open(f.ino, true, false));
    assert_eq!(vfs.files().read(held, 0, 100).unwrap(), b"hello");
    assert_eq!(vfs.names().getattr(f.ino).unwrap().size, 5);
    vfs.files().release(held).unwrap();
}

#[test]
fn a_failed_last_release_keeps_the_bytes_and_the_next_commit_stores_them() {
    let (_dir, store, vfs, refuse) = refusing();
    let (f, fh) = hello(&vfs);
    refused(&refuse, || vfs.files().release(fh));
    assert!(
        vfs.files().read(fh, 0, 100).is_err(),
        "the handle is gone all the same"
    );
    assert_eq!(
        vfs.names().getattr(f.ino).unwrap().size,
        5,
        "the bytes are kept"
    );
    vfs.commit().unwrap();
    assert_eq!(stored(store, f.ino), b"hello");
}

#[test]
fn a_failed_last_release_of_an_unlinked_file_frees_it_at_the_next_commit() {
    let (_dir, store, vfs, refuse) = refusing();
    let (f, fh) = hello(&vfs);
    vfs.names().unlink(ROOT, b"f").unwrap();
    refused(&refuse, || vfs.files().release(fh));
    let orphans = || store.kv().scan(Space::Orphans, &[], None, 10).unwrap();
    assert_eq!(orphans().len(), 1, "not freed: the release did not apply");
    vfs.commit().unwrap();
    assert!(orphans().is_empty(), "the commit finished the close");
    assert!(vfs.names().getattr(f.ino).is_err(), "and the inode is gone");
}

#[test]
fn a_failed_truncate_of_a_file_whose_close_is_pending_keeps_its_bytes() {
    let cut = SetAttr {
        size: Some(2),
        ..SetAttr::default()
    };
    pending_close_survives(|vfs, ino| vfs.names().setattr(ino, &cut).map(drop));
}

#[test]
fn a_failed_o_trunc_open_of_a_file_whose_close_is_pending_keeps_its_bytes() {
    pending_close_survives(|vfs, ino| vfs.files().open(ino, true, false).map(drop));
}

/// A file whose last release failed (its close pending) and on which
/// `cut` then fails still has its bytes, and a later commit stores them.
fn pending_close_survives(cut: impl Fn(&Vfs, Ino) -> backer_fs::Result<()>) {
    let (_dir, store, vfs, refuse) = refusing();
    let (f, fh) = hello(&vfs);
    refused(&refuse, || vfs.files().release(fh));
    refused(&refuse, || cut(&vfs, f.ino));
    assert_eq!(vfs.names().getattr(f.ino).unwrap().size, 5, "not cut");
    let fh = vfs.files().open(f.ino, false, false).unwrap();
    assert_eq!(vfs.files().read(fh, 0, 100).unwrap(), b"hello");
    vfs.files().release(fh).unwrap();
    vfs.commit().unwrap();
    assert_eq!(stored(store, f.ino), b"hello");
}

#[test]
fn a_failed_setattr_of_the_mtime_keeps_the_last_writes_mtime() {
    // A clock a second later at every look, so the write's time is not
    // the create's.
    let tick = Arc::new(std::sync::atomic::AtomicI64::new(1_000));
    let clock = move || backer_fs::tree::Timestamp {
        secs: tick.fetch_add(1, Ordering::SeqCst),
        nanos: 0,
    };
    let opts = VfsOptions {
        clock: Arc::new(clock),
        ..VfsOptions::default()
    };
    let (_dir, _store, vfs, kv) = over_shared(opts);
    let refuse = &kv.refuse;
    let (f, fh) = hello(&vfs);
    let set = SetAttr {
        mtime: Some(SetTime::At(backer_fs::tree::Timestamp::default())),
        ..SetAttr::default()
    };
    refused(refuse, || vfs.names().setattr(f.ino, &set));
    vfs.files().release(fh).unwrap();
    assert!(
        vfs.names().getattr(f.ino).unwrap().mtime > f.mtime,
        "the write's mtime, not the create's"
    );
}

/// A vfs with `f` (holding "hello", committed) whose release failed and
/// whose every write keeps failing (`kv.refuse_ino` holds its inode: see
/// [`Shared`]) until [`Stuck::unstick`], and `g` created and open
/// through `gh`, holding "other".
struct Stuck {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    vfs: Vfs,
    kv: Arc<Shared>,
    f: Attr,
    g: Attr,
    gh: Fh,
}

impl Stuck {
    fn new() -> Stuck {
        let (_dir, store, vfs, kv) = over_shared(VfsOptions::default());
        let (f, fh) = hello(&vfs);
        vfs.commit().unwrap();
        kv.refuse_ino.store(f.ino.0, Ordering::SeqCst);
        assert!(vfs.files().release(fh).is_err(), "its release is refused");
        let (g, gh) = vfs.names().create(ME, ROOT, b"g", 0o644, false).unwrap();
        vfs.files().write(gh, 0, b"other").unwrap();
        Stuck {
            _dir,
            store,
            vfs,
            kv,
            f,
            g,
            gh,
        }
    }

    /// `f`'s writes apply again.
    fn unstick(&self) {
        self.kv.refuse_ino.store(0, Ordering::SeqCst);
    }
}

#[test]
fn a_file_whose_release_keeps_failing_fails_no_other_files_fsync() {
    let s = Stuck::new();
    s.vfs.files().fsync(s.gh).unwrap();
    assert_eq!(stored(s.store.clone(), s.g.ino), b"other");
    s.vfs.files().release(s.gh).unwrap();

    s.unstick();
    let gh = s.vfs.files().open(s.g.ino, false, false).unwrap();
    s.vfs.files().fsync(gh).unwrap();
    assert_eq!(stored(s.store, s.f.ino), b"hello", "retried, then stored");
}

#[test]
fn a_file_whose_release_keeps_failing_stalls_no_background_commit() {
    let s = Stuck::new();
    s.vfs.files().release(s.gh).unwrap();
    let now = Defer {
        quiet: std::time::Duration::ZERO,
        max: std::time::Duration::ZERO,
    };
    let (info, again) = s.vfs.commit_background(now).unwrap();
    assert!(info.is_some(), "the other file's change is committed");
    assert!(again, "the stuck close is to be tried again");
    assert_eq!(stored(s.store.clone(), s.g.ino), b"other");

    s.unstick();
    let (_, again) = s.vfs.commit_background(now).unwrap();
    assert!(!again, "nothing left to try");
    assert_eq!(stored(s.store, s.f.ino), b"hello", "retried, then stored");
}
