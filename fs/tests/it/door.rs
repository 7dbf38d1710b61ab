//! The mount's door (`vfs::Door`) without a mount: which of the history
//! view and the live namespace answers, EROFS for every write that names
//! the view, setuid/setgid dropping by who asks, and O_APPEND under the
//! kernel's writeback cache. These rules were the FUSE adapter's, where
//! only a real mount (and for set-id, root with setresuid) could test them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use backer_fs::tree::Kind;
use backer_fs::vfs::*;
use backer_fs::Error;

use crate::util::{random_bytes, vfs_with_clock};

const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 42,
    may_keep_setid: false,
};
const ROOT_USER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
    may_keep_setid: true,
};
const RW: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};
const RO: OpenMode = OpenMode {
    write: false,
    truncate: false,
    append: false,
};

struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<AtomicI64>,
    door: Door,
}

fn fixture(writeback: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let vfs = Arc::new(vfs_with_clock(dir.path(), clock.clone()));
    Fixture {
        _dir: dir,
        clock,
        door: Door::new(vfs, writeback),
    }
}

impl Fixture {
    /// A new file `name` in the root holding `data`, closed.
    fn put(&self, name: &str, data: &[u8], mode: u32) -> Ino {
        let d = &self.door;
        let (a, fh) = d.create(&USER, ROOT, name.as_bytes(), mode, 0, RW).unwrap();
        d.write(&USER, a.ino, fh, 0, data).unwrap();
        d.release(a.ino, fh).unwrap();
        a.ino
    }

    fn commit(&self) {
        self.clock.fetch_add(1_000, Ordering::SeqCst);
        self.door.vfs().commit().unwrap().expect("a commit");
    }

    fn perm(&self, ino: Ino) -> u32 {
        self.door.getattr(ino).unwrap().perm
    }

    /// Sets `mode` as root (who keeps set-id bits on a mode change).
    fn chmod(&self, ino: Ino, mode: u32) {
        let set = SetAttr {
            mode: Some(mode),
            ..Default::default()
        };
        self.door.setattr(&ROOT_USER, ino, &set).unwrap();
    }

    fn read_all(&self, ino: Ino, fh: Fh) -> Vec<u8> {
        let mut buf = Vec::new();
        let n = self.door.read(ino, fh, 0, 1 << 20, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn names(&self, ino: Ino) -> Vec<String> {
        let mut out = Vec::new();
        self.door
            .readdirplus(ino, 0, 100, |e, a| {
                assert_eq!(e.ino, a.ino);
                out.push(String::from_utf8(e.name.clone()).unwrap());
                false
            })
            .unwrap();
        out
    }
}

fn read_only<T: std::fmt::Debug>(r: backer_fs::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::ReadOnly)), "{what}: {r:?}");
}

#[test]
fn the_view_answers_for_backer_and_the_live_namespace_for_the_rest() {
    let f = fixture(true);
    f.put("a", b"first", 0o644);
    f.commit();
    let d = &f.door;

    // `.backer` in the root is the view's; other names are live.
    let backer = d.lookup(ROOT, RESERVED_NAME).unwrap();
    assert!(is_view(backer.ino));
    assert_eq!(backer.kind, Kind::Dir);
    let a = d.lookup(ROOT, b"a").unwrap();
    assert!(!is_view(a.ino));
    assert!(!f.names(ROOT).contains(&".backer".to_string()));
    assert_eq!(f.names(backer.ino), [".", "..", "snapshots"]);
    d.opendir(backer.ino).unwrap();
    assert!(matches!(d.opendir(a.ino), Err(Error::NotDir)));

    let snaps = d.lookup(backer.ino, b"snapshots").unwrap().ino;
    let listed = f.names(snaps);
    assert_eq!(listed, [".", "..", "2023-11-14T22:13:21.000Z"]);
    // readdirplus counted the snapshot folder as a kernel reference, and
    // so did the lookup: the second forget drops it, a lookup makes it again.
    let snap = d.lookup(snaps, listed[2].as_bytes()).unwrap().ino;
    d.forget(snap, 1);
    d.getattr(snap).unwrap();
    d.forget(snap, 1);
    assert!(matches!(d.getattr(snap), Err(Error::NotFound)));
    let snap = d.lookup(snaps, listed[2].as_bytes()).unwrap().ino;

    // A snapshot's file reads its version after the live one changed.
    let fh = d.open(a.ino, RW).unwrap();
    d.write(&USER, a.ino, fh, 0, b"second").unwrap();
    d.release(a.ino, fh).unwrap();
    let old = d.lookup(snap, b"a").unwrap();
    assert_eq!(old.perm, 0o444);
    let vfh = d.open(old.ino, RO).unwrap();
    assert_eq!(f.read_all(old.ino, vfh), b"first");
    d.flush(old.ino, vfh).unwrap();
    d.fsync(old.ino, vfh).unwrap();
    d.release(old.ino, vfh).unwrap();
    let fh = d.open(a.ino, RO).unwrap();
    assert_eq!(f.read_all(a.ino, fh), b"second");
    d.release(a.ino, fh).unwrap();

    // Snapshots keep no extended attributes.
    assert!(matches!(
        d.getxattr(old.ino, b"user.x", 0),
        Err(Error::NoAttribute)
    ));
    assert_eq!(d.listxattr(old.ino, 0).unwrap(), XattrReply::Size(0));
    d.access(&USER, old.ino, 4).unwrap();
    read_only(d.access(&USER, old.ino, 2), "access W_OK");
}

