//! The store's own files are the truth: a database (the index) that is
//! lost or damaged is rebuilt from the packs by `check --repair`, with
//! the newest committed root, its history and the node's edit clock;
//! random damage to the packs never makes a rebuild serve a wrong byte or
//! a root that was never committed.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use backer_fs::check;
use backer_fs::gc::Policy;
use backer_fs::store::packs::RecordKind;
use backer_fs::store::Store;
use backer_fs::vfs::{read_log, Commit, ROOT};
use backer_fs::{Error, Hash};
use proptest::prelude::*;

use crate::util::{random_bytes, TestFs};

/// A store with one commit per file: file `f{i}` holds `contents[i]`.
fn history(sizes: &[usize]) -> (TestFs, Vec<Vec<u8>>) {
    let fs = TestFs::new();
    let mut contents = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data = random_bytes(n, 100 + i as u64);
        fs.put(ROOT, &format!("f{i}"), &data);
        fs.vfs().commit_durable().unwrap();
        contents.push(data);
    }
    (fs, contents)
}

fn store_dir(fs: &TestFs) -> PathBuf {
    fs.dir.path().join("store")
}

/// The root, the log and the edit clock of the open store.
fn state(fs: &TestFs) -> (Hash, Vec<Commit>) {
    let v = fs.vfs();
    (
        v.root_hash().unwrap(),
        read_log(v.store().kv(), 1000).unwrap(),
    )
}

/// Closes the store and runs `damage` on its folder; returns why it no
/// longer opens.
fn break_db(fs: &mut TestFs, damage: impl FnOnce(&std::path::Path)) -> String {
    fs.vfs = None;
    damage(&store_dir(fs));
    match Store::open(&store_dir(fs)) {
        Err(Error::IndexDamaged(why)) => why,
        other => panic!("the damaged database opened: {other:?}"),
    }
}

/// Plain check says the index is damaged; repair rebuilds it and the
/// store is whole again.
fn check_then_rebuild(fs: &mut TestFs, why: String) -> check::Report {
    let dir = store_dir(fs);
    let plain = check::run_damaged(&dir, why.clone(), false).unwrap();
    assert_eq!(plain.still_bad, 1);
    assert_eq!(plain.index_damaged.as_deref(), Some(why.as_str()));
    let r = check::run_damaged(&dir, why, true).unwrap();
    fs.reopen();
    r
}

fn assert_files(fs: &TestFs, contents: &[Vec<u8>]) {
    for (i, want) in contents.iter().enumerate() {
        let ino = fs.path(&format!("f{i}")).unwrap();
        assert_eq!(&fs.get(ino), want, "f{i}");
    }
}

#[test]
fn a_deleted_database_is_rebuilt_from_the_packs() {
    let (mut fs, contents) = history(&[1000, 300_000, 5, 700_000]);
    let before = state(&fs);
    let why = break_db(&mut fs, |d| std::fs::remove_dir_all(d.join("db")).unwrap());
    let r = check_then_rebuild(&mut fs, why);
    assert_eq!(r.still_bad, 0, "{r:#?}");
    let rebuilt = r.rebuilt.as_ref().unwrap();
    assert_eq!(rebuilt.commits, 4);
    assert!(!rebuilt.not_restored.is_empty());
    assert_eq!(state(&fs), before);
    assert_files(&fs, &contents);
    // The edit clock came back too: a new edit's version is newer than
    // every one the tree holds (a clock that restarted at 0 would not be).
    fs.put(ROOT, "f0", b"edited after the rebuild");
    let info = fs.vfs().commit_durable().unwrap().unwrap();
    assert_eq!(info.seq, 5);
    // Opened again: no second rebuild, no second namespace.
    fs.reopen();
    assert_eq!(fs.get(fs.path("f0").unwrap()), b"edited after the rebuild");
    assert_eq!(read_log(fs.vfs().store().kv(), 100).unwrap().len(), 5);
}

#[test]
fn a_damaged_database_file_is_rebuilt_from_the_packs() {
    let (mut fs, contents) = history(&[2000, 400_000, 30]);
    let before = state(&fs);
    let why = break_db(&mut fs, |d| {
        // Every 4 KiB of sled's log gets one flipped byte.
        let path = d.join("db/db");
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
    });
    let r = check_then_rebuild(&mut fs, why);
    assert_eq!(r.still_bad, 0, "{r:#?}");
    assert_eq!(state(&fs), before);
    assert_files(&fs, &contents);
}

