//! A full disk: ENOSPC reaches the writer (at close(2) when the disk is
//! tight), the store stays consistent, and bytes a failed release was
//! given stay in memory for a later commit.

use backer_fs::vfs::*;

use crate::util::*;

fn errno<T: std::fmt::Debug>(r: backer_fs::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

#[test]
fn a_full_disk_gives_enospc_and_a_consistent_store() {
    use backer_fs::store::{Options, Store};
    use std::sync::Arc;
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
    // Reopen with a reserve larger than any disk: every new chunk is refused.
    let opts = Options {
        reserve_bytes: u64::MAX / 4,
        ..Options::default()
    };
    let store = Arc::new(Store::open_with(&path, opts).unwrap());
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    let (a, fh) = vfs.names().create(ME, ROOT, b"big", 0o644, false).unwrap();
    vfs.files().write(fh, 0, &random_bytes(100_000, 9)).unwrap(); // buffered
    assert_eq!(errno(vfs.files().fsync(fh)), libc::ENOSPC);
    assert_eq!(errno(vfs.files().release(fh)), libc::ENOSPC);
    assert_eq!(
        errno(vfs.files().release(fh)),
        libc::EBADF,
        "the handle is gone after a failed release"
    );
    // The bytes stay in memory for a later commit to store (a failed
    // release loses nothing it was given); the store holds none of them.
    // A commit goes on without them while there is no room.
    assert_eq!(vfs.names().getattr(a.ino).unwrap().size, 100_000);
    vfs.commit().unwrap();
    assert_eq!(
        vfs.names().getattr(a.ino).unwrap().size,
        100_000,
        "still kept"
    );
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
    use backer_fs::store::{Options, Store};
    use std::sync::Arc;
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
    let vfs = open(u64::MAX / 4);
    let (_, fh) = vfs.names().create(ME, ROOT, b"full", 0o644, false).unwrap();
    vfs.files().write(fh, 0, &random_bytes(100_000, 4)).unwrap();
    assert_eq!(errno(vfs.files().flush(fh)), libc::ENOSPC);
    assert_eq!(errno(vfs.files().release(fh)), libc::ENOSPC);
}
