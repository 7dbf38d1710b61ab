//! Root's `--keep-setid` and `--keep-owners` make no privilege that this
//! machine does not vouch for: not from another user's setuid file, not
//! from set-id bits or devices that only the tree (a peer) carries.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::history::{export_tree, head};
use crate::vfs::{Ctx, NewNode, SetAttr, Vfs, VfsOptions, ROOT};

const ROOT_USER: Ctx = Ctx { uid: 0, gid: 0 };
const NOBODY: Ctx = Ctx {
    uid: 65534,
    gid: 65534,
};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A store whose live tree holds `d/` (root's, 0755) with a setuid file
/// `name` made by `who`, and `/dev/mem`'s twin `mem` (0666) made by
/// `dev_maker`; all committed.
fn tree(who: Ctx, dev_maker: Ctx) -> (tempfile::TempDir, Arc<Vfs>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
    let v = Arc::new(Vfs::new(store, VfsOptions::default()).unwrap());
    let d = v.names().mkdir(ROOT_USER, ROOT, b"d", 0o777).unwrap().ino;
    let (a, fh) = v.names().create(who, d, b"tool", 0o600, false).unwrap();
    v.files().write(fh, 0, b"#!/bin/sh\nid\n").unwrap();
    v.files().release(fh).unwrap();
    let set = SetAttr {
        mode: Some(0o4755),
        ..SetAttr::default()
    };
    v.names().setattr(a.ino, &set).unwrap();
    let mem = NewNode::Special(Kind::CharDev, libc::makedev(1, 1));
    v.names().mknod(dev_maker, d, b"mem", mem, 0o666).unwrap();
    v.commit().unwrap();
    (dir, v)
}

/// Exports the committed tree of `v` into `out` with `opts`, the live
/// tree vouching.
fn export_live(v: &Vfs, out: &Path, opts: WriteOptions) -> Exported {
    let root = head(&v.store()).unwrap().map(|c| Hash(c.root));
    export_tree(&LiveTree::new(v), root, out, opts, None).unwrap()
}

const KEEP_SETID: WriteOptions = WriteOptions {
    keep_setid: true,
    keep_owners: false,
};
const KEEP_BOTH: WriteOptions = WriteOptions {
    keep_setid: true,
    keep_owners: true,
};

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap()
}

#[test]
fn another_users_setuid_file_never_becomes_roots() {
    if !is_root() {
        return;
    }
    let (dir, v) = tree(NOBODY, ROOT_USER);
    let out = dir.path().join("out");
    let done = export_live(&v, &out, KEEP_SETID);
    let m = meta(&out.join("d/tool"));
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755), "no setuid root");
    assert!(
        done.warnings
            .iter()
            .any(|w| w.contains("set-id bits dropped")),
        "{:?}",
        done.warnings
    );
    // Written as its owner, the bit gives no one more than nobody has.
    let owned = dir.path().join("owned");
    export_live(&v, &owned, KEEP_BOTH);
    let m = meta(&owned.join("d/tool"));
    assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o4755));
}

#[test]
fn setid_bits_only_the_tree_carries_are_dropped() {
    if !is_root() {
        return;
    }
    let (dir, v) = tree(ROOT_USER, ROOT_USER);
    // The committed tree says 04755; the live file does not (as after a
    // peer's install, which never sets set-id bits live).
    let d = v.names().lookup(ROOT, b"d").unwrap().ino;
    let tool = v.names().lookup(d, b"tool").unwrap().ino;
    let set = SetAttr {
        mode: Some(0o755),
        ..SetAttr::default()
    };
    v.names().setattr(tool, &set).unwrap();
    let out = dir.path().join("out");
    export_live(&v, &out, KEEP_SETID);
    assert_eq!(meta(&out.join("d/tool")).mode() & 0o7777, 0o755);
}

#[test]
fn devices_need_both_flags_and_a_live_twin_made_by_root() {
    if !is_root() {
        return;
    }
    let (dir, v) = tree(ROOT_USER, ROOT_USER);
    // --keep-setid alone makes no device.
    let out = dir.path().join("setid");
    let done = export_live(&v, &out, KEEP_SETID);
    assert!(!out.join("d/mem").exists());
    assert_eq!((done.devices, done.skipped), (0, 1));
    // Both flags, the live tree has it, root made it: made, no looser.
    let out = dir.path().join("both");
    let done = export_live(&v, &out, KEEP_BOTH);
    assert_eq!(done.devices, 1);
    let m = meta(&out.join("d/mem"));
    assert!(m.file_type().is_char_device());
    assert_eq!((m.uid(), m.rdev()), (0, libc::makedev(1, 1)));
    assert_eq!(m.mode() & 0o7777, 0o666);
    // A device only the tree has (a peer's, removed live since): skipped.
    let d = v.names().lookup(ROOT, b"d").unwrap().ino;
    v.names().unlink(d, b"mem").unwrap();
    let out = dir.path().join("gone");
    let done = export_live(&v, &out, KEEP_BOTH);
    assert!(!out.join("d/mem").exists());
    assert_eq!((done.devices, done.skipped), (0, 1));
}

#[test]
fn a_device_another_user_made_is_never_written() {
    if !is_root() {
        return;
    }
    let (dir, v) = tree(ROOT_USER, NOBODY);
    let out = dir.path().join("out");
    let done = export_live(&v, &out, KEEP_BOTH);
    assert!(!out.join("d/mem").exists());
    assert_eq!(done.devices, 0);
}
