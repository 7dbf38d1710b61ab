//! History collection on real sled stores: what a policy drops is freed
//! (store size falls), and everything still reachable reads back byte for
//! byte: kept roots, the live tree, open and unlinked-while-open files.

use std::collections::BTreeMap;
use std::time::Duration;

use backer_fs::gc::Policy;
use backer_fs::store::Store;
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::{dir, Kind};
use backer_fs::vfs::{read_log, ROOT};
use backer_fs::Hash;

use crate::util::{random_bytes, write_all, TestFs, ME};

/// Keeps only the `n` newest roots.
pub(crate) fn keep_last(n: usize) -> Policy {
    Policy {
        all: Duration::ZERO,
        hourly: Duration::ZERO,
        daily: Duration::ZERO,
        keep_last: n,
    }
}

/// Every file of the tree `root`, by path, read from the store's chunks.
pub(crate) fn read_tree(store: &Store, root: Hash) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((path, node)) = stack.pop() {
        for e in dir::entries(store, node).unwrap() {
            if e.deleted {
                continue;
            }
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                Kind::Dir => stack.push((p, e.hash)),
                Kind::File => {
                    let mut bytes = Vec::new();
                    for x in content::extents(store, e.hash).unwrap() {
                        match x {
                            Extent::Data { hash, .. } => {
                                bytes.extend(store.read_chunk(&hash).unwrap())
                            }
                            Extent::Hole { len } => bytes.resize(bytes.len() + len as usize, 0),
                        }
                    }
                    out.insert(p, bytes);
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn keeping_two_roots_frees_the_others_and_both_read_back() {
    let mut t = TestFs::new();
    let a = t.vfs().names().mkdir(ME, ROOT, b"a", 0o755).unwrap().ino;
    t.put(ROOT, "same.txt", b"in every version");
    let mut trees = BTreeMap::new();
    for i in 0..5u64 {
        t.put(a, "big", &random_bytes(6 << 20, 100 + i));
        let info = t.vfs().commit().unwrap().expect("a commit");
        let store = t.vfs().store();
        trees.insert(info.root, read_tree(&store, info.root));
    }
    t.vfs().store().flush_durable().unwrap();
    let before = t.vfs().store().size_on_disk().unwrap();

    let report = t.vfs().history().gc(&keep_last(2)).unwrap();
    assert_eq!((report.roots_before, report.roots_kept), (5, 2));
    assert!(
        report.chunks_freed > 0 && report.nodes_freed > 0,
        "{report:?}"
    );
    assert!(report.chunk_bytes_freed >= 18 << 20, "{report:?}");
    assert!(report.packs_rewritten >= 1, "{report:?}");
    let after = t.vfs().store().size_on_disk().unwrap();
    assert_eq!(report.store_after, after);
    assert!(
        after + (16 << 20) < before,
        "store {before} -> {after} bytes: three 6 MiB versions should be gone"
    );

    // The two kept roots read back byte for byte, also after a reopen.
    for round in 0..2 {
        let log = read_log(t.vfs().store().kv(), usize::MAX).unwrap();
        assert_eq!(log.len(), 2, "round {round}");
        for c in &log {
            let root = Hash(c.root);
            assert_eq!(read_tree(&t.vfs().store(), root), trees[&root]);
        }
        assert_eq!(t.get(t.path("a/big").unwrap()), random_bytes(6 << 20, 104));
        t.reopen();
    }

    // A second collection has nothing left to do.
    let again = t.vfs().history().gc(&keep_last(2)).unwrap();
    assert_eq!((again.nodes_freed, again.chunks_freed), (0, 0), "{again:?}");

    // Writing a collected version again stores it again (the index no
    // longer claims to have its chunks).
    t.put(a, "big", &random_bytes(6 << 20, 100));
    t.vfs().commit().unwrap();
    t.reopen();
    assert_eq!(t.get(t.path("a/big").unwrap()), random_bytes(6 << 20, 100));
}

#[test]
fn open_and_unlinked_files_are_not_collected() {
    let t = TestFs::new();
    let v = t.vfs();
    let old = random_bytes(3 << 20, 1);
    t.put(ROOT, "f", &old);
    v.commit().unwrap();
    // Open it, then unlink it: only the open handle reaches its bytes.
    let ino = t.path("f").unwrap();
    let fh = v.files().open(ino, false, false).unwrap();
    v.names().unlink(ROOT, b"f").unwrap();
    // A second file with unflushed writes past a partial fold.
    let (g, gh) = v.names().create(ME, ROOT, b"g", 0o644, false).unwrap();
    let fresh = random_bytes(20 << 20, 2);
    write_all(v, gh, 0, &fresh);
    v.commit().unwrap();
    t.put(ROOT, "other", b"x");
    v.commit().unwrap();

    let report = v.history().gc(&keep_last(1)).unwrap();
    assert!(report.roots_before > report.roots_kept, "{report:?}");
    let mut got = Vec::new();
    while got.len() < old.len() {
        let piece = v.files().read(fh, got.len() as u64, 1 << 20).unwrap();
        assert!(!piece.is_empty());
        got.extend(piece);
    }
    assert!(got == old, "the unlinked open file lost bytes");
    v.files().release(fh).unwrap();
    v.files().release(gh).unwrap();
    assert!(
        t.get(g.ino) == fresh,
        "the file written during the collection lost bytes"
    );
}
