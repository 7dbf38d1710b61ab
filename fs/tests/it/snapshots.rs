//! The read-only history view `.backer/snapshots/<time>/` through the
//! mount's door (`vfs::Door`, its only way in): one snapshot per commit, named by its UTC time, each reading back
//! its own version; hidden from the root's listing; refusing writes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use backer_fs::tree::Kind;
use backer_fs::vfs::{Caller, Door, Ino, OpenMode, RESERVED_NAME, ROOT};
use backer_fs::Error;

use crate::util::{put, vfs_with_clock, ME};

const ME_CALLING: Caller = Caller {
    uid: ME.uid,
    gid: ME.gid,
    pid: 1,
    may_keep_setid: false,
};

fn names(d: &Door, ino: Ino) -> Vec<String> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        // Small pages: continuation by cookie must work.
        let page = d.readdir(ino, cookie, 2).unwrap();
        let Some(last) = page.last() else { break };
        cookie = last.cookie;
        out.extend(
            page.iter()
                .map(|e| String::from_utf8(e.name.clone()).unwrap()),
        );
    }
    out
}

fn read_all(d: &Door, ino: Ino) -> Vec<u8> {
    let fh = d.open(ino, OpenMode::default()).unwrap();
    let size = d.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while (out.len() as u64) < size {
        let n = d.read(ino, fh, out.len() as u64, 1000, &mut buf).unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(d.read(ino, fh, size, 10, &mut buf).unwrap(), 0);
    d.release(ino, fh).unwrap();
    out
}

#[test]
fn snapshots_show_every_committed_version_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let v = Arc::new(vfs_with_clock(dir.path(), clock.clone()));
    let d = Door::new(v.clone(), true);
    v.names().mkdir(ME, ROOT, b"sub", 0o755).unwrap();
    let sub = v.names().lookup(ROOT, b"sub").unwrap().ino;
    let versions: Vec<Vec<u8>> = vec![
        b"first".to_vec(),
        crate::util::random_bytes(300_000, 7),
        b"third, short".to_vec(),
    ];
    for (i, data) in versions.iter().enumerate() {
        put(&v, sub, "f.txt", data);
        clock.store(1_700_000_000_000 + 1_234 * (i as i64 + 1), Ordering::SeqCst);
        v.commit().unwrap().expect("a commit");
    }
    // A second commit in the third's millisecond replaces it by name.
    v.names().symlink(ME, ROOT, b"link", b"sub/f.txt").unwrap();
    v.commit().unwrap().expect("a commit");

    // `.backer` is found by name but not listed.
    assert!(backer_fs::vfs::is_view(
        d.lookup(ROOT, RESERVED_NAME).unwrap().ino
    ));
    assert!(!backer_fs::vfs::is_view(
        d.lookup(ROOT, b"sub").unwrap().ino
    ));
    let backer = d.lookup(ROOT, RESERVED_NAME).unwrap();
    assert_eq!(backer.kind, Kind::Dir);
    assert_eq!(backer.perm & 0o222, 0);
    assert!(!names(&d, ROOT).contains(&".backer".to_string()));
    assert_eq!(names(&d, backer.ino), [".", "..", "snapshots"]);

    let snaps = d.lookup(backer.ino, b"snapshots").unwrap();
    let listed = names(&d, snaps.ino);
    assert_eq!(
        listed,
        [
            ".",
            "..",
            "2023-11-14T22:13:21.234Z",
            "2023-11-14T22:13:22.468Z",
            "2023-11-14T22:13:23.702Z",
        ]
    );
    for (name, want) in listed[2..].iter().zip(&versions) {
        let root = d.lookup(snaps.ino, name.as_bytes()).unwrap();
        assert_eq!(root.kind, Kind::Dir);
        let s = d.lookup(root.ino, b"sub").unwrap();
        assert_eq!(names(&d, s.ino), [".", "..", "f.txt"]);
        let f = d.lookup(s.ino, b"f.txt").unwrap();
        assert_eq!(f.kind, Kind::File);
        assert_eq!(f.size, want.len() as u64);
        assert_eq!(f.perm, 0o444);
        assert_eq!(&read_all(&d, f.ino), want);
        // Lookups are stable.
        assert_eq!(d.lookup(s.ino, b"f.txt").unwrap().ino, f.ino);
        assert_eq!(d.lookup(s.ino, b"..").unwrap().ino, root.ino);
    }
    // The newest snapshot of the last millisecond holds the symlink.
    let last = d.lookup(snaps.ino, listed[4].as_bytes()).unwrap();
    let link = d.lookup(last.ino, b"link").unwrap();
    assert_eq!(link.kind, Kind::Symlink);
    assert_eq!(d.readlink(link.ino).unwrap(), b"sub/f.txt");
    assert!(matches!(
        d.lookup(snaps.ino, b"2000-01-01T00:00:00.000Z"),
        Err(Error::NotFound)
    ));

    // New commits appear.
    clock.store(1_700_000_100_000, Ordering::SeqCst);
    put(&v, ROOT, "new", b"x");
    v.commit().unwrap().expect("a commit");
    assert!(names(&d, snaps.ino).contains(&"2023-11-14T22:15:00.000Z".to_string()));

    // Nothing there can be written (the door refuses every write that
    // names the view: fs/tests/it/door.rs).
    let f = {
        let r = d.lookup(snaps.ino, listed[2].as_bytes()).unwrap();
        let s = d.lookup(r.ino, b"sub").unwrap();
        d.lookup(s.ino, b"f.txt").unwrap()
    };
    for ino in [backer.ino, snaps.ino, f.ino] {
        assert!(matches!(
            d.access(&ME_CALLING, ino, 2),
            Err(Error::ReadOnly)
        ));
        d.access(&ME_CALLING, ino, 4).unwrap();
    }
    assert!(matches!(
        d.open(
            f.ino,
            OpenMode {
                write: true,
                ..OpenMode::default()
            }
        ),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        d.open(snaps.ino, OpenMode::default()),
        Err(Error::IsDir)
    ));
    // The live namespace still has no `.backer` and refuses to make one.
    assert!(matches!(
        v.names().lookup(ROOT, RESERVED_NAME),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        v.names().mkdir(ME, ROOT, RESERVED_NAME, 0o755),
        Err(Error::Exists)
    ));
}

