//! History collection interleaved with writes and syncs: whatever the
//! order, every kept root of every node reads back byte for byte (the
//! version it was when committed), and so does the live tree. Plus a
//! collection racing a pull that decided it already had what the
//! collection then deletes.

use std::collections::HashMap;
use std::time::Duration;

use backer_fs::gc::Policy;
use backer_fs::store::Store;
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::{dir, Kind};
use backer_fs::vfs::read_log;
use backer_fs::Hash;
use proptest::prelude::*;

use crate::util::{bytes, sync, sync_ok, Node};

fn keep_last(n: usize) -> Policy {
    Policy {
        all: Duration::ZERO,
        hourly: Duration::ZERO,
        daily: Duration::ZERO,
        keep_last: n,
    }
}

/// Every file of the tree `root` read from the store alone, sorted by
/// path, in the form of [`Node::snapshot`]. Fails on anything missing.
fn read_tree(store: &Store, root: Hash) -> backer_fs::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((path, node)) = stack.pop() {
        for e in dir::entries(store, node)? {
            if e.deleted {
                continue;
            }
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let p = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            match e.kind {
                Kind::Dir => {
                    out.push((format!("{p}/"), vec![]));
                    stack.push((p, e.hash));
                }
                Kind::File => {
                    let mut b = Vec::new();
                    for x in content::extents(store, e.hash)? {
                        match x {
                            Extent::Data { hash, .. } => b.extend(store.read_chunk(&hash)?),
                            Extent::Hole { len } => b.resize(b.len() + len as usize, 0),
                        }
                    }
                    out.push((p, b));
                }
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        node: usize,
        file: u8,
        seed: u64,
        len: usize,
    },
    Remove {
        node: usize,
        file: u8,
    },
    Commit {
        node: usize,
    },
    Sync,
    Gc {
        node: usize,
        keep: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..5u8, any::<u64>(), prop_oneof![1..2_000usize, 200_000..700_000usize])
            .prop_map(|(node, file, seed, len)| Op::Write { node, file, seed, len }),
        1 => (0..2usize, 0..5u8).prop_map(|(node, file)| Op::Remove { node, file }),
        2 => (0..2usize).prop_map(|node| Op::Commit { node }),
        2 => Just(Op::Sync),
        2 => (0..2usize, 1..4usize).prop_map(|(node, keep)| Op::Gc { node, keep }),
    ]
}

fn path(file: u8) -> String {
    format!("d{}/f{file}", file % 2)
}

/// Every root each node committed, with the tree it held then.
type Seen = HashMap<Hash, Vec<(String, Vec<u8>)>>;

fn remember(n: &Node, seen: &mut Seen) {
    let root = n.root();
    seen.entry(root).or_insert_with(|| n.snapshot(""));
}

/// Every kept root of `n` reads back whole and as it was.
fn check_history(n: &Node, seen: &Seen) -> Result<(), TestCaseError> {
    let store = n.vfs.store();
    for c in read_log(store.kv(), usize::MAX).unwrap() {
        let root = Hash(c.root);
        let tree = read_tree(&store, root)
            .map_err(|e| TestCaseError::fail(format!("kept root {root} unreadable: {e}")))?;
        if let Some(want) = seen.get(&root) {
            prop_assert_eq!(&tree, want, "kept root {} changed", root);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gc_interleaved_with_writes_and_syncs_keeps_every_kept_root(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let nodes = [Node::new(), Node::new()];
        let mut seen = Seen::new();
        for op in &ops {
            match *op {
                Op::Write { node, file, seed, len } => nodes[node].write(&path(file), &bytes(seed, len)),
                Op::Remove { node, file } => {
                    if nodes[node].lookup(&path(file)).is_some() {
                        nodes[node].remove(&path(file));
                    }
                }
                Op::Commit { node } => remember(&nodes[node], &mut seen),
                Op::Sync => {
                    remember(&nodes[0], &mut seen);
                    remember(&nodes[1], &mut seen);
                    rt.block_on(sync_ok(&nodes[0], &nodes[1]));
                    remember(&nodes[0], &mut seen);
                }
                Op::Gc { node, keep } => {
                    remember(&nodes[node], &mut seen);
                    let live = nodes[node].snapshot("");
                    nodes[node].vfs.history().gc(&keep_last(keep)).unwrap();
                    prop_assert_eq!(nodes[node].snapshot(""), live);
                    let log = read_log(nodes[node].vfs.store().kv(), usize::MAX).unwrap();
                    prop_assert!(log.len() <= keep);
                    check_history(&nodes[node], &seen)?;
                }
            }
        }
        // Whatever happened, the two still converge, and nothing kept is
        // broken on either side.
        rt.block_on(sync_ok(&nodes[0], &nodes[1]));
        prop_assert_eq!(nodes[0].snapshot(""), nodes[1].snapshot(""));
        for n in &nodes {
            check_history(n, &seen)?;
        }
    }
}

/// B once held the files A now sends, in a root it has since dropped from
/// its history: its pull finds their chunks and skips them while
/// collections on B delete them. The merge must notice (the collection
/// count moved) and refuse to install a tree with holes; the next sync
/// fetches what is missing.
#[test]
fn a_collection_during_a_pull_never_leaves_holes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..4u64 {
        let (a, b) = (Node::new(), Node::new());
        let files: Vec<(String, Vec<u8>)> = (0..24)
            .map(|i| (format!("s/f{i}"), bytes(round * 100 + i, 300_000)))
            .collect();
        for (p, data) in &files {
            b.write(p, data);
        }
        b.root();
        b.remove("s");
        b.write("only-b", b"b");
        b.root();
        for (p, data) in &files {
            a.write(p, data);
        }
        a.root();

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gc = {
            let (vfs, stop) = (b.vfs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    vfs.history().gc(&keep_last(1)).unwrap();
                    runs += 1;
                }
                runs
            })
        };
        let mut failures = 0;
        loop {
            let (oa, ob) = rt.block_on(sync(&a, &b));
            if oa.result.is_ok() && ob.result.is_ok() && a.root() == b.root() {
                break;
            }
            failures += 1;
            assert!(failures < 20, "no clean sync in 20 tries");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs = gc.join().unwrap();
        assert!(runs > 0);
        for (p, data) in &files {
            assert_eq!(
                b.read(p).as_ref(),
                Some(data),
                "{p} after {failures} failed syncs"
            );
        }
        b.vfs.history().gc(&keep_last(1)).unwrap();
        assert_eq!(read_tree(&b.vfs.store(), b.root()).unwrap(), b.snapshot(""));
    }
}
