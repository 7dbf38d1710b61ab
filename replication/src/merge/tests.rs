//! Property tests of the merge rules over trees made by a tiny editor that
//! keeps the vfs's version-vector rules (a change joins the old vector and
//! bumps; a directory joins its entries; a delete leaves a tombstone).

use super::*;
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::{Causality, MemNodes, Timestamp, VersionVector};
use backer_fs::NodeId;
use proptest::prelude::*;

pub(crate) fn node(n: u8) -> NodeId {
    NodeId([n; 32])
}

/// The one chunk of a test file written with `data`.
pub(crate) fn chunk_of(data: u64) -> Vec<u8> {
    format!("the content written as {data}").into_bytes()
}

/// Gives `l` every chunk its tree reaches (each test file's one chunk).
pub(crate) fn fill_chunks(l: &mut crate::local::MemLocal) {
    let mut m = backer_fs::gc::Marks::default();
    m.dir_tree(&l.nodes, l.root).unwrap();
    for d in 0..6 {
        let c = chunk_of(d);
        let h = Hash::of(&c);
        if m.chunks.contains(&h) {
            l.chunks.insert(h, c);
        }
    }
}

/// The content list of [`chunk_of`] `data`, stored in `nodes`, and its length.
fn content_of(nodes: &mut MemNodes, data: u64) -> (Hash, u64) {
    let chunk = chunk_of(data);
    let extent = Extent::Data {
        hash: Hash::of(&chunk),
        len: chunk.len() as u32,
    };
    content::build(nodes, &[extent]).unwrap()
}

/// A file holding [`chunk_of`] `data`, its content list stored in `nodes`.
fn file(
    nodes: &mut MemNodes,
    name: &str,
    data: u64,
    vv: VersionVector,
    by: NodeId,
    t: i64,
) -> Entry {
    let (hash, size) = content_of(nodes, data);
    Entry {
        name: name.as_bytes().to_vec(),
        kind: Kind::File,
        mode: 0o644,
        mtime: Timestamp { secs: t, nanos: 0 },
        size,
        hash,
        target: vec![],
        rdev: 0,
        vv,
        modified_by: by,
        deleted: false,
    }
}

/// One edit of a path (names from a small set, so edits collide).
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write(Vec<u8>, u64),
    Delete(Vec<u8>),
}

fn path_of(p: &[u8]) -> Vec<String> {
    p.iter().map(|i| format!("n{}", i % 4)).collect()
}

/// Applies `op` by node `me` at time `t` to the tree `root`.
fn apply(nodes: &mut MemNodes, root: Hash, op: &Op, me: NodeId, t: i64) -> Hash {
    let (path, data) = match op {
        Op::Write(p, d) => (path_of(p), Some(*d)),
        Op::Delete(p) => (path_of(p), None),
    };
    edit(nodes, root, &path, data, me, t).map_or(root, |(h, _)| h)
}

/// Returns the new tree and the vector its change carried up, or None if
/// nothing changed (a delete of a missing name).
fn edit(
    nodes: &mut MemNodes,
    dir_root: Hash,
    path: &[String],
    data: Option<u64>,
    me: NodeId,
    t: i64,
) -> Option<(Hash, VersionVector)> {
    let name = path[0].as_bytes();
    let old = dir::get(nodes, dir_root, name).unwrap();
    let new = if path.len() == 1 {
        match (data, &old) {
            (Some(d), _) => {
                let mut vv = old.as_ref().map(|o| o.vv.clone()).unwrap_or_default();
                vv.bump_to(me, t as u64);
                file(nodes, &path[0], d, vv, me, t)
            }
            (None, Some(o)) if !o.deleted => {
                let mut tomb = o.tombstone_at(me, Timestamp { secs: t, nanos: 0 }, t as u64);
                if o.kind == Kind::Dir {
                    for e in dir::entries(nodes, o.hash).unwrap() {
                        tomb.vv.join_from(&e.vv);
                    }
                }
                tomb
            }
            _ => return None,
        }
    } else {
        let (sub, mut vv) = match &old {
            Some(o) if o.kind == Kind::Dir && !o.deleted => (o.hash, o.vv.clone()),
            Some(o) => (dir::empty(nodes).unwrap(), o.vv.clone()),
            None => (dir::empty(nodes).unwrap(), VersionVector::new()),
        };
        if data.is_none() && sub == dir::empty(nodes).unwrap() {
            return None;
        }
        let (sub, child_vv) = edit(nodes, sub, &path[1..], data, me, t)?;
        vv.join_from(&child_vv);
        vv.bump_to(me, t as u64);
        Entry {
            name: name.to_vec(),
            kind: Kind::Dir,
            mode: 0o755,
            mtime: Timestamp { secs: t, nanos: 0 },
            size: 0,
            hash: sub,
            target: vec![],
            rdev: 0,
            vv,
            modified_by: me,
            deleted: false,
        }
    };
    let vv = new.vv.clone();
    let changes = [(name.to_vec(), Some(new))].into_iter().collect();
    Some((dir::update(nodes, dir_root, &changes).unwrap(), vv))
}

