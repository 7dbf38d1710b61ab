//! Live mirroring between real nodes (DESIGN.md, "Replication"): writes
//! both ways between two mounts, a real source tree reaching a replica
//! and exported identically, a change travelling along a chain. The nodes
//! and waits are in [`crate::mirror_util`]; run with `--nocapture` to see
//! the measured latencies.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backer_tests::Run;
use rand::{Rng, RngCore};

use crate::mirror_util::*;
use crate::mount_util::walk;

/// Two mounted nodes, each the other's peer: ten writes alternating in
/// direction, all to the same file (so the reader's kernel caches of the
/// previous version must be invalidated), each read back on the other
/// mount.
#[test]
fn two_mounts_mirror_writes_both_ways() {
    let (a, b) = mounted_pair();
    let all: [&dyn Node; 2] = [&a, &b];
    wait_connected(&a, &b, &all);
    wait_connected(&b, &a, &all);

    const NAME: &str = "pingpong.bin";
    let mut rng = rand::thread_rng();
    let mut latencies = Vec::new();
    for round in 0..10 {
        let (from, to) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // Sizes differ every round: a stale size shows as well as stale bytes.
        let mut data = vec![0u8; rng.gen_range(1_000..300_000)];
        rng.fill_bytes(&mut data);
        data[..8].copy_from_slice(&(round as u64).to_le_bytes());
        let start = Instant::now();
        fs::write(from.path(NAME), &data)
            .unwrap_or_else(|e| panic!("round {round}: write on {}: {e}", from.name));
        let target = to.path(NAME);
        wait_every(
            &format!(
                "round {round}: {} bytes written on {} to be read on {}",
                data.len(),
                from.name,
                to.name
            ),
            Duration::from_millis(2),
            &mut || fs::read(&target).is_ok_and(|got| got == data),
            &|| {
                let got = fs::read(&target);
                format!(
                    "{} reads {:?}\n{}",
                    to.name,
                    got.map(|g| (g.len(), g.get(..8).map(<[u8]>::to_vec))),
                    describe_all(&all)
                )
            },
        );
        latencies.push(start.elapsed());
    }
    wait_same_root("A and B to hold the same root", &all);
    let ms: Vec<String> = latencies
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "mirror latency A<->B over QUIC (write to read on the other mount), ms: [{}]; median {:.1} ms",
        ms.join(", "),
        median(latencies).as_secs_f64() * 1e3
    );
}

/// A source tree to copy: the largest of a few well-known crates in the
/// local cargo registry, else this repository's fs/src.
fn source_tree() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut candidates = Vec::new();
    if let Some(src) = cargo_home.map(|h| h.join("registry/src")) {
        for index in fs::read_dir(src).into_iter().flatten().flatten() {
            for entry in fs::read_dir(index.path()).into_iter().flatten().flatten() {
                candidates.push(entry.path());
            }
        }
    }
    candidates.sort();
    for prefix in ["tokio-1.", "syn-2.", "serde-1."] {
        if let Some(found) = candidates.iter().rev().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
                && p.join("src").is_dir()
        }) {
            return found.clone();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fs/src")
}

/// `cp -R -P --preserve=mode,timestamps SRC/. DST/`: symlinks as symlinks.
fn copy_tree(src: &Path, dst: &Path) {
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    let run = Run::of(
        Command::new("cp")
            .args(["-R", "-P", "--preserve=mode,timestamps"])
            .arg(from)
            .arg(dst),
    );
    assert_eq!(
        run.code,
        Some(0),
        "cp {} -> {}: {run:#?}",
        src.display(),
        dst.display()
    );
}