#[test]
fn every_write_that_names_the_view_is_refused_read_only() {
    let f = fixture(true);
    let live = f.put("a", b"bytes", 0o644);
    f.commit();
    let d = &f.door;
    let backer = d.lookup(ROOT, RESERVED_NAME).unwrap().ino;
    let snaps = d.lookup(backer, b"snapshots").unwrap().ino;
    let name = &f.names(snaps)[2];
    let snap = d.lookup(snaps, name.as_bytes()).unwrap().ino;
    let file = d.lookup(snap, b"a").unwrap().ino;
    let ro = d.open(file, RO).unwrap();

    for (parent, name) in [(ROOT, RESERVED_NAME), (snap, b"new"), (snap, b"a")] {
        let mkdir = d.mknod(&USER, parent, name, NewNode::Dir, 0o755, 0);
        read_only(mkdir, "mkdir");
        let mknod = d.mknod(&USER, parent, name, NewNode::File, 0o644, 0);
        read_only(mknod, "mknod");
        read_only(d.symlink(&USER, parent, name, b"t"), "symlink");
        read_only(d.create(&USER, parent, name, 0o644, 0, RW), "create");
        read_only(d.unlink(parent, name), "unlink");
        read_only(d.rmdir(parent, name), "rmdir");
        let out = d.rename(parent, name, ROOT, b"b", RenameMode::Replace);
        read_only(out, "rename out of the view");
        let into = d.rename(ROOT, b"a", parent, name, RenameMode::Replace);
        read_only(into, "rename into the view");
        read_only(d.link(live, parent, name), "link into the view");
    }
    for ino in [backer, snaps, snap, file] {
        let set = SetAttr {
            mode: Some(0o777),
            ..Default::default()
        };
        read_only(d.setattr(&ROOT_USER, ino, &set), "setattr");
        read_only(d.setxattr(ino, b"user.x", b"v", XattrSet::Any), "setxattr");
        read_only(d.removexattr(ino, b"user.x"), "removexattr");
        read_only(d.link(ino, ROOT, b"l"), "link out of the view");
        read_only(d.fallocate(ino), "fallocate");
    }
    read_only(d.open(file, RW), "open for writing");
    let trunc = OpenMode {
        truncate: true,
        ..RO
    };
    read_only(d.open(file, trunc), "open O_TRUNC");
    read_only(d.write(&ROOT_USER, file, ro, 0, b"x"), "write");
    // A copy into the view is refused; one out of it is left to the
    // kernel (read and write), which may copy it byte by byte.
    let lfh = d.open(live, RW).unwrap();
    let into = d.copy_file_range(&USER, (live, lfh, 0), (file, ro, 0), 5);
    read_only(into, "copy into the view");
    let out = d.copy_file_range(&USER, (file, ro, 0), (live, lfh, 0), 5);
    assert_eq!(out.unwrap(), None);
    d.release(live, lfh).unwrap();
    // Live files are writable as ever; preallocation is not supported.
    assert!(matches!(d.fallocate(live), Err(Error::NotSupported)));
    d.setxattr(live, b"user.x", b"v", XattrSet::Any).unwrap();
}

