//! The contract of DESIGN.md ("How it is used") for `log`, `restore` and
//! `du`: every version written through a real mount is listed and can be
//! brought back, into a plain folder or as a new change of the tree that
//! replicates to a peer like any edit. Bad input is one line and a
//! non-zero exit.

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backer_tests::{Run, TempStore};
use serde_json::Value;

use crate::mount_util::{walk, Mount};

const DEADLINE: Duration = Duration::from_secs(60);

/// `backer --store S ARGS...`, run to completion.
fn backer(store: &TempStore, args: &[&str]) -> Run {
    Run::of(store.backer().args(args).stdin(Stdio::null()))
}

/// Writes `data` to `path` and fsyncs it: one version, committed.
/// Writes `data` over the file and fsyncs it, with no O_TRUNC first: an
/// emptied file that stays open more than the committer's quiet time
/// (easily, on a loaded machine) is committed empty, one root more than
/// the versions these tests count.
fn write_synced(path: &Path, data: &[u8]) {
    let fail = |e: std::io::Error| -> ! { panic!("write {}: {e}", path.display()) };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| fail(e));
    f.write_all(data).unwrap_or_else(|e| fail(e));
    f.set_len(data.len() as u64).unwrap_or_else(|e| fail(e));
    f.sync_all().unwrap_or_else(|e| fail(e));
}

/// `log [PATH] --json`, parsed.
fn log_json(store: &TempStore, path: Option<&str>) -> Vec<Value> {
    let mut args = vec!["log"];
    args.extend(path);
    args.push("--json");
    let run = backer(store, &args);
    run.assert_success();
    let v: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("log --json is not JSON ({e}): {run:#?}"));
    v.as_array().expect("log --json is an array").clone()
}

#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The files under `dir` with their bytes, by path relative to `dir`
/// (none if `dir` is missing).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if !dir.is_dir() {
        return Vec::new();
    }
    walk(dir)
        .into_iter()
        .filter(|rel| dir.join(rel).is_file())
        .map(|rel| {
            let data = fs::read(dir.join(&rel)).unwrap_or_default();
            (rel, data)
        })
        .collect()
}

/// What `walk` lists under `dir`, or nothing if it is missing.
fn listing(dir: &Path) -> Vec<PathBuf> {
    if dir.is_dir() {
        walk(dir)
    } else {
        Vec::new()
    }
}

/// A small tree of folders and files under `dir`.
fn make_tree(dir: &Path) {
    // First, so that the files' fsyncs commit it too.
    fs::create_dir_all(dir.join("sub/void")).unwrap();
    for (i, rel) in [
        "a.txt",
        "sub/b.bin",
        "sub/deeper/c.txt",
        "sub/deeper/empty",
        "z/d",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = if rel.ends_with("empty") {
            Vec::new()
        } else {
            (0..(1000 * (i + 1) + 7))
                .map(|n| (n * 31 + i) as u8)
                .collect()
        };
        write_synced(&p, &data);
    }
}