#[test]
fn a_store_without_commits_has_an_empty_snapshot_folder() {
    let dir = tempfile::tempdir().unwrap();
    let v = Arc::new(vfs_with_clock(dir.path(), Arc::new(AtomicI64::new(0))));
    let d = Door::new(v.clone(), true);
    let backer = d.lookup(ROOT, RESERVED_NAME).unwrap();
    let snaps = d.lookup(backer.ino, b"snapshots").unwrap();
    assert_eq!(names(&d, snaps.ino), [".", ".."]);
    assert!(matches!(
        d.lookup(backer.ino, b"other"),
        Err(Error::NotFound)
    ));
}

#[test]
fn forgotten_view_inodes_are_dropped_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000));
    let v = Arc::new(vfs_with_clock(dir.path(), clock));
    let d = Door::new(v.clone(), true);
    put(&v, ROOT, "a", b"bytes");
    v.commit().unwrap().expect("a commit");
    let backer = d.lookup(ROOT, RESERVED_NAME).unwrap().ino;
    let snaps = d.lookup(backer, b"snapshots").unwrap().ino;
    let snap = d.lookup(snaps, b"1970-01-01T00:00:01.000Z").unwrap().ino;
    let a = d.lookup(snap, b"a").unwrap().ino;
    assert_eq!(d.lookup(snap, b"a").unwrap().ino, a);
    // Two lookups: one forget leaves it, the second drops it.
    d.forget(a, 1);
    assert_eq!(d.getattr(a).unwrap().size, 5);
    d.forget(a, 1);
    assert!(matches!(d.getattr(a), Err(Error::NotFound)));
    let again = d.lookup(snap, b"a").unwrap().ino;
    assert_eq!(read_all(&d, again), b"bytes");
    // The fixed folders are never dropped.
    d.forget(snaps, 10);
    d.forget(backer, 10);
    assert_eq!(d.getattr(snaps).unwrap().kind, Kind::Dir);
    assert_eq!(d.getattr(backer).unwrap().kind, Kind::Dir);
}
