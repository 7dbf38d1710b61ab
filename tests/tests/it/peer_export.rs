//! The contract of DESIGN.md ("How it is used") for `peer add|remove|list`,
//! `replica` and `export`: peers kept in STORE/config.toml whether a node
//! runs or not, a replica owning its store, and an export that reproduces
//! the tree written through a real mount (bytes, holes, symlinks, modes,
//! mtimes), by the running node or with the store opened. User errors are
//! one line and a non-zero exit.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use backer_tests::{Run, TempStore};

use crate::mount_util::{check, cpath, poll_until, walk, Mount};
use crate::posix::random_bytes;

/// `backer init` in a new temporary store; returns it and its id.
fn init() -> (TempStore, String) {
    let store = TempStore::new();
    let run = Run::of(store.backer().arg("init"));
    let id = run.assert_success().last_line().to_string();
    (store, id)
}

/// `backer --store S ARGS...`, run to completion.
fn backer(store: &TempStore, args: &[&str]) -> Run {
    Run::of(store.backer().args(args).stdin(Stdio::null()))
}

fn config(store: &TempStore) -> String {
    fs::read_to_string(store.dir().join("config.toml")).unwrap_or_default()
}

#[test]
fn peer_add_list_remove_round_trip() {
    let (store, own) = init();
    let (_b, b) = init();
    let (_c, c) = init();
    assert_ne!(own, b);
    assert!(backer(&store, &["peer", "list"])
        .assert_success()
        .stdout
        .is_empty());

    backer(&store, &["peer", "add", &b, "127.0.0.1:22000"]).assert_success();
    // Any case, without dashes: stored in the displayed form.
    let c_sloppy = c.to_lowercase().replace('-', "");
    backer(&store, &["peer", "add", &c_sloppy]).assert_success();
    let cfg = config(&store);
    assert!(cfg.contains(&format!("id = \"{b}\"")), "{cfg}");
    assert!(cfg.contains("addr = \"127.0.0.1:22000\""), "{cfg}");
    assert!(cfg.contains(&format!("id = \"{c}\"")), "{cfg}");
    assert_eq!(cfg.matches("[[peer]]").count(), 2, "{cfg}");

    let run = backer(&store, &["peer", "list"]);
    let lines: Vec<&str> = run.assert_success().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:#?}");
    let line_of = |id: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {run:#?}"))
    };
    assert!(line_of(&b).contains("127.0.0.1:22000"), "{run:#?}");
    assert_eq!(line_of(&c).split_whitespace().nth(1), Some("-"), "{run:#?}");

    // Adding a known id changes its address; it is still one peer.
    backer(&store, &["peer", "add", &b, "localhost:22001"]).assert_success();
    let cfg = config(&store);
    assert_eq!(cfg.matches("[[peer]]").count(), 2, "{cfg}");
    assert!(cfg.contains("addr = \"localhost:22001\""), "{cfg}");
    assert!(!cfg.contains("22000"), "{cfg}");

    backer(&store, &["peer", "remove", &c]).assert_success();
    let cfg = config(&store);
    assert!(!cfg.contains(&c), "{cfg}");
    let run = backer(&store, &["peer", "list"]);
    assert_eq!(run.assert_success().stdout.lines().count(), 1, "{run:#?}");

    backer(&store, &["peer", "remove", &b.to_lowercase()]).assert_success();
    assert!(!config(&store).contains("[[peer]]"));
    assert!(backer(&store, &["peer", "list"])
        .assert_success()
        .stdout
        .is_empty());
    // The store still opens: the id is unchanged.
    assert_eq!(backer(&store, &["id"]).assert_success().last_line(), own);
}

#[test]
fn peer_errors_are_one_line_and_change_nothing() {
    let (store, own) = init();
    let (_b, b) = init();
    backer(&store, &["peer", "add", &b, "127.0.0.1:22000"]).assert_success();
    let before = config(&store);

    let line = backer(&store, &["peer", "add", "not-an-id"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("not a node id"), "{line}");
    // One character changed: the check characters catch it.
    let typo = format!("{}{}", if b.starts_with('A') { "B" } else { "A" }, &b[1..]);
    backer(&store, &["peer", "add", &typo]).assert_one_line_failure();
    let line = backer(&store, &["peer", "add", &own])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("own id"), "{line}");
    for addr in [
        "nohost",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        ":22000",
        "a b:1",
    ] {
        let line = backer(&store, &["peer", "add", &b, addr])
            .assert_one_line_failure()
            .to_string();
        assert!(line.contains("address"), "{addr}: {line}");
    }
    let (_c, c) = init();
    let line = backer(&store, &["peer", "remove", &c])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("not a peer"), "{line}");
    backer(&store, &["peer", "remove", "bogus"]).assert_one_line_failure();
    assert_eq!(config(&store), before);

    let missing = TempStore::new();
    for args in [
        &["peer", "list"][..],
        &["peer", "add", &b],
        &["peer", "remove", &b],
    ] {
        let line = backer(&missing, args).assert_one_line_failure().to_string();
        assert!(line.contains("backer init"), "{args:?}: {line}");
    }
    assert!(!missing.dir().exists());
}

