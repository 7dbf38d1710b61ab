//! The history view through a real mount: `DIR/.backer/snapshots/<time>/`
//! lists the commits and serves their old bytes to ordinary programs; it
//! is hidden from walks of the folder and refuses writes with EROFS.

use std::fs;
use std::io::Write;
use std::process::{Command, Output};
use std::time::Duration;

use crate::mount_util::{assert_errno, Mount};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn write_synced(path: &std::path::Path, data: &[u8]) {
    let mut f = fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

fn is_snapshot_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn old_versions_are_readable_under_dot_backer_snapshots() {
    let m = Mount::new();
    let file = m.path("notes.txt");
    write_synced(&file, b"the old words\n");
    std::thread::sleep(Duration::from_millis(5));
    write_synced(&file, b"the new words, longer than before\n");

    let snaps = m.path(".backer/snapshots");
    let ls = run("ls", &[snaps.to_str().unwrap()]);
    assert!(ls.status.success(), "ls: {ls:?}\n{}", m.log());
    let names: Vec<String> = String::from_utf8(ls.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 2, "snapshots: {names:?}");
    assert!(names.iter().all(|n| is_snapshot_name(n)), "{names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");

    // Each snapshot holds one of the two versions; the oldest that has
    // the file holds the old one, the newest the new one.
    let contents: Vec<Option<Vec<u8>>> = names
        .iter()
        .map(|n| {
            let out = run("cat", &[snaps.join(n).join("notes.txt").to_str().unwrap()]);
            out.status.success().then_some(out.stdout)
        })
        .collect();
    let first = contents.iter().flatten().next().expect("a snapshot has it");
    assert_eq!(first, b"the old words\n");
    assert_eq!(
        contents.last().unwrap().as_deref(),
        Some(&b"the new words, longer than before\n"[..])
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        b"the new words, longer than before\n"
    );

    // Hidden from walks: neither readdir of the root nor find shows it.
    let root: Vec<_> = fs::read_dir(m.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!root.iter().any(|n| n == ".backer"), "{root:?}");
    let find = run("find", &[m.dir().to_str().unwrap()]);
    assert!(find.status.success(), "find: {find:?}");
    let found = String::from_utf8(find.stdout).unwrap();
    assert!(!found.contains(".backer"), "{found}");
    assert!(found.contains("notes.txt"), "{found}");

    // Read-only everywhere under it.
    let touch = run("touch", &[snaps.join("x").to_str().unwrap()]);
    assert!(!touch.status.success());
    let err = String::from_utf8_lossy(&touch.stderr);
    assert!(err.contains("Read-only file system"), "touch: {err}");
    let old = snaps.join(&names[names.len() - 1]).join("notes.txt");
    assert_errno(
        "open for writing",
        fs::OpenOptions::new().write(true).open(&old),
        libc::EROFS,
    );
    assert_errno("unlink", fs::remove_file(&old), libc::EROFS);
    assert_errno("mkdir", fs::create_dir(m.path(".backer/new")), libc::EROFS);
    assert_errno(
        "rename out",
        fs::rename(&old, m.path("stolen.txt")),
        libc::EROFS,
    );
    assert_errno(
        "rename in",
        fs::rename(&file, snaps.join("moved.txt")),
        libc::EROFS,
    );
    assert_errno("rmdir", fs::remove_dir(m.path(".backer")), libc::EROFS);
}
