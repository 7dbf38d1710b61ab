//! `.backerignore` between two real mounts (DESIGN.md, "Ignore
//! patterns"; issue 20): what a node ignores stays on it, what it ignores
//! of a peer's is neither fetched nor shown, and the two roots stay equal.
//! Each step ends with a marker file written after it: once the peer shows
//! the marker, it has (or would have had) everything before it.

use std::fs;
use std::path::Path;

use crate::mirror_util::{
    backer, describe_all, fsync, mounted_pair, wait_same_root, wait_until, write_synced, MountNode,
    Node,
};
use crate::mount_util::walk;

/// Waits until `node` shows `rel` with `data`.
fn wait_file(node: &MountNode, rel: &str, data: &[u8], all: &[&dyn Node]) {
    let p = node.path(rel);
    wait_until(
        &format!("{} to show {rel}", node.name),
        || fs::read(&p).is_ok_and(|b| b == data),
        || describe_all(all),
    );
}

/// Writes the marker `rel` on `from` and waits until `to` shows it.
fn marker(from: &MountNode, to: &MountNode, rel: &str) {
    write_synced(&from.path(rel), rel.as_bytes());
    wait_file(to, rel, rel.as_bytes(), &[from, to]);
}

/// The sum of the sizes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| fs::symlink_metadata(dir.join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn ignored(node: &MountNode) -> (u64, u64) {
    let st = node.status();
    (
        st["ignored"]["local"].as_u64().expect("ignored.local"),
        st["ignored"]["remote"].as_u64().expect("ignored.remote"),
    )
}

#[test]
fn local_ignores_stay_local() {
    let (a, b) = mounted_pair();
    write_synced(&a.path(".backerignore"), b"*.tmp\n/build\n");
    fs::create_dir(a.path("build")).unwrap();
    write_synced(&a.path("build/out.o"), b"object code");
    write_synced(&a.path("secret.tmp"), b"private");
    write_synced(&a.path("sub.tmp.d.txt"), b"not a tmp");
    fs::create_dir(a.path("deep")).unwrap();
    write_synced(&a.path("deep/x.tmp"), b"private too");
    marker(&a, &b, "marker");
    wait_same_root("the same root", &[&a, &b]);

    // Still there on A, through the mount.
    assert_eq!(fs::read(a.path("secret.tmp")).unwrap(), b"private");
    assert_eq!(fs::read(a.path("build/out.o")).unwrap(), b"object code");
    // Never on B.
    let on_b: Vec<String> = walk(b.dir())
        .iter()
        .map(|p| p.display().to_string())
        .filter(|p| !p.starts_with(".backer"))
        .collect();
    let mut want = vec!["deep", "marker", "sub.tmp.d.txt"];
    want.sort();
    let mut got = on_b.clone();
    got.sort();
    assert_eq!(got, want, "B shows {on_b:?}");

    // Not in A's history: the log, the snapshots.
    let log = backer(a.store(), &["log", "--json"])
        .assert_success()
        .stdout
        .clone();
    for p in ["secret.tmp", "build", "x.tmp", ".backerignore"] {
        let run = backer(a.store(), &["log", p, "--json"]);
        let entries: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).unwrap_or(serde_json::Value::Null);
        assert!(
            entries.as_array().is_none_or(|v| v.is_empty()),
            "log {p}: {run:#?}\nwhole log: {log}"
        );
    }
    let snaps = a.path(".backer/snapshots");
    let listed: Vec<String> = walk(&snaps)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(!listed.is_empty(), "no snapshots");
    for p in &listed {
        assert!(
            !p.ends_with(".tmp") && !p.contains("build") && !p.ends_with(".backerignore"),
            "a snapshot shows {p}"
        );
    }
    assert_eq!(ignored(&a), (3, 0), "A's status: {}", a.status());
}

#[test]
fn a_path_the_receiver_ignores_is_not_fetched_nor_shown() {
    let (a, b) = mounted_pair();
    write_synced(&b.path(".backerignore"), b"big.bin\n/media\n");
    marker(&b, &a, "ready");
    let before = size_of(&b.store().dir());
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::create_dir(a.path("media")).unwrap();
    write_synced(&a.path("media/film.bin"), &big);
    fs::create_dir(a.path("d")).unwrap();
    write_synced(&a.path("d/big.bin"), &big[..4 << 20]);
    write_synced(&a.path("small.txt"), b"small");
    marker(&a, &b, "marker");
    let root = wait_same_root("the same root", &[&a, &b]);

    assert!(!b.path("media").exists(), "B shows media");
    assert!(!b.path("d/big.bin").exists(), "B shows d/big.bin");
    assert_eq!(fs::read(b.path("small.txt")).unwrap(), b"small");
    let grown = size_of(&b.store().dir()).saturating_sub(before);
    assert!(
        grown < 4 << 20,
        "B's store grew by {grown} bytes for files it ignores"
    );
    assert_eq!(ignored(&b), (0, 2), "B's status: {}", b.status());
    // Absent on purpose: not missing.
    let check = backer(b.store(), &["check", "--json"]);
    assert_eq!(check.code, Some(0), "check on B: {check:#?}");
    assert_eq!(b.root(), root);
    assert_eq!(fs::read(a.path("d/big.bin")).unwrap(), &big[..4 << 20]);
}

