//! Setuid and setgid dropping (`SetAttr::clear_setid`, `Names::clear_setid`):
//! what the mount's door (`vfs::Door`, tests in door.rs) asks for on
//! chowns, truncates and unprivileged writes, since the mount takes that
//! work from the kernel.

use backer_fs::vfs::*;

use crate::util::*;

fn perm(fs: &TestFs, ino: Ino) -> u32 {
    fs.vfs().names().getattr(ino).unwrap().perm
}

fn set_mode(fs: &TestFs, ino: Ino, mode: u32) {
    let set = SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    fs.vfs().names().setattr(ino, &set).unwrap();
}

#[test]
fn without_setid_keeps_setgid_only_without_group_execute() {
    for (before, after) in [
        (0o4755, 0o755),
        (0o2755, 0o755),
        (0o6711, 0o711),
        (0o6745, 0o2745),
        (0o2700, 0o2700),
        (0o1777, 0o1777),
        (0o644, 0o644),
    ] {
        assert_eq!(without_setid(before), after, "{before:o}");
    }
}

#[test]
fn setattr_and_writes_drop_setid_of_files_not_folders() {
    let mut fs = TestFs::new();
    let f = fs.put(ROOT, "f", b"#!/bin/sh\n");
    let g = fs.put(ROOT, "g", b"plain");
    let d = fs.vfs().names().mkdir(ME, ROOT, b"d", 0o2775).unwrap().ino;

    set_mode(&fs, f, 0o6755);
    let chown = SetAttr {
        uid: Some(7),
        clear_setid: true,
        ..Default::default()
    };
    let a = fs.vfs().names().setattr(f, &chown).unwrap();
    assert_eq!((a.perm, a.uid), (0o755, 7));
    fs.vfs().names().setattr(d, &chown).unwrap();
    assert_eq!(perm(&fs, d), 0o2775, "a folder keeps its setgid");

    // A new mode in the same request is applied first, then dropped.
    let both = SetAttr {
        mode: Some(0o4700),
        clear_setid: true,
        ..Default::default()
    };
    assert_eq!(fs.vfs().names().setattr(f, &both).unwrap().perm, 0o700);

    // An unprivileged write: dropped once; a file without them is not
    // touched (no change to commit).
    set_mode(&fs, g, 0o4644);
    fs.vfs().commit().unwrap();
    fs.vfs().names().clear_setid(g).unwrap();
    assert_eq!(perm(&fs, g), 0o644);
    assert!(
        fs.vfs().commit().unwrap().is_some(),
        "the new mode is committed"
    );
    let before = fs.vfs().change_count();
    fs.vfs().names().clear_setid(g).unwrap();
    assert_eq!(
        fs.vfs().change_count(),
        before,
        "nothing to drop, nothing changed"
    );
    assert!(fs.vfs().commit().unwrap().is_none(), "nothing to commit");

    // What was dropped is stored and committed.
    fs.vfs().sync().unwrap();
    fs.reopen();
    assert_eq!(perm(&fs, f), 0o700);
    assert_eq!(perm(&fs, g), 0o644);
    assert_eq!(perm(&fs, d), 0o2775);
}