/// Asserts that every regular file under `want` has the same mtime (to
/// the nanosecond) under `got`; names the mismatches.
fn assert_same_mtimes(want: &Path, got: &Path) {
    let mut wrong = Vec::new();
    let mut files = 0;
    for rel in walk(want) {
        let wm = fs::symlink_metadata(want.join(&rel)).unwrap();
        if !wm.is_file() {
            continue;
        }
        files += 1;
        let gm = fs::symlink_metadata(got.join(&rel)).unwrap();
        if (gm.mtime(), gm.mtime_nsec()) != (wm.mtime(), wm.mtime_nsec()) {
            wrong.push(format!(
                "{}: {}.{:09} instead of {}.{:09}",
                rel.display(),
                gm.mtime(),
                gm.mtime_nsec(),
                wm.mtime(),
                wm.mtime_nsec()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {files} files in {} do not have the mtime they have in {}, e.g.:\n{}",
        wrong.len(),
        got.display(),
        want.display(),
        wrong[..wrong.len().min(5)].join("\n")
    );
}

/// A real source tree copied into a mount reaches a replica; the
/// replica's export is the same tree, executable bit and symlink
/// included.
#[test]
fn source_tree_reaches_a_replica_and_exports_identically() {
    let mut a = MountNode::init("A");
    let mut r = ReplicaNode::init("R");
    a.add_peer(&r.id, None);
    r.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    r.start();
    let all: [&dyn Node; 2] = [&a, &r];

    // The reference: a copy of the source with an executable and a symlink.
    let source = source_tree();
    let reference = a.m.root().join("reference");
    fs::create_dir(&reference).unwrap();
    copy_tree(&source, &reference);
    let exe = reference.join("run-me.sh");
    fs::write(&exe, b"#!/bin/sh\necho mirrored\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let lib_rs = ["src/lib.rs", "lib.rs", "src/main.rs"]
        .into_iter()
        .find(|p| reference.join(p).is_file())
        .unwrap_or("run-me.sh");
    std::os::unix::fs::symlink(lib_rs, reference.join("the-lib")).unwrap();
    let files = walk(&reference).len();
    eprintln!(
        "copying {} ({files} entries) into the mount",
        source.display()
    );

    let start = Instant::now();
    copy_tree(&reference, a.dir());
    fsync(&a.path("run-me.sh"));
    let copied = start.elapsed();
    let root = a.root();
    let converge = wait_until(
        "the replica to reach A's root",
        || status(&r.store).and_then(|s| root_of(&s)).as_ref() == Some(&root),
        || describe_all(&all),
    );
    eprintln!(
        "source tree: copied into the mount in {:.2} s; replica converged {:.2} s later",
        copied.as_secs_f64(),
        converge.as_secs_f64()
    );
    assert_eq!(r.stop(), Some(0), "the replica's exit\n{}", r.describe());

    let out = a.m.root().join("export");
    let run = backer(&r.store, &["export", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "export: {run:#?}");
    assert_same_tree(&reference, &out);
    // What the issue names explicitly.
    let mode = fs::metadata(out.join("run-me.sh")).unwrap().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "755", "mode of the executable");
    assert_eq!(
        fs::read_link(out.join("the-lib")).unwrap(),
        PathBuf::from(lib_rs)
    );
    // And the mount itself still matches.
    assert_same_tree(&reference, a.dir());
    // Last, as it is the one known to fail: `cp --preserve=timestamps`
    // sets each file's mtime (futimens before close); the replica must
    // get those times, not the time of the copy.
    assert_same_mtimes(&reference, &out);
}

/// A chain A - B - C (A and C mounted, B a replica; A and C do not know
/// each other): a change on A reaches C, and one on C reaches A.
#[test]
fn a_change_travels_along_a_chain() {
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let mut c = MountNode::init("C");
    a.add_peer(&b.id, Some(&b.addr));
    c.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    b.add_peer(&c.id, Some(&c.addr));
    b.start();
    a.start(true);
    c.start(true);
    let all: [&dyn Node; 3] = [&a, &b, &c];

    let data = b"written on A, read on C\n".repeat(1000);
    fs::write(a.path("from-a.txt"), &data).unwrap();
    let took = wait_until(
        "A's file to reach C through B",
        || fs::read(c.path("from-a.txt")).is_ok_and(|got| got == data),
        || describe_all(&all),
    );
    eprintln!("chain A->B->C: {:.1} ms", took.as_secs_f64() * 1e3);

    fs::create_dir(c.path("from-c")).unwrap();
    fs::write(c.path("from-c/back.txt"), b"and back\n").unwrap();
    let took = wait_until(
        "C's file to reach A through B",
        || fs::read(a.path("from-c/back.txt")).is_ok_and(|got| got == b"and back\n"),
        || describe_all(&all),
    );
    eprintln!("chain C->B->A: {:.1} ms", took.as_secs_f64() * 1e3);
    wait_same_root("A, B and C to hold the same root", &all);
    // A and C never met: nothing in their status about each other.
    assert!(peer_in(&a.status(), &c.id).is_none());
    assert!(peer_in(&c.status(), &a.id).is_none());
}
