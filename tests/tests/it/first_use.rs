//! No surprises on first use: a mount never hides a folder's files (it is
//! refused, or `--import` brings them in first).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::mirror_util::assert_same_tree;
use crate::mount_util::{is_fuse_mounted, Mount};

/// A folder with some of everything: nested folders, an empty one, a
/// script, a symlink, a 3 MiB file of varied bytes.
fn fill(dir: &std::path::Path) {
    fs::create_dir_all(dir.join("docs/deep/er")).unwrap();
    fs::create_dir(dir.join("empty")).unwrap();
    fs::write(dir.join("docs/notes.txt"), b"notes\n").unwrap();
    fs::write(dir.join("docs/deep/er/x"), b"").unwrap();
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    fs::write(dir.join("big.bin"), big).unwrap();
    fs::write(dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("docs/notes.txt", dir.join("link")).unwrap();
}

#[test]
fn mounting_over_files_is_refused_and_leaves_them() {
    let m = Mount::init();
    fs::write(m.path("mine.txt"), b"mine").unwrap();
    let run = m.try_mount(&[]);
    let line = run.assert_one_line_failure();
    assert!(
        line.contains("not empty") && line.contains("--import"),
        "{line}"
    );
    assert!(!is_fuse_mounted(m.dir()));
    assert_eq!(fs::read(m.path("mine.txt")).unwrap(), b"mine");
}

#[test]
fn import_brings_every_file_in_and_keeps_the_originals() {
    let mut m = Mount::init();
    fill(m.dir());
    let want = m.root().join("want");
    fs::create_dir(&want).unwrap();
    fill(&want);
    let run = m.try_mount(&["--import"]);
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    assert!(run.stdout.contains("Imported 4 files"), "{run:#?}");
    assert!(is_fuse_mounted(m.dir()));
    assert_same_tree(&want, m.dir());
    // The originals, untouched, beside the mount point.
    let aside: Vec<PathBuf> = fs::read_dir(m.root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("mnt.imported-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        run.stdout.contains(&*aside[0].to_string_lossy()),
        "{run:#?}"
    );
    assert_same_tree(&want, &aside[0]);
    // They are in the store: a plain remount (no --import) shows them.
    m.remount();
    assert_same_tree(&want, m.dir());
}

#[test]
fn import_stops_at_a_name_the_store_has_with_other_content() {
    let mut m = Mount::new();
    fs::write(m.path("same.txt"), b"one").unwrap();
    m.unmount();
    fs::write(m.path("same.txt"), b"two").unwrap();
    let run = m.try_mount(&["--import"]);
    let line = run.assert_one_line_failure();
    assert!(line.contains("same.txt"), "{line}");
    assert!(!is_fuse_mounted(m.dir()));
    assert_eq!(fs::read(m.path("same.txt")).unwrap(), b"two");
    fs::remove_file(m.path("same.txt")).unwrap();
    m.mount();
    assert_eq!(fs::read(m.path("same.txt")).unwrap(), b"one");
}