#[test]
fn five_edits_are_five_versions_each_restorable() {
    let m = Mount::new();
    let store = m.store();
    let versions: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("version {i}: {}\n", "x".repeat(i * 10)).into_bytes())
        .collect();
    for v in &versions {
        write_synced(&m.path("notes.txt"), v);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Something else changes too: `log notes.txt` must not list it.
    write_synced(&m.path("other.txt"), b"other");

    let log = log_json(store, Some("notes.txt"));
    assert_eq!(log.len(), 5, "{log:#?}");
    for (k, c) in log.iter().enumerate() {
        let i = 4 - k; // newest first
        let changes = c["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{c:#}");
        assert_eq!(changes[0]["path"], "notes.txt", "{c:#}");
        let want = if i == 0 { "added" } else { "modified" };
        assert_eq!(changes[0]["change"], want, "{c:#}");
        assert_eq!(changes[0]["size"], versions[i].len() as u64, "{c:#}");
        for key in ["commit", "root", "time", "author"] {
            assert!(c[key].is_string(), "{key}: {c:#}");
        }
        assert!(c["time"].as_str().unwrap().ends_with('Z'), "{c:#}");
        assert_eq!(c["commit"].as_str().unwrap().len(), 64, "{c:#}");
    }
    // The whole log has the other file too; the human form one block each.
    let all = log_json(store, None);
    assert!(all.len() >= 6, "{all:#?}");
    let human = backer(store, &["log", "notes.txt"]);
    human.assert_success();
    assert_eq!(human.stdout.matches("notes.txt").count(), 5, "{human:#?}");

    // Restore each version by time into a plain folder, and by commit id
    // into the live tree.
    for (k, c) in log.iter().enumerate() {
        let i = 4 - k;
        let out = m.root().join(format!("out{i}"));
        let time = c["time"].as_str().unwrap();
        backer(
            store,
            &[
                "restore",
                "notes.txt",
                "--at",
                time,
                "--to",
                out.to_str().unwrap(),
            ],
        )
        .assert_success();
        assert_eq!(
            fs::read(out.join("notes.txt")).unwrap(),
            versions[i],
            "v{i}"
        );

        let id = &c["commit"].as_str().unwrap()[..10];
        backer(store, &["restore", "/notes.txt", "--at", id]).assert_success();
        let path = m.path("notes.txt");
        wait_until(
            &format!("version {i} back in the mount"),
            || fs::read(&path).is_ok_and(|d| d == versions[i]),
            || format!("{:?}", fs::read(&path).map(String::from_utf8)),
        );
    }
    // The restores are changes themselves, so they are in the log (but
    // the first restored the current version: nothing to change).
    assert_eq!(log_json(store, Some("notes.txt")).len(), 9);
    assert_eq!(fs::read(m.path("other.txt")).unwrap(), b"other");

    let du = backer(store, &["du", "--json"]);
    du.assert_success();
    let du: Value = serde_json::from_str(du.stdout.trim()).unwrap();
    let live = (versions[0].len() + 5) as u64;
    assert_eq!(du["live_bytes"], live, "{du:#}");
    assert!(du["history_bytes"].as_u64().unwrap() > 0, "{du:#}");
    backer(store, &["du"]).assert_success();
}

#[test]
fn a_deleted_tree_comes_back_whole() {
    let mut m = Mount::new();
    make_tree(&m.path("tree"));
    let want = files_under(&m.path("tree"));
    assert_eq!(want.len(), 5);
    let before = log_json(m.store(), None)[0]["time"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(5));
    fs::remove_dir_all(m.path("tree")).unwrap();
    write_synced(&m.path("marker"), b"m");
    assert!(!m.path("tree").exists());

    backer(m.store(), &["restore", "tree", "--at", &before]).assert_success();
    wait_until(
        "the tree back in the mount",
        || files_under(&m.path("tree")) == want,
        || format!("{:?}", listing(&m.path("tree"))),
    );
    assert!(m.path("tree/sub/void").is_dir());
    let log = log_json(m.store(), Some("tree"));
    let newest = log[0]["changes"].as_array().unwrap();
    assert!(newest.iter().all(|c| c["change"] == "added"), "{newest:#?}");

    // Without a node: into a plain folder, and into the tree again.
    m.unmount();
    let out = m.root().join("plain");
    backer(
        m.store(),
        &[
            "restore",
            "tree",
            "--at",
            &before,
            "--to",
            out.to_str().unwrap(),
        ],
    )
    .assert_success();
    assert_eq!(files_under(&out.join("tree")), want);
    fs::write(m.root().join("unrelated"), b"").unwrap();
    m.mount();
    fs::remove_dir_all(m.path("tree/sub")).unwrap();
    write_synced(&m.path("marker"), b"m2");
    m.unmount();
    backer(m.store(), &["restore", "tree/sub", "--at", &before]).assert_success();
    m.mount();
    assert_eq!(files_under(&m.path("tree")), want);
}

/// A free UDP address on 127.0.0.1.
fn free_addr() -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", sock.local_addr().unwrap().port())
}