#[test]
fn ignoring_then_unignoring_a_replicated_file() {
    let (a, b) = mounted_pair();
    write_synced(&a.path("note.txt"), b"v1");
    wait_file(&b, "note.txt", b"v1", &[&a, &b]);

    // Ignored: local edits stay here; the peer keeps what it had.
    write_synced(&a.path(".backerignore"), b"note.txt\n");
    write_synced(&a.path("note.txt"), b"v2 local");
    marker(&a, &b, "m1");
    assert_eq!(fs::read(b.path("note.txt")).unwrap(), b"v1");
    assert_eq!(fs::read(a.path("note.txt")).unwrap(), b"v2 local");
    wait_same_root("the same root while ignored", &[&a, &b]);

    // Un-ignored: the local file joins the tree as a local change.
    write_synced(&a.path(".backerignore"), b"// nothing\n");
    fsync(&a.path("m1"));
    write_synced(&a.path("m2"), b"m2");
    wait_file(&b, "note.txt", b"v2 local", &[&a, &b]);
    wait_same_root("the same root after un-ignoring", &[&a, &b]);
}

#[test]
fn a_peers_folder_delete_and_the_ignored_files_in_it() {
    let (a, b) = mounted_pair();
    write_synced(&b.path(".backerignore"), b"(?d)*.swp\n*.o\n");
    for d in ["d1", "d2"] {
        fs::create_dir(a.path(d)).unwrap();
        write_synced(&a.path(&format!("{d}/f.txt")), d.as_bytes());
    }
    wait_file(&b, "d1/f.txt", b"d1", &[&a, &b]);
    wait_file(&b, "d2/f.txt", b"d2", &[&a, &b]);
    write_synced(&b.path("d1/x.swp"), b"swap");
    write_synced(&b.path("d2/y.o"), b"object");
    marker(&b, &a, "m0");

    fs::remove_dir_all(a.path("d1")).unwrap();
    fs::remove_dir_all(a.path("d2")).unwrap();
    marker(&a, &b, "m1");
    wait_same_root("the same root", &[&a, &b]);
    // (?d): the swap file does not hold up the delete.
    assert!(!b.path("d1").exists(), "d1 stays on B");
    // A plain ignored file does: the folder stays with just it.
    let left: Vec<String> = fs::read_dir(b.path("d2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["y.o".to_string()]);
    assert_eq!(fs::read(b.path("d2/y.o")).unwrap(), b"object");
    assert!(!a.path("d2").exists(), "d2 came back on A");
}

#[test]
fn a_pattern_file_that_does_not_parse_keeps_the_last_good_set() {
    let (mut a, b) = mounted_pair();
    write_synced(&a.path(".backerignore"), b"*.tmp\n");
    marker(&a, &b, "m0");
    // Line 2 is a bare `!`: no pattern.
    write_synced(&a.path(".backerignore"), b"// broken\n!\n");
    write_synced(&a.path("one.tmp"), b"private");
    marker(&a, &b, "m1");
    assert!(!b.path("one.tmp").exists(), "B shows one.tmp");
    let st = a.status();
    let err = st["ignored"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains(".backerignore:2:"), "status: {st}");
    assert_eq!(st["ignored"]["held_back"], false, "status: {st}");
    let plain = backer(a.store(), &["status"])
        .assert_success()
        .stdout
        .clone();
    assert!(plain.contains(".backerignore:2:"), "status: {plain}");
    assert!(a.log().contains(".backerignore:2:"), "log: {}", a.log());

    // After a restart, still the last good set.
    a.m.unmount();
    a.start(true);
    write_synced(&a.path("two.tmp"), b"private");
    marker(&a, &b, "m2");
    assert!(!b.path("two.tmp").exists(), "B shows two.tmp");
    assert!(!b.path("one.tmp").exists(), "B shows one.tmp");

    // Fixed: the new set applies from its close on.
    write_synced(&a.path(".backerignore"), b"*.old\n");
    write_synced(&a.path("three.old"), b"private");
    marker(&a, &b, "m3");
    assert!(!b.path("three.old").exists(), "B shows three.old");
    wait_file(&b, "two.tmp", b"private", &[&a, &b]);
}