#[test]
fn replica_without_a_store_fails_with_one_line() {
    let store = TempStore::new();
    let line = backer(&store, &["replica"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("backer init"), "{line}");
    let line = backer(&store, &["replica", "--listen", "127.0.0.1:0"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("backer init"), "{line}");
}

/// A `backer replica` in the background, stopped by SIGTERM (killed if it
/// does not stop) when dropped.
struct Replica {
    child: Child,
}

impl Replica {
    fn start(store: &TempStore, args: &[&str]) -> Replica {
        let child = store
            .backer()
            .arg("replica")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start backer replica");
        let r = Replica { child };
        poll_until("the replica to answer status", || {
            backer(store, &["status"]).stdout.contains("running pid")
        });
        r
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        crate::mount_util::signal(self.child.id() as i32, libc::SIGTERM);
        let status = self.child.wait().expect("wait for the replica");
        status.code()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own child; no memory involved.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            for _ in 0..500 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn replica_owns_its_store_and_peers_change_while_it_runs() {
    let (store, own) = init();
    let (_b, b) = init();
    let replica = Replica::start(&store, &["--listen", "127.0.0.1:0"]);

    let status = backer(&store, &["status", "--json"]);
    assert!(status.assert_success().stdout.contains(&own), "{status:#?}");
    let line = backer(&store, &["replica"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("running node"), "{line}");
    // The node exports its (empty) tree while it runs.
    let out = store.home().join("export");
    backer(&store, &["export", out.to_str().unwrap()]).assert_success();
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);

    // Peers change while the node runs; it re-reads config.toml.
    let run = backer(&store, &["peer", "add", &b, "127.0.0.1:9"]);
    assert!(run.assert_success().stderr.is_empty(), "{run:#?}");
    assert!(config(&store).contains(&b));
    poll_until("the node to know the new peer", || {
        let run = backer(&store, &["peer", "list"]);
        run.stdout.contains(&b) && run.stdout.contains("not connected")
    });
    let run = backer(&store, &["status"]);
    assert!(run.assert_success().stdout.contains(&b), "{run:#?}");
    backer(&store, &["peer", "remove", &b]).assert_success();
    assert!(!config(&store).contains(&b));

    assert_eq!(replica.stop(), Some(0));
    assert!(!store.dir().join("backer.sock").exists());
    // The store is free again.
    assert!(backer(&store, &["status"])
        .assert_success()
        .stdout
        .contains("not running"));
}

#[test]
fn export_needs_a_store_and_a_new_or_empty_folder() {
    let missing = TempStore::new();
    let out = missing.home().join("out");
    let line = backer(&missing, &["export", out.to_str().unwrap()])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("backer init"), "{line}");
    assert!(!out.exists());

    let (store, _) = init();
    let busy = store.home().join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let line = backer(&store, &["export", busy.to_str().unwrap()])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("not empty"), "{line}");
    assert_eq!(fs::read(busy.join("keep.txt")).unwrap(), b"mine");
    let file = busy.join("keep.txt");
    backer(&store, &["export", file.to_str().unwrap()]).assert_one_line_failure();

    // A new store has an empty tree: an empty folder, created with its
    // parents, or an existing empty one.
    let fresh = store.home().join("a/b/fresh");
    backer(&store, &["export", fresh.to_str().unwrap()]).assert_success();
    assert_eq!(fs::read_dir(&fresh).unwrap().count(), 0);
    backer(&store, &["export", fresh.to_str().unwrap()]).assert_success();
}

/// Sets the mtime of `p` itself (not a symlink's target).
fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a valid C path and two initialised timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

const SPARSE_LEN: u64 = 16 << 20;

/// Writes the same tree under `root` (a mount or a plain folder): nested
/// folders, a multi-chunk file, a sparse one, an empty one, an executable,
/// a read-only file and folder, symlinks (relative, absolute, dangling), a
/// fifo; then fixed modes and distinct mtimes, deepest first.
fn write_tree(root: &Path, big: &[u8]) {
    let p = |rel: &str| root.join(rel);
    for d in ["docs", "docs/deep", "docs/deep/er", "locked", "empty-dir"] {
        fs::create_dir(p(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
    }
    let files: [(&str, &[u8], u32); 7] = [
        ("docs/readme.txt", b"hello\n", 0o644),
        ("docs/deep/er/random.bin", big, 0o600),
        ("run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("docs/read-only", b"do not touch\n", 0o444),
        ("empty", b"", 0o640),
        ("name with spaces \u{e9}.txt", b"unicode\n", 0o664),
        ("locked/inside.txt", b"in a read-only folder\n", 0o600),
    ];
    for (rel, data, mode) in files {
        fs::write(p(rel), data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        fs::set_permissions(p(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Holes before and after a few bytes in the middle.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(p("sparse.img")).unwrap();
        f.set_len(SPARSE_LEN).unwrap();
        f.write_all_at(b"middle", SPARSE_LEN / 2).unwrap();
        f.sync_all().unwrap();
    }
    std::os::unix::fs::symlink("deep/er/random.bin", p("docs/link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at all", p("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("absolute")).unwrap();
    // SAFETY: mkfifo with a valid C path.
    check(unsafe { libc::mkfifo(cpath(&p("pipe")).as_ptr(), 0o600) }).expect("mkfifo");
    fs::set_permissions(p("pipe"), fs::Permissions::from_mode(0o640)).unwrap();
    for (d, mode) in [
        ("docs", 0o755),
        ("docs/deep", 0o750),
        ("docs/deep/er", 0o700),
    ] {
        fs::set_permissions(p(d), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(p("empty-dir"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(p("locked"), fs::Permissions::from_mode(0o555)).unwrap();
    // Children sort after their folder: in reverse, deepest first.
    for (i, rel) in walk(root).iter().rev().enumerate() {
        let i = i as i64;
        set_mtime(&root.join(rel), 1_600_000_000 + i * 1000, i * 1_000_003);
    }
}

/// Asserts that `out` holds what `want` holds: the same names and types,
/// modes (not of symlinks), mtimes to the nanosecond, symlink targets,
/// sizes; the bytes are compared by `diff -r`.
fn assert_same_tree(want: &Path, out: &Path) {
    assert_eq!(walk(out), walk(want), "the exported names");
    for rel in walk(want) {
        let (w, o) = (want.join(&rel), out.join(&rel));
        let wm = fs::symlink_metadata(&w).unwrap();
        let om = fs::symlink_metadata(&o).unwrap();
        let what = rel.display();
        assert_eq!(om.file_type(), wm.file_type(), "type of {what}");
        if !wm.file_type().is_symlink() {
            assert_eq!(om.mode() & 0o7777, wm.mode() & 0o7777, "mode of {what}");
        } else {
            assert_eq!(fs::read_link(&o).unwrap(), fs::read_link(&w).unwrap());
        }
        assert_eq!(
            (om.mtime(), om.mtime_nsec()),
            (wm.mtime(), wm.mtime_nsec()),
            "mtime of {what}"
        );
        assert_eq!(om.len(), wm.len(), "size of {what}");
    }
    let diff = Run::of(
        Command::new("diff")
            .args(["-r", "--no-dereference", "-x", "pipe"])
            .arg(want)
            .arg(out),
    );
    assert_eq!(diff.code, Some(0), "diff -r: {diff:#?}");
}

#[test]
fn export_reproduces_a_tree_written_through_the_mount() {
    let big = random_bytes(3 << 20);
    let mut m = Mount::new();
    let reference = m.root().join("reference");
    fs::create_dir(&reference).unwrap();
    write_tree(&reference, &big);
    write_tree(m.dir(), &big);

    // The mounted node owns the store: it exports the tree while it runs,
    // its pending changes committed first.
    let live = m.root().join("live");
    let run = backer(m.store(), &["export", live.to_str().unwrap()]);
    assert!(run.assert_success().stdout.contains("Exported"), "{run:#?}");
    assert_same_tree(&reference, &live);
    assert!(!live.join(".backer").exists());

    m.unmount();
    let out: PathBuf = m.root().join("export");
    let out_arg = out.to_str().unwrap();
    let run = backer(m.store(), &["export", out_arg]);
    run.assert_success();
    assert!(
        run.stderr.is_empty(),
        "no progress bar off a terminal: {run:#?}"
    );
    assert_same_tree(&reference, &out);
    assert!(!out.join(".backer").exists());

    // Holes stayed holes.
    let sparse = fs::metadata(out.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_LEN);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse.img takes {} blocks",
        sparse.blocks()
    );
    let mut want = vec![0u8; SPARSE_LEN as usize];
    want[SPARSE_LEN as usize / 2..][..6].copy_from_slice(b"middle");
    assert!(fs::read(out.join("sparse.img")).unwrap() == want);

    // A second export into another folder is the same; into this one, refused.
    let again = m.root().join("again");
    backer(m.store(), &["export", again.to_str().unwrap()]).assert_success();
    assert_same_tree(&reference, &again);
    let line = backer(m.store(), &["export", out_arg])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("not empty"), "{line}");
}

/// `mount --listen` reaches the node started in the background.
#[test]
fn mount_listen_reaches_the_background_node() {
    let mut m = Mount::init();
    let run = m.try_mount(&["--listen", "127.0.0.1:0"]);
    run.assert_success();
    m.adopt_running_node();
    let status = backer(m.store(), &["status", "--json"]);
    let out = &status.assert_success().stdout;
    assert!(out.contains("\"listen\":\"127.0.0.1:"), "{status:#?}");
    m.unmount();
}