#[test]
fn writes_truncates_and_copies_drop_setid_unless_the_caller_may_keep_it() {
    let f = fixture(true);
    let d = &f.door;
    let file = f.put("f", b"#!/bin/sh\n", 0o755);

    // A write: dropped for a caller without CAP_FSETID, kept for one with.
    f.chmod(file, 0o6755);
    let fh = d.open(file, RW).unwrap();
    d.write(&ROOT_USER, file, fh, 0, b"#").unwrap();
    assert_eq!(f.perm(file), 0o6755, "a privileged write keeps them");
    d.write(&USER, file, fh, 0, b"#").unwrap();
    assert_eq!(f.perm(file), 0o755, "an unprivileged write drops them");
    d.release(file, fh).unwrap();

    // A truncate: the same.
    let truncate = SetAttr {
        size: Some(3),
        ..Default::default()
    };
    f.chmod(file, 0o6755);
    d.setattr(&ROOT_USER, file, &truncate).unwrap();
    assert_eq!(f.perm(file), 0o6755, "a privileged truncate keeps them");
    let a = d.setattr(&USER, file, &truncate).unwrap();
    assert_eq!(a.perm, 0o755, "an unprivileged truncate drops them");
    // setgid without group execute (mandatory locking) stays.
    f.chmod(file, 0o6745);
    d.setattr(&USER, file, &truncate).unwrap();
    assert_eq!(f.perm(file), 0o2745);

    // A chown drops them whoever asks, a mode change does not.
    let chown = SetAttr {
        uid: Some(7),
        ..Default::default()
    };
    f.chmod(file, 0o6755);
    let a = d.setattr(&ROOT_USER, file, &chown).unwrap();
    assert_eq!((a.perm, a.uid), (0o755, 7));
    let chmod = SetAttr {
        mode: Some(0o4755),
        ..Default::default()
    };
    assert_eq!(d.setattr(&USER, file, &chmod).unwrap().perm, 0o4755);
    // Whatever the caller asked, the door decides.
    let no_clear = SetAttr {
        gid: Some(8),
        clear_setid: false,
        ..Default::default()
    };
    assert_eq!(d.setattr(&USER, file, &no_clear).unwrap().perm, 0o755);

    // A folder keeps its setgid on a chown.
    let dir = d
        .mknod(&USER, ROOT, b"d", NewNode::Dir, 0o2775, 0)
        .unwrap()
        .ino;
    d.setattr(&ROOT_USER, dir, &chown).unwrap();
    assert_eq!(f.perm(dir), 0o2775);
}

#[test]
fn a_whole_file_copy_drops_the_destinations_setid_unless_privileged() {
    let f = fixture(true);
    let d = &f.door;
    let data = random_bytes(200_000, 3);
    let src = f.put("src", &data, 0o644);
    for (who, want) in [(ROOT_USER, 0o6755), (USER, 0o755)] {
        let (dst, out) = d.create(&USER, ROOT, b"dst", 0o755, 0, RW).unwrap();
        f.chmod(dst.ino, 0o6755);
        let input = d.open(src, RO).unwrap();
        let n = d
            .copy_file_range(&who, (src, input, 0), (dst.ino, out, 0), 1 << 30)
            .unwrap();
        assert_eq!(n, Some(data.len() as u64));
        assert_eq!(f.perm(dst.ino), want, "{who:?}");
        d.release(src, input).unwrap();
        d.release(dst.ino, out).unwrap();
        d.unlink(ROOT, b"dst").unwrap();
    }
    // A copy that is not of a whole file copies nothing here, and drops
    // nothing (the kernel's writes will).
    let (dst, out) = d.create(&USER, ROOT, b"dst", 0o755, 0, RW).unwrap();
    f.chmod(dst.ino, 0o6755);
    let input = d.open(src, RO).unwrap();
    let n = d.copy_file_range(&USER, (src, input, 10), (dst.ino, out, 0), 5);
    assert_eq!(n.unwrap(), None);
    assert_eq!(f.perm(dst.ino), 0o6755);
}

#[test]
fn o_append_goes_to_the_end_unless_the_kernel_caches_writes() {
    for writeback in [false, true] {
        let f = fixture(writeback);
        let d = &f.door;
        let file = f.put("log", b"12345", 0o644);
        let append = OpenMode { append: true, ..RW };
        let fh = d.open(file, append).unwrap();
        // With a writeback cache the kernel computed the offset and the
        // write lands where it says; without, every write goes to the end.
        d.write(&USER, file, fh, 1, b"ab").unwrap();
        let want: &[u8] = if writeback { b"1ab45" } else { b"12345ab" };
        assert_eq!(f.read_all(file, fh), want, "writeback {writeback}");
        d.release(file, fh).unwrap();

        let (c, fh) = d.create(&USER, ROOT, b"new", 0o644, 0, append).unwrap();
        d.write(&USER, c.ino, fh, 0, b"xy").unwrap();
        d.write(&USER, c.ino, fh, 0, b"z").unwrap();
        let want: &[u8] = if writeback { b"zy" } else { b"xyz" };
        assert_eq!(f.read_all(c.ino, fh), want, "writeback {writeback}");
        d.release(c.ino, fh).unwrap();
    }
}