/// A collection that rewrites a pack copies the records of the nodes and
/// commits it still holds: a rebuild afterwards has the whole tree.
#[test]
fn a_collection_keeps_the_records_a_rebuild_needs() {
    let (mut fs, contents) = history(&[3000, 200_000]);
    fs.put(ROOT, "big", &random_bytes(24 << 20, 9));
    fs.vfs().commit_durable().unwrap();
    fs.vfs().names().unlink(ROOT, b"big").unwrap();
    fs.vfs().commit_durable().unwrap();
    let policy = Policy {
        all: std::time::Duration::ZERO,
        hourly: std::time::Duration::ZERO,
        daily: std::time::Duration::ZERO,
        keep_last: 1,
    };
    let report = fs.vfs().history().gc(&policy).unwrap();
    assert!(report.packs_rewritten >= 1, "{report:?}");
    let packs = store_dir(&fs).join("packs");
    assert!(
        !packs.join("00000001.pack").exists(),
        "pack 1 was rewritten"
    );
    let before = state(&fs);
    assert_eq!(before.1.len(), 1);
    let why = break_db(&mut fs, |d| std::fs::remove_dir_all(d.join("db")).unwrap());
    let r = check_then_rebuild(&mut fs, why);
    assert_eq!(r.still_bad, 0, "{r:#?}");
    assert_eq!(state(&fs), before);
    assert_files(&fs, &contents);
}

