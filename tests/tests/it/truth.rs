//! The store's own files are the truth (DESIGN.md): the database of a
//! stopped node deleted or damaged, `check` says so and `check --repair`
//! rebuilds it from the packs; `log` and `export` are as before; a mount
//! of a store whose database is damaged fails with one line that points
//! to the repair. Format versions: a newer store is refused in one line.

use std::os::unix::fs::FileExt;
use std::path::Path;

use backer_fs::store::{Batch, Space, Store};

use crate::mirror_util::{assert_same_tree, backer, write_synced};
use crate::mount_util::Mount;

fn data(len: usize, seed: u8) -> Vec<u8> {
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

/// A mounted store with a few files over a few commits, unmounted;
/// returns its `log --json` and an export of it.
fn written_and_stopped(m: &mut Mount) -> (String, std::path::PathBuf) {
    std::fs::create_dir(m.path("docs")).unwrap();
    write_synced(&m.path("docs/a.txt"), b"first\n");
    write_synced(&m.path("big.bin"), &data(900_000, 1));
    std::os::unix::fs::symlink("docs/a.txt", m.path("link")).unwrap();
    std::fs::set_permissions(
        m.path("big.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write_synced(&m.path("docs/a.txt"), b"second\n");
    m.unmount();
    let log = backer(m.store(), &["log", "--json"])
        .assert_success()
        .stdout
        .clone();
    let commits: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    assert!(commits.as_array().unwrap().len() >= 2, "{log}");
    let out = m.root().join("before");
    backer(m.store(), &["export", out.to_str().unwrap()]).assert_success();
    (log, out)
}

/// `check` says the index is damaged (exit 1); `check --repair` rebuilds
/// it; `log` and `export` are as before; the mount shows the files.
fn repair_and_compare(m: &mut Mount, log: &str, before: &Path) {
    let run = backer(m.store(), &["check"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.contains("missing or damaged"), "{run:#?}");
    assert!(run.stdout.contains("check --repair"), "{run:#?}");
    let run = backer(m.store(), &["check", "--json"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(r["index_damaged"].is_string(), "{r}");

    let run = backer(m.store(), &["check", "--repair"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("rebuilt the database"), "{run:#?}");
    assert!(run.stdout.contains("not restored"), "{run:#?}");
    let run = backer(m.store(), &["check"]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    let after = backer(m.store(), &["log", "--json"])
        .assert_success()
        .stdout
        .clone();
    assert_eq!(after, log, "the log after the rebuild");
    let out = m.root().join("after");
    backer(m.store(), &["export", out.to_str().unwrap()]).assert_success();
    assert_same_tree(before, &out);
    m.mount();
    assert_eq!(std::fs::read(m.path("docs/a.txt")).unwrap(), b"second\n");
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), data(900_000, 1));
}

#[test]
fn a_deleted_database_is_rebuilt_by_check_repair() {
    let mut m = Mount::new();
    let (log, before) = written_and_stopped(&mut m);
    std::fs::remove_dir_all(m.store().dir().join("db")).unwrap();
    // Every command says what happened and what to do, in one line.
    let line = backer(m.store(), &["log"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("check --repair"), "{line}");
    // init does not make a new, empty store over the packs.
    let run = backer(m.store(), &["init"]);
    assert_ne!(run.code, Some(0), "{run:#?}");
    repair_and_compare(&mut m, &log, &before);
}

#[test]
fn a_damaged_database_file_is_rebuilt_and_a_mount_says_how() {
    let mut m = Mount::new();
    let (log, before) = written_and_stopped(&mut m);
    let path = m.store().dir().join("db/db");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut at = 17;
    while at < len {
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        at += 4096;
    }
    drop(f);
    // sled may notice the damage or, where the flips land on bytes it no
    // longer reads, open a whole database: then nothing may be missing.
    // Never may it open an older one as if whole (the seal, store/seal.rs).
    let log_now = backer(m.store(), &["log", "--json"]);
    if log_now.code == Some(0) {
        assert_eq!(
            log_now.stdout, log,
            "a database that opens holds every commit"
        );
        return;
    }
    let run = m.try_mount(&[]);
    let line = run.assert_one_line_failure();
    assert!(line.contains("check --repair"), "{line}");
    repair_and_compare(&mut m, &log, &before);
}

#[test]
fn a_store_of_a_newer_format_is_refused_in_one_line() {
    let m = Mount::init();
    {
        let s = Store::open(&m.store().dir()).unwrap();
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            b"format".to_vec(),
            99u32.to_be_bytes().to_vec(),
        );
        s.kv().apply(b).unwrap();
        s.flush_durable().unwrap();
    }
    let line = backer(m.store(), &["log"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("format 99"), "{line}");
    let line = m.try_mount(&[]).assert_one_line_failure().to_string();
    assert!(line.contains("format 99"), "{line}");
}

/// A store written by main at 52e0029, format 2 (the oldest this build
/// opens), made by `tests/fixtures/make-format2.sh`: the store, that
/// binary's `log --json` and its export of the tree.
const FORMAT2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/format2-store.tar.gz");

/// The records of each kind (chunks, tree nodes, commits) in the packs
/// of the stopped store at `dir`.
fn record_counts(dir: &Path) -> [u64; 3] {
    use backer_fs::store::packs::RecordKind;
    let s = Store::open(dir).unwrap();
    let mut n = [0u64; 3];
    for id in s.packs().ids().unwrap() {
        s.packs()
            .scan(
                id,
                u64::MAX,
                |r| {
                    n[match r.kind {
                        RecordKind::Chunk => 0,
                        RecordKind::Node => 1,
                        RecordKind::Commit => 2,
                    }] += 1
                },
                |_| {},
            )
            .unwrap();
    }
    n
}

/// The commits of a `log --json`, as (id, root) pairs.
fn commits_of(log: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| (c["commit"].to_string(), c["root"].to_string()))
        .collect()
}

#[test]
fn a_format_2_store_of_an_older_main_opens_in_place_upgraded_once() {
    let mut m = Mount::init();
    let root = m.root();
    let config = std::fs::read(m.store().dir().join("config.toml")).unwrap();
    std::fs::remove_dir_all(m.store().dir()).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(FORMAT2)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(tar.success());
    // This test's own web port, not the one the fixture's init chose.
    std::fs::write(m.store().dir().join("config.toml"), config).unwrap();

    let old_log = std::fs::read_to_string(root.join("log.json")).unwrap();
    let log = backer(m.store(), &["log", "--json"])
        .assert_success()
        .stdout
        .clone();
    assert_eq!(commits_of(&log), commits_of(&old_log));
    assert!(commits_of(&log).len() >= 4, "{log}");
    // The upgrade wrote every tree node and commit to the packs, once.
    let counts = record_counts(&m.store().dir());
    assert!(counts[1] > 0, "{counts:?}");
    assert_eq!(counts[2], commits_of(&log).len() as u64, "{counts:?}");
    let out = root.join("now");
    backer(m.store(), &["export", out.to_str().unwrap()]).assert_success();
    assert_same_tree(&root.join("export"), &out);
    assert_eq!(record_counts(&m.store().dir()), counts, "a second upgrade");
    backer(m.store(), &["check"]).assert_success();

    m.mount();
    assert_eq!(std::fs::read(m.path("docs/a.txt")).unwrap(), b"beta\n");
    assert_eq!(std::fs::read(m.path("docs/c.txt")).unwrap(), b"gamma\n");
    let seq: String = (1..=40000).map(|i| format!("{i}\n")).collect();
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), seq.as_bytes());
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap(),
        Path::new("docs/a.txt")
    );
    m.unmount();
    // And the upgraded store rebuilds from its packs like any other.
    std::fs::remove_dir_all(m.store().dir().join("db")).unwrap();
    backer(m.store(), &["check", "--repair"]).assert_success();
    let after = backer(m.store(), &["log", "--json"])
        .assert_success()
        .stdout
        .clone();
    assert_eq!(commits_of(&after), commits_of(&old_log));
}
