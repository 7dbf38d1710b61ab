//! Tests of the directory tree (beside `dir.rs`, which is long enough).

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};

use super::*;
use crate::identity::NodeId;
use crate::tree::entry::tests::{arb_entry, file};
use crate::tree::entry::Kind;
use crate::tree::MemNodes;
use proptest::prelude::*;

fn name(i: u32) -> Vec<u8> {
    format!("n{i:05}").into_bytes()
}

fn encode(node: &DirNode) -> Vec<u8> {
    match node {
        DirNode::Leaf(entries) => encode_leaf(entries),
        DirNode::Internal { height, children } => encode_internal(*height, children),
    }
}

/// Fanout 2 and a cap of 4 items: deep trees and cap-ended nodes from a few
/// hundred entries, so every path of the builder is exercised.
const TINY: Shape = Shape {
    bits: 1,
    max_items: 4,
};

/// Every node under `root`.
fn reachable(shape: Shape, s: &impl NodeStore, root: Hash) -> HashSet<Hash> {
    let mut out = HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(h) = todo.pop() {
        if let DirNode::Internal { children, .. } = shape.read(s, h).unwrap() {
            for (_, c) in children {
                out.insert(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The shape rules written as plainly as possible, level by level: the
/// reference the streaming builder must match.
fn reference(shape: Shape, entries: &[Entry]) -> Hash {
    fn cut<T>(shape: Shape, items: &[T], height: u8, key: impl Fn(&T) -> &[u8]) -> Vec<&[T]> {
        let mut nodes = Vec::new();
        let mut start = 0;
        for (i, item) in items.iter().enumerate() {
            let full = i + 1 - start == shape.max_items;
            if full || shape.level(key(item)) > u32::from(height) || i + 1 == items.len() {
                nodes.push(&items[start..=i]);
                start = i + 1;
            }
        }
        nodes
    }
    let hash = |bytes: Vec<u8>| Hash::of_domain(NODE_DOMAIN, &bytes);
    let mut level: Vec<(Vec<u8>, Hash)> = cut(shape, entries, 0, |e| &e.name)
        .into_iter()
        .map(|leaf| (leaf[leaf.len() - 1].name.clone(), hash(encode_leaf(leaf))))
        .collect();
    let mut height = 0;
    while level.len() > 1 {
        height += 1;
        level = cut(shape, &level, height, |i| &i.0)
            .into_iter()
            .map(|node| {
                (
                    node[node.len() - 1].0.clone(),
                    hash(encode_internal(height, node)),
                )
            })
            .collect();
    }
    level
        .pop()
        .map_or_else(|| hash(encode_leaf(&[])), |(_, h)| h)
}

fn build_map(s: &mut impl NodeStore, model: &BTreeMap<Vec<u8>, Entry>) -> Hash {
    build(s, &model.values().cloned().collect::<Vec<_>>()).unwrap()
}

/// Counts reads as well as new writes.
#[derive(Default)]
struct Counting {
    nodes: MemNodes,
    reads: Cell<u64>,
}

impl NodeStore for Counting {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.reads.set(self.reads.get() + 1);
        self.nodes.get_node(hash)
    }
    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> Result<()> {
        self.nodes.put_node(hash, bytes)
    }
}

#[test]
fn empty_directory() {
    let mut s = MemNodes::new();
    let e = empty(&mut s).unwrap();
    assert_eq!(build(&mut s, &[]).unwrap(), e);
    assert_eq!(read_node(&s, e).unwrap(), DirNode::Leaf(vec![]));
    assert_eq!(get(&s, e, b"x").unwrap(), None);
    assert!(entries(&s, e).unwrap().is_empty());
    assert!(is_canonical(&s, e).unwrap());
    // Removing the last entry gives the empty directory back.
    let one = build(&mut s, &[file(b"x", 1)]).unwrap();
    assert_ne!(one, e);
    assert_eq!(
        update(&mut s, one, &BTreeMap::from([(b"x".to_vec(), None)])).unwrap(),
        e
    );
    assert_eq!(update(&mut s, one, &BTreeMap::new()).unwrap(), one);
}

#[test]
fn a_lone_node_is_not_wrapped() {
    // One entry whose name is a high boundary: the root is still the leaf.
    let mut s = MemNodes::new();
    let high = (0..).map(name).find(|n| level(n) >= 2).unwrap();
    let root = build(&mut s, &[file(&high, 1)]).unwrap();
    assert_eq!(
        read_node(&s, root).unwrap(),
        DirNode::Leaf(vec![file(&high, 1)])
    );
    assert_eq!(s.writes(), 1);
    // Two entries in one leaf, the last a boundary up to height 5: one leaf.
    let lo = (0..).find(|&i| TINY.level(&name(i)) == 0).unwrap();
    let deep = (lo + 1..).find(|&i| TINY.level(&name(i)) >= 6).unwrap();
    let pair = [file(&name(lo), 0), file(&name(deep), 1)];
    let mut t = MemNodes::new();
    let root = TINY.build(&mut t, &pair).unwrap();
    assert_eq!(TINY.read(&t, root).unwrap(), DirNode::Leaf(pair.to_vec()));
    assert_eq!((root, t.writes()), (reference(TINY, &pair), 1));
}

#[test]
fn bad_input_is_refused() {
    let mut s = MemNodes::new();
    let (a, b) = (file(b"a", 1), file(b"b", 2));
    assert!(matches!(
        build(&mut s, &[b.clone(), a.clone()]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        build(&mut s, &[a.clone(), a.clone()]),
        Err(Error::InvalidArgument(_))
    ));
    let dotdot = Entry {
        name: b"..".to_vec(),
        ..a.clone()
    };
    assert!(matches!(
        build(&mut s, std::slice::from_ref(&dotdot)),
        Err(Error::InvalidName)
    ));
    let root = build(&mut s, std::slice::from_ref(&a)).unwrap();
    let wrong_key = BTreeMap::from([(b"c".to_vec(), Some(b.clone()))]);
    assert!(matches!(
        update(&mut s, root, &wrong_key),
        Err(Error::InvalidArgument(_))
    ));
    let invalid = BTreeMap::from([(b"..".to_vec(), Some(dotdot))]);
    assert!(matches!(
        update(&mut s, root, &invalid),
        Err(Error::InvalidName)
    ));
    let change = BTreeMap::from([(b"b".to_vec(), Some(b))]);
    assert!(matches!(
        update(&mut s, Hash::ZERO, &change),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(get(&s, Hash::ZERO, b"a"), Err(Error::Corrupt(_))));
}

#[test]
fn every_field_changes_the_root() {
    let mut s = MemNodes::new();
    let mut base: Vec<Entry> = (0..400).map(|i| file(&name(i), u64::from(i))).collect();
    base[10] = Entry {
        kind: Kind::Symlink,
        size: 3,
        hash: Hash::ZERO,
        target: b"../".to_vec(),
        ..base[10].clone()
    };
    base[20] = Entry {
        kind: Kind::CharDev,
        size: 0,
        hash: Hash::ZERO,
        rdev: 0x0103,
        ..base[20].clone()
    };
    let root = build(&mut s, &base).unwrap();
    let boundary = base.iter().position(|e| level(&e.name) > 0).unwrap();
    type Edit = Box<dyn Fn(&mut Entry)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("name", Box::new(|e| e.name.push(b'x'))),
        ("kind", Box::new(|e| (e.kind, e.size) = (Kind::Dir, 0))),
        ("mode", Box::new(|e| e.mode ^= 0o1)),
        ("secs", Box::new(|e| e.mtime.secs += 1)),
        ("nanos", Box::new(|e| e.mtime.nanos += 1)),
        ("size", Box::new(|e| e.size += 1)),
        ("hash", Box::new(|e| e.hash.0[31] ^= 1)),
        ("vv", Box::new(|e| e.vv.bump(NodeId([9; 32])))),
        ("modified_by", Box::new(|e| e.modified_by.0[0] ^= 1)),
        ("deleted", Box::new(|e| e.deleted = !e.deleted)),
    ];
    let mut roots = HashSet::from([root]);
    let mut count = 1;
    for at in [0, 1, 200, boundary, 399] {
        for (what, edit) in &edits {
            let mut list = base.clone();
            edit(&mut list[at]);
            let new = build(&mut s, &list).unwrap();
            assert!(
                roots.insert(new),
                "changing {what} of entry {at} kept a root"
            );
            count += 1;
            // The same change through update() gives the same root.
            let old_name = base[at].name.clone();
            let mut changes = BTreeMap::from([(old_name, None)]);
            changes.insert(list[at].name.clone(), Some(list[at].clone()));
            assert_eq!(
                update(&mut s, root, &changes).unwrap(),
                new,
                "{what} at {at}"
            );
        }
    }
    let other: [(usize, Edit); 2] = [
        (10, Box::new(|e| e.target[0] = b'/')),
        (20, Box::new(|e| e.rdev += 1)),
    ];
    for (at, edit) in other {
        let mut list = base.clone();
        edit(&mut list[at]);
        assert!(roots.insert(build(&mut s, &list).unwrap()));
        count += 1;
    }
    assert_eq!(roots.len(), count);
}

#[test]
fn boundary_names_come_and_go_like_build() {
    let mut s = MemNodes::new();
    let mut model: BTreeMap<Vec<u8>, Entry> = (0..4000)
        .map(|i| (name(i), file(&name(i), u64::from(i))))
        .collect();
    let mut root = build_map(&mut s, &model);
    assert!(read_node(&s, root).unwrap().height() >= 2);
    // Remove the highest boundaries first, then insert new ones.
    let mut high: Vec<Vec<u8>> = model.keys().filter(|k| level(k) >= 1).cloned().collect();
    high.sort_by_key(|k| std::cmp::Reverse(level(k)));
    assert!(level(&high[0]) >= 2, "fixture needs a level-2 name");
    let fresh: Vec<Vec<u8>> = (0..)
        .map(|i| format!("n{i:05}b").into_bytes())
        .filter(|k| level(k) >= 2)
        .take(3)
        .collect();
    let mut batches: Vec<BTreeMap<Vec<u8>, Option<Entry>>> = high
        .iter()
        .take(6)
        .map(|k| BTreeMap::from([(k.clone(), None)]))
        .collect();
    batches.extend(
        fresh
            .iter()
            .map(|k| BTreeMap::from([(k.clone(), Some(file(k, 7)))])),
    );
    batches.push(
        high.iter()
            .skip(6)
            .take(20)
            .map(|k| (k.clone(), None))
            .collect(),
    );
    for changes in batches {
        root = update(&mut s, root, &changes).unwrap();
        for (k, v) in &changes {
            match v {
                Some(e) => model.insert(k.clone(), e.clone()),
                None => model.remove(k),
            };
        }
        assert_eq!(root, build_map(&mut MemNodes::new(), &model));
    }
}

#[test]
fn hundred_thousand_entries() {
    let mut s = Counting::default();
    let mut model: BTreeMap<Vec<u8>, Entry> = (0..100_000)
        .map(|i| {
            let n = format!("file-{i:06}").into_bytes();
            (n.clone(), file(&n, i))
        })
        .collect();
    let all: Vec<Entry> = model.values().cloned().collect();
    let mut root = build(&mut s, &all).unwrap();
    let height = read_node(&s, root).unwrap().height();
    println!(
        "dir: 100000 entries: height {height}, {} nodes",
        s.nodes.writes()
    );
    assert!(height >= 2);
    for e in &all {
        assert_eq!(get(&s, root, &e.name).unwrap().as_ref(), Some(e));
    }
    for absent in [&b"a"[..], b"file-0500000", b"zzz"] {
        assert_eq!(get(&s, root, absent).unwrap(), None);
    }
    assert_eq!(entries(&s, root).unwrap(), all);

    let boundary = all
        .iter()
        .map(|e| &e.name)
        .find(|n| level(n) >= 2)
        .unwrap()
        .clone();
    let mut replaced = file(b"file-012345", 99);
    replaced.vv.bump(NodeId([2; 32]));
    let cases: Vec<(&str, Vec<u8>, Option<Entry>)> = vec![
        (
            "insert",
            b"file-050000a".to_vec(),
            Some(file(b"file-050000a", 1)),
        ),
        ("replace", b"file-012345".to_vec(), Some(replaced)),
        ("remove", b"file-077777".to_vec(), None),
        ("remove a level-2 boundary", boundary, None),
        (
            "insert after the last",
            b"zzz".to_vec(),
            Some(file(b"zzz", 2)),
        ),
        (
            "insert before the first",
            b"aaa".to_vec(),
            Some(file(b"aaa", 3)),
        ),
    ];
    for (what, key, change) in cases {
        let (writes, reads) = (s.nodes.writes(), s.reads.get());
        root = update(
            &mut s,
            root,
            &BTreeMap::from([(key.clone(), change.clone())]),
        )
        .unwrap();
        let (writes, reads) = (s.nodes.writes() - writes, s.reads.get() - reads);
        let h = u64::from(read_node(&s, root).unwrap().height());
        println!("dir: {what}: height {h}, {writes} new nodes written, {reads} nodes read");
        assert!(writes <= 2 * h + 2, "{what}: {writes} new nodes");
        assert!(reads <= 2 * (h + 1), "{what}: {reads} nodes read");
        match change {
            Some(e) => model.insert(key, e),
            None => model.remove(&key),
        };
    }
    // A batch of 100 scattered changes still rewrites a fraction of the tree.
    let batch: BTreeMap<Vec<u8>, Option<Entry>> = (0..100u64)
        .map(|i| {
            let n = format!("file-{:06}", i * 997).into_bytes();
            let change = (i % 2 == 0).then(|| file(&n, i + 5));
            (n, change)
        })
        .collect();
    let writes = s.nodes.writes();
    root = update(&mut s, root, &batch).unwrap();
    println!(
        "dir: a batch of 100 changes: {} new nodes written",
        s.nodes.writes() - writes
    );
    for (k, v) in batch {
        match v {
            Some(e) => model.insert(k, e),
            None => model.remove(&k),
        };
    }
    assert_eq!(root, build_map(&mut MemNodes::new(), &model));
    assert!(is_canonical(&s, root).unwrap());
}

#[test]
fn tampered_trees_are_refused() {
    let mut s = MemNodes::new();
    // Cut one leaf early, where no boundary is: every node decodes, but the
    // tree is not the one build() makes.
    let list: Vec<Entry> = (0..100).map(|i| file(&name(i), u64::from(i))).collect();
    let end = list.iter().position(|e| level(&e.name) > 0).unwrap();
    assert!(end >= 3, "fixture: first boundary too early");
    let leaves = [encode_leaf(&list[..2]), encode_leaf(&list[2..=end])];
    let mut children = Vec::new();
    for (bytes, last) in leaves.into_iter().zip([&list[1], &list[end]]) {
        let h = Hash::of_domain(NODE_DOMAIN, &bytes);
        s.put_node(h, bytes).unwrap();
        children.push((last.name.clone(), h));
    }
    let bytes = encode_internal(1, &children);
    let forged = Hash::of_domain(NODE_DOMAIN, &bytes);
    assert!(verify_node(&forged, &bytes));
    assert!(!verify_node(&Hash::ZERO, &bytes));
    s.put_node(forged, bytes).unwrap();
    assert_eq!(entries(&s, forged).unwrap(), list[..=end].to_vec());
    assert!(!is_canonical(&s, forged).unwrap());
    let real = build(&mut s, &list[..=end]).unwrap();
    assert!(is_canonical(&s, real).unwrap());
    // A parent naming a child by the wrong last name.
    children[0].0 = name(0);
    let bytes = encode_internal(1, &children);
    let forged = Hash::of_domain(NODE_DOMAIN, &bytes);
    s.put_node(forged, bytes).unwrap();
    assert!(matches!(entries(&s, forged), Err(Error::Corrupt(_))));
    assert!(matches!(get(&s, forged, &name(0)), Err(Error::Corrupt(_))));
}

#[test]
fn decoding_rejects_non_canonical_nodes() {
    let (a, b) = (file(b"a", 1), file(b"b", 2));
    let good = encode_leaf(&[a.clone(), b.clone()]);
    assert_eq!(
        decode_node(&good).unwrap(),
        DirNode::Leaf(vec![a.clone(), b.clone()])
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode_node(&trailing).is_err());
    for n in 0..good.len() {
        assert!(decode_node(&good[..n]).is_err(), "truncated at {n}");
    }
    let mut version = good.clone();
    version[0] = 2;
    assert!(decode_node(&version).is_err());
    let boundary = |lvl: u32| (0..).map(name).find(|n| level(n) == lvl).unwrap();
    let (one, two) = (file(&boundary(1), 3), file(&boundary(2), 4));
    let after = |e: &Entry| file(&[e.name.as_slice(), b"z"].concat(), 5);
    let h = Hash::ZERO;
    let item = |e: &Entry| (e.name.clone(), h);
    // A level-1 name ends a leaf but not a height-1 node; a level-2 one both.
    for bytes in [
        encode_leaf(&[a.clone(), one.clone()]),
        encode_internal(1, &[item(&one), item(&after(&one))]),
        encode_internal(2, &[item(&two), item(&after(&two))]),
    ] {
        assert!(decode_node(&bytes).is_ok());
    }
    for (i, bytes) in [
        encode_leaf(&[b.clone(), a.clone()]),
        encode_leaf(&[a.clone(), a.clone()]),
        encode_leaf(&[one.clone(), after(&one)]),
        encode_internal(1, &[]),
        encode_internal(1, &[(b"b".to_vec(), h), (b"a".to_vec(), h)]),
        encode_internal(1, &[(b"a/b".to_vec(), h)]),
        encode_internal(1, &[item(&two), item(&after(&two))]),
    ]
    .iter()
    .enumerate()
    {
        assert!(decode_node(bytes).is_err(), "case {i}");
    }
    let mut over = Writer::new();
    over.put_header(1, MAX_ITEMS + 1);
    for i in 0..=MAX_ITEMS {
        over.put_bytes(&name(i as u32));
        over.put_hash(&h);
    }
    assert!(decode_node(&over.into_bytes()).is_err());
}

/// Sorted, name-unique entries cut to one valid leaf.
fn leaf_of(mut list: Vec<Entry>) -> Vec<Entry> {
    list.sort_by(|x, y| x.name.cmp(&y.name));
    list.dedup_by(|x, y| x.name == y.name);
    if let Some(end) = list.iter().position(|e| level(&e.name) > 0) {
        list.truncate(end + 1);
    }
    list
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn insertion_order_does_not_matter(
        (order, sizes) in proptest::collection::btree_set(0u32..6000, 0..2500)
            .prop_flat_map(|ids| (Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                                  proptest::collection::vec(1usize..400, 1..20))),
    ) {
        let mut s = MemNodes::new();
        let sorted: BTreeSet<u32> = order.iter().copied().collect();
        let all: Vec<Entry> = sorted.iter().map(|&i| file(&name(i), u64::from(i))).collect();
        let want = build(&mut s, &all)?;
        let mut root = empty(&mut s)?;
        let mut rest = &order[..];
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let changes = batch.iter().map(|&i| (name(i), Some(file(&name(i), u64::from(i))))).collect();
            root = update(&mut s, root, &changes)?;
        }
        prop_assert_eq!(root, want);
    }

    #[test]
    fn update_equals_build(
        initial in proptest::collection::btree_set(600u32..5400, 0..3000),
        batches in proptest::collection::vec(
            proptest::collection::vec((0u32..6000, 0u8..3, any::<u16>()), 0..60), 1..5),
    ) {
        let mut s = MemNodes::new();
        let mut model: BTreeMap<Vec<u8>, Entry> =
            initial.iter().map(|&i| (name(i), file(&name(i), u64::from(i)))).collect();
        let mut root = build_map(&mut s, &model);
        for batch in batches {
            let changes: BTreeMap<Vec<u8>, Option<Entry>> = batch
                .into_iter()
                .map(|(i, op, seed)| (name(i), (op > 0).then(|| file(&name(i), u64::from(seed)))))
                .collect();
            root = update(&mut s, root, &changes)?;
            for (k, v) in changes {
                match v {
                    Some(e) => model.insert(k, e),
                    None => model.remove(&k),
                };
            }
            prop_assert_eq!(root, build_map(&mut MemNodes::new(), &model));
        }
        let all: Vec<Entry> = model.into_values().collect();
        prop_assert_eq!(root, reference(SHAPE, &all));
        prop_assert_eq!(entries(&s, root)?, all);
    }

    #[test]
    fn leaves_round_trip(list in proptest::collection::vec(arb_entry(), 0..40)) {
        let node = DirNode::Leaf(leaf_of(list));
        prop_assert_eq!(decode_node(&encode(&node))?, node);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(node) = decode_node(&bytes) {
            prop_assert_eq!(encode(&node), bytes);
        }
    }

    #[test]
    fn mutated_nodes_decode_canonically_or_fail(
        list in proptest::collection::vec(arb_entry(), 1..12),
        internal in any::<bool>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>(),
    ) {
        let leaf = leaf_of(list);
        let node = if internal {
            let children = leaf.iter().map(|e| (e.name.clone(), e.hash)).collect();
            DirNode::Internal { height: 1, children }
        } else {
            DirNode::Leaf(leaf)
        };
        let mut bytes = encode(&node);
        prop_assert!(decode_node(&bytes).is_ok());
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        match decode_node(&bytes) {
            Ok(node) => prop_assert_eq!(encode(&node), bytes),
            Err(e) => prop_assert!(matches!(e, Error::Corrupt(_))),
        }
    }
}

#[test]
fn first_leaf_ending_high_then_untouched_subtrees() {
    // The first leaf ends with a level-2 name, so it is alone at heights 0
    // and 1; changing it must not make it the root.
    // and the last name is level 2 too, so every later subtree is reused.
    let i = (3..)
        .find(|&i| level(&name(i)) >= 2 && (i - 3..i).all(|j| level(&name(j)) == 0))
        .unwrap();
    let last = (i + 2000..).find(|&j| level(&name(j)) >= 2).unwrap();
    let mut model: BTreeMap<Vec<u8>, Entry> = (i - 3..=last)
        .map(|j| (name(j), file(&name(j), 0)))
        .collect();
    let mut s = MemNodes::new();
    let root = build_map(&mut s, &model);
    let change = BTreeMap::from([(name(i - 3), Some(file(&name(i - 3), 1)))]);
    let new = update(&mut s, root, &change).unwrap();
    model.insert(name(i - 3), file(&name(i - 3), 1));
    assert_eq!(new, build_map(&mut MemNodes::new(), &model));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tiny_update_equals_build(
        initial in proptest::collection::btree_set(20u32..280, 0..250),
        batches in proptest::collection::vec(
            proptest::collection::vec((0u32..300, 0u8..3, any::<u16>()), 0..12), 1..6),
    ) {
        let mut s = MemNodes::new();
        let mut model: BTreeMap<Vec<u8>, Entry> =
            initial.iter().map(|&i| (name(i), file(&name(i), u64::from(i)))).collect();
        let all: Vec<Entry> = model.values().cloned().collect();
        let mut root = TINY.build(&mut s, &all)?;
        prop_assert_eq!(root, reference(TINY, &all));
        // A fresh build stores exactly the nodes of its tree.
        prop_assert_eq!(s.writes() as usize, reachable(TINY, &s, root).len());
        for batch in batches {
            let changes: BTreeMap<Vec<u8>, Option<Entry>> = batch
                .into_iter()
                .map(|(i, op, seed)| (name(i), (op > 0).then(|| file(&name(i), u64::from(seed)))))
                .collect();
            let before = s.clone();
            root = TINY.update(&mut s, root, &changes)?;
            for (k, v) in changes {
                match v {
                    Some(e) => model.insert(k, e),
                    None => model.remove(&k),
                };
            }
            let all: Vec<Entry> = model.values().cloned().collect();
            prop_assert_eq!(root, TINY.build(&mut MemNodes::new(), &all)?);
            prop_assert_eq!(root, reference(TINY, &all));
            prop_assert_eq!(TINY.entries(&s, root)?, all);
            // Every node update stored is part of the new tree.
            let new_nodes = reachable(TINY, &s, root).into_iter().filter(|h| !before.contains(h)).count();
            prop_assert_eq!((s.writes() - before.writes()) as usize, new_nodes);
        }
        for i in 0..300 {
            let got = TINY.get(&s, root, &name(i))?;
            prop_assert_eq!(got.as_ref(), model.get(&name(i)));
        }
    }

    #[test]
    fn tiny_insertion_order_does_not_matter(
        (order, sizes) in proptest::collection::btree_set(0u32..400, 0..300)
            .prop_flat_map(|ids| (Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                                  proptest::collection::vec(1usize..40, 1..10))),
    ) {
        let mut s = MemNodes::new();
        let sorted: BTreeSet<u32> = order.iter().copied().collect();
        let all: Vec<Entry> = sorted.iter().map(|&i| file(&name(i), u64::from(i))).collect();
        let want = TINY.build(&mut s, &all)?;
        let mut root = TINY.build(&mut s, &[])?;
        let mut rest = &order[..];
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let changes = batch.iter().map(|&i| (name(i), Some(file(&name(i), u64::from(i))))).collect();
            root = TINY.update(&mut s, root, &changes)?;
        }
        prop_assert_eq!(root, want);
        prop_assert!(TINY.is_canonical(&s, root)?);
    }
}