#[test]
fn a_restore_replicates_to_a_peer() {
    let (mut a, mut b) = (Mount::init(), Mount::init());
    let id = |m: &Mount| {
        backer(m.store(), &["id"])
            .assert_success()
            .last_line()
            .to_string()
    };
    let (ida, idb) = (id(&a), id(&b));
    let (addr_a, addr_b) = (free_addr(), free_addr());
    backer(a.store(), &["peer", "add", &idb, &addr_b]).assert_success();
    backer(b.store(), &["peer", "add", &ida, &addr_a]).assert_success();
    for (m, addr) in [(&mut a, &addr_a), (&mut b, &addr_b)] {
        let run = m.try_mount(&["--listen", addr]);
        assert_eq!(run.code, Some(0), "{run:#?}\n{}", m.log());
        m.adopt_running_node();
    }
    make_tree(&a.path("tree"));
    let want = files_under(&a.path("tree"));
    let diag = |b: &Mount| format!("B has {:?}\nB log:\n{}", listing(&b.path("tree")), b.log());
    wait_until(
        "the tree on B",
        || files_under(&b.path("tree")) == want,
        || diag(&b),
    );
    let before = log_json(a.store(), None)[0]["time"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(5));
    fs::remove_dir_all(a.path("tree")).unwrap();
    write_synced(&a.path("marker"), b"m");
    wait_until("the delete on B", || !b.path("tree").exists(), || diag(&b));

    backer(a.store(), &["restore", "tree", "--at", &before]).assert_success();
    wait_until(
        "the restored tree on B",
        || files_under(&b.path("tree")) == want,
        || diag(&b),
    );
    assert_eq!(files_under(&a.path("tree")), want);
}