/// Counts the records of each kind in the packs of the store at `dir`
/// (without opening the store).
pub(crate) fn record_counts(dir: &std::path::Path) -> [u64; 3] {
    let packs = backer_fs::store::Packs::open(&dir.join("packs")).unwrap();
    let mut n = [0u64; 3];
    for id in packs.ids().unwrap() {
        packs
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

#[test]
fn nodes_and_commits_reach_the_packs_with_each_commit() {
    let (fs, _) = history(&[10, 20]);
    let dir = store_dir(&fs);
    let [chunks, nodes, commits] = record_counts(&dir);
    assert_eq!((chunks, commits), (2, 2));
    assert!(nodes >= 4, "{nodes} node records");
}

/// A tree node whose record in the packs is damaged: the store reads on
/// (the database holds it), check reports it, repair writes the record
/// again, and a rebuild afterwards has the whole tree.
#[test]
fn a_damaged_node_record_is_reported_and_written_again() {
    let (mut fs, contents) = history(&[100, 200]);
    let before = state(&fs);
    fs.vfs = None;
    let dir = store_dir(&fs);
    let mut node = None;
    {
        let s = Store::open(&dir).unwrap();
        s.packs()
            .scan(
                1,
                u64::MAX,
                |r| {
                    if r.kind == RecordKind::Node && node.is_none() {
                        node = Some(r.loc);
                    }
                },
                |_| {},
            )
            .unwrap();
    }
    let loc = node.expect("a node record");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("packs/00000001.pack"))
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, loc.offset).unwrap();
    f.write_all_at(&[b[0] ^ 1], loc.offset).unwrap();
    drop(f);
    fs.reopen();
    let s = fs.vfs().store();
    let r = check::run(&s, false).unwrap();
    assert_eq!(r.unbacked.len(), 1, "{r:#?}");
    assert!(r.still_bad > 0);
    let r = check::run(&s, true).unwrap();
    assert_eq!(r.repaired.backed, r.unbacked, "{r:#?}");
    let r = check::run(&s, false).unwrap();
    assert!(r.unbacked.is_empty(), "{r:#?}");
    drop(s);
    let why = break_db(&mut fs, |d| std::fs::remove_dir_all(d.join("db")).unwrap());
    check_then_rebuild(&mut fs, why);
    assert_eq!(state(&fs), before);
    assert_files(&fs, &contents);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Random damage to the packs (record headers, chunks, tree nodes,
    /// commit records), then the database lost: check and the rebuild
    /// never panic; the rebuilt head is a root that was committed; every
    /// file reads its true bytes or fails with EIO.
    #[test]
    fn random_pack_damage_then_a_rebuild_never_yields_a_wrong_byte(
        spots in proptest::collection::vec((0.0f64..1.0, 1usize..200), 1..4)
    ) {
        let (mut fs, contents) = history(&[700, 90_000, 40, 5000]);
        let roots: Vec<Hash> = state(&fs).1.iter().map(|c| Hash(c.root)).collect();
        fs.vfs = None;
        let pack = store_dir(&fs).join("packs/00000001.pack");
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
        let len = f.metadata().unwrap().len();
        for (at, n) in spots {
            let at = ((len as f64) * at) as u64;
            let mut b = vec![0u8; (n as u64).min(len - at) as usize];
            f.read_exact_at(&mut b, at).unwrap();
            for x in &mut b {
                *x ^= 0xa5;
            }
            f.write_all_at(&b, at).unwrap();
        }
        drop(f);
        // With the database intact: check reports, never panics.
        {
            let s = Store::open(&store_dir(&fs)).unwrap();
            let r = check::run(&s, false).unwrap();
            prop_assert!(r.still_bad > 0 || r.damaged.is_empty());
        }
        std::fs::remove_dir_all(store_dir(&fs).join("db")).unwrap();
        let why = "lost".to_string();
        if check::run_damaged(&store_dir(&fs), why, true).is_err() {
            return Ok(()); // refused, honestly
        }
        fs.reopen();
        let root = fs.vfs().root_hash().unwrap();
        let empty = backer_fs::tree::dir::empty(&mut backer_fs::tree::MemNodes::new()).unwrap();
        prop_assert!(root == empty || roots.contains(&root), "a root never committed");
        for (i, want) in contents.iter().enumerate() {
            let Ok(ino) = fs.path(&format!("f{i}")) else { continue };
            let v = fs.vfs();
            let fh = v.files().open(ino, false, false).unwrap();
            let size = v.names().getattr(ino).unwrap().size;
            let mut got = Vec::new();
            while (got.len() as u64) < size {
                match v.files().read(fh, got.len() as u64, 1 << 17) {
                    Ok(part) if !part.is_empty() => got.extend_from_slice(&part),
                    Ok(_) => break,
                    Err(e) => {
                        prop_assert_eq!(e.errno(), libc::EIO);
                        break;
                    }
                }
            }
            v.files().release(fh).unwrap();
            prop_assert!(want.starts_with(&got), "f{} read a wrong byte", i);
        }
    }
}

/// A format 3 store (its packs held chunks only) is upgraded in place at
/// its first open: every tree node and commit is written to the packs,
/// once; the database is not copied (nothing must leave it).
#[test]
fn a_format_3_store_gets_its_nodes_and_commits_written_once() {
    use backer_fs::store::sled_kv::{SledKv, DEFAULT_CACHE_BYTES};
    use backer_fs::store::{Batch, Kv, Space, FORMAT_VERSION};
    let (mut fs, contents) = history(&[10, 300_000]);
    let before = state(&fs);
    fs.vfs = None;
    let dir = store_dir(&fs);
    let (nodes, commits) = {
        let kv = SledKv::open(&dir.join("db"), DEFAULT_CACHE_BYTES).unwrap();
        let mut b = Batch::default();
        b.put(Space::Meta, &b"format"[..], 3u32.to_be_bytes());
        kv.apply(b).unwrap();
        kv.flush().unwrap();
        let count = |s| kv.scan(s, &[], None, usize::MAX).unwrap().len() as u64;
        (count(Space::Nodes), count(Space::Commits))
    };
    let [c0, n0, g0] = record_counts(&dir);
    drop(Store::open(&dir).unwrap());
    let [c1, n1, g1] = record_counts(&dir);
    assert_eq!((c1, n1, g1), (c0, n0 + nodes, g0 + commits), "upgraded");
    drop(Store::open(&dir).unwrap());
    assert_eq!(record_counts(&dir), [c1, n1, g1], "and not again");
    let s = Store::open(&dir).unwrap();
    let format = s.kv().get(Space::Meta, b"format").unwrap().unwrap();
    assert_eq!(format, FORMAT_VERSION.to_be_bytes());
    drop(s);
    fs.reopen();
    assert_eq!(state(&fs), before);
    assert_files(&fs, &contents);
}