pub(crate) fn arb_op() -> impl Strategy<Value = Op> {
    let path = proptest::collection::vec(0u8..4, 1..4);
    prop_oneof![
        3 => (path.clone(), 0u64..6).prop_map(|(p, d)| Op::Write(p, d)),
        1 => path.prop_map(Op::Delete),
    ]
}

/// Up to `max` random edits.
pub(crate) fn arb_ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(arb_op(), 0..max)
}

pub(crate) fn history(
    nodes: &mut MemNodes,
    mut root: Hash,
    ops: &[Op],
    me: NodeId,
    t0: i64,
) -> Hash {
    for (i, op) in ops.iter().enumerate() {
        root = apply(nodes, root, op, me, t0 + i as i64);
    }
    root
}

/// Every live file of `side` at `path` (recursively) is still accounted
/// for in `merged`: the same content at its name, a conflict copy of it in
/// the same directory, or superseded by what `other` held there.
fn accounted(
    nodes: &MemNodes,
    side: Hash,
    other: Option<Hash>,
    merged: Option<Hash>,
    tomb: Option<&VersionVector>,
) {
    for e in dir::entries(nodes, side).unwrap() {
        if e.deleted {
            continue;
        }
        let theirs = other.and_then(|o| dir::get(nodes, o, &e.name).unwrap());
        let ours_now = merged.and_then(|m| dir::get(nodes, m, &e.name).unwrap());
        let seen = |v: &VersionVector| {
            matches!(e.vv.compare(v), Causality::DominatedBy | Causality::Equal)
        };
        let superseded = theirs.as_ref().is_some_and(|t| seen(&t.vv)) || tomb.is_some_and(seen);
        if e.kind == Kind::Dir {
            let sub = |x: &Option<Entry>| {
                x.as_ref()
                    .filter(|x| x.kind == Kind::Dir && !x.deleted)
                    .map(|x| x.hash)
            };
            if superseded {
                continue; // everything beneath is, too
            }
            let mut target = sub(&ours_now);
            if target.is_none() {
                // The directory lost its name to other content: it lives on
                // as a conflict copy beside it.
                let mut prefix = e.name.clone();
                prefix.extend_from_slice(b".sync-conflict-");
                target = merged.and_then(|m| {
                    dir::entries(nodes, m).unwrap().into_iter().find_map(|c| {
                        (c.kind == Kind::Dir && !c.deleted && c.name.starts_with(&prefix))
                            .then_some(c.hash)
                    })
                });
            }
            let their_tomb = theirs
                .as_ref()
                .filter(|t| t.deleted && t.kind == Kind::Dir)
                .map(|t| &t.vv)
                .or(tomb);
            accounted(nodes, e.hash, sub(&theirs), target, their_tomb);
            continue;
        }
        let here = ours_now.as_ref().is_some_and(|m| m.same_content(&e));
        let copied = merged.is_some_and(|m| {
            dir::entries(nodes, m).unwrap().iter().any(|c| {
                c.same_content(&e)
                    && c.name.starts_with(&e.name[..e.name.len().min(2)])
                    && c.name.windows(15).any(|w| w == b".sync-conflict-")
            })
        });
        assert!(
            here || copied || superseded,
            "lost {:?}: merged has {:?}",
            String::from_utf8_lossy(&e.name),
            ours_now
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn merge_is_commutative_idempotent_and_loses_nothing(
        base_ops in arb_ops(8),
        a_ops in arb_ops(8),
        b_ops in arb_ops(8),
    ) {
        let mut nodes = MemNodes::new();
        let empty = dir::empty(&mut nodes).unwrap();
        let base = history(&mut nodes, empty, &base_ops, node(9), 1_000);
        let a = history(&mut nodes, base, &a_ops, node(1), 2_000);
        let b = history(&mut nodes, base, &b_ops, node(2), 2_000);

        let ab = merge_roots(&mut nodes, a, b).unwrap();
        let ba = merge_roots(&mut nodes, b, a).unwrap();
        prop_assert_eq!(ab.root, ba.root, "commutative");
        prop_assert_eq!(ab.conflicts, ba.conflicts);
        prop_assert_eq!(merge_roots(&mut nodes, ab.root, ab.root).unwrap().root, ab.root);
        prop_assert_eq!(merge_roots(&mut nodes, ab.root, a).unwrap().root, ab.root, "absorbs a");
        prop_assert_eq!(merge_roots(&mut nodes, b, ab.root).unwrap().root, ab.root, "b takes it");
        prop_assert_eq!(merge_roots(&mut nodes, a, a).unwrap().root, a);
        accounted(&nodes, a, Some(b), Some(ab.root), None);
        accounted(&nodes, b, Some(a), Some(ab.root), None);
        // The merged tree is canonical: rebuilding it gives the same root.
        prop_assert!(dir::is_canonical(&nodes, ab.root).unwrap());
    }

    #[test]
    fn three_way_merges_converge_in_any_order(
        a_ops in arb_ops(6),
        b_ops in arb_ops(6),
        c_ops in arb_ops(6),
    ) {
        let mut nodes = MemNodes::new();
        let empty = dir::empty(&mut nodes).unwrap();
        let a = history(&mut nodes, empty, &a_ops, node(1), 10);
        let b = history(&mut nodes, empty, &b_ops, node(2), 10);
        let c = history(&mut nodes, empty, &c_ops, node(3), 10);
        let mut m = |x: Hash, y: Hash| merge_roots(&mut nodes, x, y).unwrap().root;
        // a<-b, then a<-c; b and c then pull a: all equal.
        let ab = m(a, b);
        let abc = m(ab, c);
        let b2 = m(b, abc);
        let c2 = m(c, abc);
        prop_assert_eq!(b2, abc);
        prop_assert_eq!(c2, abc);
    }
}

#[test]
fn concurrent_edits_keep_both_with_a_deterministic_name() {
    let mut nodes = MemNodes::new();
    let empty = dir::empty(&mut nodes).unwrap();
    let w = |d| Op::Write(vec![0], d);
    let base = history(&mut nodes, empty, &[w(1)], node(9), 100);
    let a = history(&mut nodes, base, &[w(2)], node(1), 200);
    let b = history(&mut nodes, base, &[w(3)], node(2), 300);
    let m = merge_roots(&mut nodes, a, b).unwrap();
    assert_eq!(m.conflicts, 1);
    let names: Vec<String> = dir::entries(&nodes, m.root)
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    // b's edit is newer (mtime 300): it keeps the name; a's is the copy,
    // named by a's mtime (200 s after the epoch) and a's short id.
    let copy = format!("n0.sync-conflict-19700101-000320-{}", node(1).short());
    assert_eq!(names, vec!["n0".to_string(), copy]);
    let kept = dir::get(&nodes, m.root, b"n0").unwrap().unwrap();
    assert_eq!(kept.hash, content_of(&mut nodes, 3).0);
}

#[test]
fn a_delete_concurrent_with_an_edit_keeps_the_edit() {
    let mut nodes = MemNodes::new();
    let empty = dir::empty(&mut nodes).unwrap();
    let base = history(&mut nodes, empty, &[Op::Write(vec![0, 1], 1)], node(9), 1);
    let a = history(&mut nodes, base, &[Op::Delete(vec![0])], node(1), 2);
    let b = history(&mut nodes, base, &[Op::Write(vec![0, 2], 5)], node(2), 3);
    let m = merge_roots(&mut nodes, a, b).unwrap();
    let d = dir::get(&nodes, m.root, b"n0").unwrap().unwrap();
    assert!(!d.deleted, "the directory survives for the edit");
    let inside = dir::entries(&nodes, d.hash).unwrap();
    let live: Vec<_> = inside
        .iter()
        .filter(|e| !e.deleted)
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(
        live,
        vec![b"n2".to_vec()],
        "the edit survives, the seen file stays deleted"
    );
    assert_eq!(m.root, merge_roots(&mut nodes, b, a).unwrap().root);
}

#[test]
fn a_dominated_delete_is_not_resurrected() {
    let mut nodes = MemNodes::new();
    let empty = dir::empty(&mut nodes).unwrap();
    let base = history(&mut nodes, empty, &[Op::Write(vec![0], 1)], node(9), 1);
    let a = history(&mut nodes, base, &[Op::Delete(vec![0])], node(1), 2);
    let m = merge_roots(&mut nodes, base, a).unwrap();
    assert_eq!(m.root, a);
    assert_eq!(merge_roots(&mut nodes, a, base).unwrap().root, a);
}

/// A chain of `n` nested directories "d" (the deepest at nesting `n`)
/// with the file "f" (written as
/// `data` by `me` at `t`) at the bottom; returns the top directory's tree.
fn chain(nodes: &mut MemNodes, n: u32, data: u64, me: NodeId, t: i64) -> Hash {
    let mut vv = VersionVector::new();
    vv.bump_to(me, t as u64);
    let f = file(nodes, "f", data, vv.clone(), me, t);
    let mut h = dir::build(nodes, &[f]).unwrap();
    for _ in 0..n {
        let d = Entry {
            name: b"d".to_vec(),
            kind: Kind::Dir,
            mode: 0o755,
            mtime: Timestamp { secs: t, nanos: 0 },
            size: 0,
            hash: h,
            target: vec![],
            rdev: 0,
            vv: vv.clone(),
            modified_by: me,
            deleted: false,
        };
        h = dir::build(nodes, &[d]).unwrap();
    }
    h
}

/// Runs `f` on a thread with a 256 KiB stack, far below the 2 MiB default.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn trees_nested_as_deep_as_allowed_merge_on_a_small_stack() {
    on_small_stack(|| {
        let mut nodes = MemNodes::new();
        let empty = dir::empty(&mut nodes).unwrap();
        // Directories down to depth MAX_DEPTH, the deepest allowed.
        let a = chain(&mut nodes, MAX_DEPTH, 1, node(1), 10);
        let b = chain(&mut nodes, MAX_DEPTH, 2, node(2), 20);
        // Taken whole, merged name by name all the way down, and pruned
        // under a concurrent delete of the top directory.
        assert_eq!(merge_roots(&mut nodes, empty, b).unwrap().root, b);
        let ab = merge_roots(&mut nodes, a, b).unwrap();
        assert_eq!(ab.conflicts, 1, "the two files at the bottom conflict");
        assert_eq!(ab.root, merge_roots(&mut nodes, b, a).unwrap().root);
        let top = dir::get(&nodes, a, b"d").unwrap().unwrap();
        let mut tomb = top.tombstone_at(node(3), Timestamp { secs: 5, nanos: 0 }, 5);
        tomb.vv = VersionVector::new();
        tomb.vv.bump_to(node(3), 5);
        let gone = dir::update(&mut nodes, a, &[(b"d".to_vec(), Some(tomb))].into()).unwrap();
        let kept = merge_roots(&mut nodes, gone, b).unwrap();
        assert!(!dir::get(&nodes, kept.root, b"d").unwrap().unwrap().deleted);
        // One more level is refused, not overflowed.
        let c = chain(&mut nodes, MAX_DEPTH + 1, 3, node(3), 30);
        assert!(matches!(
            merge_roots(&mut nodes, empty, c),
            Err(Error::TooDeep)
        ));
        assert!(matches!(merge_roots(&mut nodes, a, c), Err(Error::TooDeep)));
    });
}