#[test]
fn bad_history_input_is_one_line() {
    let mut m = Mount::new();
    write_synced(&m.path("f"), b"f");
    let first = log_json(m.store(), None).last().unwrap()["time"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: [(&[&str], &str); 8] = [
        (
            &["restore", "f", "--at", "2000-01-01T00:00:00.000Z"],
            "first commit",
        ),
        (
            &["restore", "f", "--at", "2000-01-01T00:00"],
            "first commit",
        ),
        (&["restore", "never", "--at", &first], "no such"),
        (&["restore", "f", "--at", "xyz"], "not a commit id"),
        (&["restore", "f", "--at", "abc123"], "not a commit id"),
        (&["restore", "f", "--at", "0123456789abcdef"], "no commit"),
        (&["restore", "f", "--at", "2026-99-01"], "not a time"),
        (&["log", "never"], "no such path"),
    ];
    for running in [true, false] {
        if !running {
            m.unmount();
        }
        for (args, want) in &cases {
            let run = backer(m.store(), args);
            let line = run.assert_one_line_failure();
            assert!(
                line.contains(want),
                "{args:?} (node running: {running}): {line}"
            );
        }
    }
}

/// `log --json` once it has stopped growing for longer than the
/// background committer's quiet period (2 s).
fn settled_log(store: &TempStore) -> Vec<Value> {
    let mut log = log_json(store, None);
    let start = std::time::Instant::now();
    let mut since = start;
    while since.elapsed() < Duration::from_secs(3) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the log never settled: {log:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
        let now = log_json(store, None);
        if now.len() != log.len() {
            log = now;
            since = std::time::Instant::now();
        }
    }
    log
}

/// The `[retention]` of `config.toml` that keeps only the `n` newest roots.
fn keep_only_last(store: &TempStore, n: usize) {
    let cfg = store.dir().join("config.toml");
    let mut text = fs::read_to_string(&cfg).unwrap_or_default();
    text.push_str(&format!(
        "\n[retention]\nall = \"0\"\nhourly = \"0\"\ndaily = \"0\"\nkeep_last = {n}\n"
    ));
    fs::write(&cfg, text).unwrap();
}

#[test]
fn gc_keeping_two_roots_frees_the_rest_and_both_read_back() {
    let m = Mount::new();
    let store = m.store();
    let versions: Vec<Vec<u8>> = (0..5)
        .map(|_| crate::posix::random_bytes(4 << 20))
        .collect();
    for v in &versions {
        write_synced(&m.path("big.bin"), v);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each fsync commits its version. The kernel may still send a late
    // attribute update (the writeback cache's mtime) after an fsync, which
    // the background committer commits on its own once quiet: count the
    // commits once the log has settled, rather than assume five.
    let log = settled_log(store);
    assert!(log.len() >= 5, "one commit per fsynced version: {log:#?}");
    if log.len() > 5 {
        eprintln!("{} commits for 5 fsynced versions: {log:#?}", log.len());
    }
    let roots = log.len() as u64;
    keep_only_last(store, 2);

    // The running node collects (its config is read at each collection).
    let run = backer(store, &["gc", "--json"]);
    run.assert_success();
    let r: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        (r["roots_before"].as_u64(), r["roots_kept"].as_u64()),
        (Some(roots), Some(2)),
        "{r:#}"
    );
    let (before, after) = (
        r["store_before"].as_u64().unwrap(),
        r["store_after"].as_u64().unwrap(),
    );
    assert!(
        after + (10 << 20) < before,
        "three 4 MiB versions should be freed: {before} -> {after} bytes"
    );

    // The two kept versions are all the log has, and both read back: the
    // newest is the last version; the other the one before it (or the
    // last again, when a late attribute update made its own commit).
    let log = log_json(store, None);
    assert_eq!(log.len(), 2, "{log:#?}");
    for (k, c) in log.iter().enumerate() {
        let out = m.root().join(format!("kept{k}"));
        let id = c["commit"].as_str().unwrap();
        backer(
            store,
            &[
                "restore",
                "big.bin",
                "--at",
                id,
                "--to",
                out.to_str().unwrap(),
            ],
        )
        .assert_success();
        let got = fs::read(out.join("big.bin")).unwrap();
        let want: &[&Vec<u8>] = match k {
            0 => &[&versions[4]],
            _ => &[&versions[3], &versions[4]],
        };
        assert!(want.iter().any(|w| **w == got), "kept version {k}");
    }
    let snaps = fs::read_dir(m.path(".backer/snapshots")).unwrap().count();
    assert_eq!(snaps, 2);
    assert!(fs::read(m.path("big.bin")).unwrap() == versions[4]);

    // Again: nothing left to free; the human form says what it kept.
    let again = backer(store, &["gc"]);
    again.assert_success();
    assert!(
        again.stdout.contains("kept 2 of 2 roots; freed 0 chunks"),
        "{again:#?}"
    );

    // A bad policy is one line, and changes nothing.
    let cfg = store.dir().join("config.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(
        &cfg,
        text.replace("keep_last = 2", "keep_last = 2\ngc_every = \"often\""),
    )
    .unwrap();
    let line = backer(store, &["gc"]).assert_one_line_failure().to_string();
    assert!(line.contains("gc_every"), "{line}");
    assert_eq!(log_json(store, None).len(), 2);
}

#[test]
fn a_running_node_collects_history_by_itself() {
    let mut m = Mount::init();
    fs::write(
        m.store().dir().join("config.toml"),
        "[retention]\nall = \"0\"\nhourly = \"0\"\ndaily = \"0\"\nkeep_last = 1\ngc_every = \"1s\"\n",
    )
    .unwrap();
    m.mount();
    let store = m.store();
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|_| crate::posix::random_bytes(1 << 20))
        .collect();
    for v in &versions {
        write_synced(&m.path("f.bin"), v);
    }
    // No `backer gc`: the node's own collection, every second, leaves the
    // newest root alone and frees what only the others held.
    wait_until(
        "the node to collect history",
        || {
            let du = backer(store, &["du", "--json"]);
            let du: Value = serde_json::from_str(du.stdout.trim()).unwrap_or_default();
            du["commits"] == 1 && du["history_bytes"] == 0
        },
        || backer(store, &["du"]).stdout,
    );
    assert!(fs::read(m.path("f.bin")).unwrap() == versions[3]);
}
