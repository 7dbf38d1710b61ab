//! A damaged pack of a stopped node, then the node again: reads through
//! the mount, the snapshot view, `export`, `restore --to` and a peer's
//! pull never yield a wrong byte (EIO, and the log names the file and the
//! chunk); `check` exits 1 and says what is bad; a peer pulling from the
//! damaged node converges on everything else, lists the missing chunk in
//! `status --json` and does not reconnect in a loop.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use backer_fs::store::Store;
use serde_json::Value;

use crate::mirror_util::{
    backer, describe_all, wait_same_root, wait_until, write_synced, MountNode, Node, ReplicaNode,
};
use crate::mount_util::Mount;

pub(crate) fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) * 0x9e37_79b9_7f4a_7c15 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Flips a byte of the data of the first chunk of `content` in the stopped
/// store at `store`; returns the chunk's hash in hex.
pub(crate) fn damage_first_chunk(store: &Path, content: &[u8]) -> String {
    let s = Store::open(store).unwrap();
    let hash = backer_fs::chunk::chunks(content)[0].hash;
    let loc = s
        .chunk_location(&hash)
        .unwrap()
        .expect("the chunk is stored");
    let path = s.packs().dir().join(format!("{:08}.pack", loc.pack));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = loc.offset + u64::from(loc.len) / 2;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
    f.sync_all().unwrap();
    hash.to_hex()
}

/// Reads `path` 128 KiB at a time: every byte returned must be the
/// original's, and the read must end in EIO before the end.
fn assert_eio_and_no_wrong_byte(what: &str, path: &Path, want: &[u8]) {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 128 << 10];
    let err = loop {
        match f.read(&mut buf) {
            Ok(0) => panic!("{what}: read to the end, no error"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{what}: {err}");
    assert!(
        want.starts_with(&got),
        "{what}: a wrong byte came back ({} bytes read)",
        got.len()
    );
}

#[test]
fn a_damaged_chunk_gives_eio_everywhere_and_check_reports_it() {
    let (f, g) = (data(700_000, 1), data(300_000, 2));
    let mut m = Mount::new();
    write_synced(&m.path("f.bin"), &f);
    write_synced(&m.path("g.bin"), &g);
    m.unmount();
    let bad = damage_first_chunk(&m.store().dir(), &f);

    // A stopped store: check opens it itself.
    let run = backer(m.store(), &["check", "--json"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let r: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(r["bad_chunks"], serde_json::json!([bad]), "{r}");
    assert!(r["nodes"].as_u64() > Some(0) && r["bytes"].as_u64() > Some(1_000_000));

    m.mount();
    // The snapshot view first (the chunk still looks held there).
    let snaps = m.path(".backer/snapshots");
    let newest = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .max()
        .unwrap();
    assert_eio_and_no_wrong_byte("the view", &snaps.join(&newest).join("f.bin"), &f);
    assert_eio_and_no_wrong_byte("the mount", &m.path("f.bin"), &f);
    assert_eq!(std::fs::read(m.path("g.bin")).unwrap(), g);
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains("/f.bin") && l.contains(&bad)),
        "the log names neither the file nor the chunk:\n{log}"
    );

    // export and restore --to, through the running node.
    let out = m.root().join("export");
    let run = backer(m.store(), &["export", out.to_str().unwrap()]);
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(!out.join("f.bin").exists(), "export left a partial f.bin");
    let to = m.root().join("restored");
    let now = newest.to_str().unwrap();
    let run = backer(
        m.store(),
        &[
            "restore",
            "f.bin",
            "--at",
            now,
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(
        !to.join("f.bin").exists(),
        "restore --to left a partial f.bin"
    );

    // The copy is quarantined: status lists it, check says it is missing.
    let st: Value = serde_json::from_str(
        backer(m.store(), &["status", "--json"])
            .assert_success()
            .stdout
            .trim(),
    )
    .unwrap();
    assert_eq!(st["missing_chunks"], serde_json::json!([bad]), "{st}");
    let run = backer(m.store(), &["check"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.contains("missing chunks: 1"), "{run:#?}");
    assert!(run.stdout.contains(&bad), "{run:#?}");

    // The same bytes written again: whole again, and check passes.
    write_synced(&m.path("copy.bin"), &f);
    assert_eq!(std::fs::read(m.path("f.bin")).unwrap(), f);
    let run = backer(m.store(), &["check"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn a_peer_pulling_from_a_damaged_node_converges_on_the_rest_and_lists_the_missing_chunk() {
    let (f, g) = (data(700_000, 3), data(300_000, 4));
    let mut a = MountNode::init("A");
    a.start(false);
    write_synced(&a.path("f.bin"), &f);
    write_synced(&a.path("g.bin"), &g);
    a.m.unmount();
    let bad = damage_first_chunk(&a.store().dir(), &f);

    let mut b = ReplicaNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    b.start();
    let all: [&dyn Node; 2] = [&a, &b];
    wait_same_root("B to converge on the damaged A", &all);
    let missing = |n: &dyn Node| n.status()["missing_chunks"].clone();
    wait_until(
        "B to list the chunk A could not serve",
        || missing(&b) == serde_json::json!([bad]),
        || describe_all(&all),
    );
    assert_eq!(missing(&a), serde_json::json!([bad]), "A quarantined it");

    // The session lives on: a new file reaches B.
    write_synced(&a.path("later.txt"), b"after the damage\n");
    wait_same_root("B to take a change after the damage", &all);
    let connects = a
        .log()
        .lines()
        .filter(|l| l.contains("peer connected"))
        .count();
    assert!(
        (1..=2).contains(&connects),
        "A connected to B {connects} times: a reconnect loop?\n{}",
        describe_all(&all)
    );
    let corrupt = a.log().matches(&bad).count();
    assert!(
        corrupt <= 2,
        "A logged the chunk {corrupt} times\n{}",
        a.log()
    );

    // B's check: the one chunk is missing, nothing else is bad.
    let run = backer(b.store(), &["check", "--json"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let r: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(r["missing_chunks"], serde_json::json!([bad]), "{r}");
    assert_eq!(r["still_bad"], 1, "{r}");
}
