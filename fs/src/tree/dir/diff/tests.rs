//! Tests of [`diff`]: against a naive merge of the two entry lists, on
//! canonical trees and on trees cut elsewhere, and counting node reads.

use std::cell::Cell;
use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};

use super::super::{encode_internal, encode_leaf, level, read_node, NODE_DOMAIN};
use super::*;
use crate::identity::NodeId;
use crate::tree::entry::tests::file;
use crate::tree::entry::Timestamp;
use crate::tree::MemNodes;
use proptest::prelude::*;

/// Fanout 2 and a cap of 4 items: deep trees from a few hundred entries.
const TINY: Shape = Shape {
    bits: 1,
    max_items: 4,
};

fn name(i: u32) -> Vec<u8> {
    format!("n{i:05}").into_bytes()
}

/// Counts node reads.
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

/// The differences of two name-sorted entry lists, by a plain merge.
fn naive(a: &BTreeMap<Vec<u8>, Entry>, b: &BTreeMap<Vec<u8>, Entry>) -> Vec<Change> {
    let mut names: Vec<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| (a.get(n).cloned(), b.get(n).cloned()))
        .filter(|(x, y)| x != y)
        .collect()
}

/// Entry `i` of a test set: `op` 0 a tombstone, otherwise a file whose
/// content follows `seed`.
fn entry_of(i: u32, op: u8, seed: u16) -> Entry {
    let e = file(&name(i), u64::from(seed));
    if op == 0 {
        e.tombstone(NodeId([3; 32]), Timestamp::default())
    } else {
        e
    }
}

fn model(items: &[(u32, u8, u16)]) -> BTreeMap<Vec<u8>, Entry> {
    items
        .iter()
        .map(|&(i, op, seed)| (name(i), entry_of(i, op, seed)))
        .collect()
}

fn build_model(shape: Shape, s: &mut impl NodeStore, m: &BTreeMap<Vec<u8>, Entry>) -> Hash {
    shape
        .build(s, &m.values().cloned().collect::<Vec<_>>())
        .unwrap()
}

/// Stores a well-formed tree of `entries` cut at every place the shape
/// rules require and, at random, at others (and sometimes with lone nodes
/// wrapped on top): every node decodes, but the tree is not canonical.
fn forge(shape: Shape, s: &mut impl NodeStore, entries: &[Entry], seed: u64) -> Hash {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut put = |bytes: Vec<u8>| {
        let h = Hash::of_domain(NODE_DOMAIN, &bytes);
        s.put_node(h, bytes).unwrap();
        h
    };
    // Cuts a run of items at height `height` into nodes.
    let mut cut = |keys: &[&[u8]], height: u8| -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, key) in keys.iter().enumerate() {
            let must = i + 1 == keys.len()
                || i + 1 - start == shape.max_items
                || shape.level(key) > u32::from(height);
            if must || rng.gen_bool(0.3) {
                out.push(start..i + 1);
                start = i + 1;
            }
        }
        out
    };
    let keys: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
    let mut level: Vec<(Vec<u8>, Hash)> = cut(&keys, 0)
        .into_iter()
        .map(|r| {
            let leaf = &entries[r];
            (leaf[leaf.len() - 1].name.clone(), put(encode_leaf(leaf)))
        })
        .collect();
    let Some(first) = level.first() else {
        return put(encode_leaf(&[]));
    };
    let mut root = first.1;
    let mut height = 0u8;
    while level.len() > 1 {
        height += 1;
        let keys: Vec<&[u8]> = level.iter().map(|(k, _)| k.as_slice()).collect();
        let ranges = cut(&keys, height);
        level = ranges
            .into_iter()
            .map(|r| {
                let items = &level[r];
                (
                    items[items.len() - 1].0.clone(),
                    put(encode_internal(height, items)),
                )
            })
            .collect();
        root = level[0].1;
    }
    // A lone root may be wrapped once more (still well-formed).
    if seed % 3 == 0 {
        let (key, _) = level.pop().unwrap();
        root = put(encode_internal(height + 1, &[(key, root)]));
    }
    root
}

fn check(shape: Shape, a: &BTreeMap<Vec<u8>, Entry>, b: &BTreeMap<Vec<u8>, Entry>, seed: u64) {
    let want = naive(a, b);
    let mut s = MemNodes::new();
    let (ca, cb) = (build_model(shape, &mut s, a), build_model(shape, &mut s, b));
    assert_eq!(shape.diff(&s, ca, cb).unwrap(), want, "canonical");
    let flip: Vec<Change> = want.iter().map(|(x, y)| (y.clone(), x.clone())).collect();
    assert_eq!(shape.diff(&s, cb, ca).unwrap(), flip, "canonical, flipped");
    let list = |m: &BTreeMap<Vec<u8>, Entry>| m.values().cloned().collect::<Vec<_>>();
    let fa = forge(shape, &mut s, &list(a), seed);
    let fb = forge(shape, &mut s, &list(b), seed.wrapping_add(1));
    assert_eq!(shape.diff(&s, fa, cb).unwrap(), want, "forged a");
    assert_eq!(shape.diff(&s, ca, fb).unwrap(), want, "forged b");
    assert_eq!(shape.diff(&s, fa, fb).unwrap(), want, "both forged");
    // The same entries cut differently: no difference, whatever the roots.
    assert!(shape.diff(&s, fa, ca).unwrap().is_empty());
    assert!(shape.diff(&s, cb, fb).unwrap().is_empty());
}

type Items = Vec<(u32, u8, u16)>;

fn sets(max: u32, len: usize) -> impl Strategy<Value = (Items, Items, Items, u64)> {
    let item = move || (0..max, 0u8..4, 0u16..4);
    (
        proptest::collection::vec(item(), 0..len),
        proptest::collection::vec(item(), 0..len / 8 + 2),
        proptest::collection::vec(0..max, 0..len / 8 + 2).prop_map(|v| {
            v.into_iter()
                .map(|i| (i, u8::MAX, 0))
                .collect::<Vec<(u32, u8, u16)>>()
        }),
        any::<u64>(),
    )
}

/// `base` with `edits` applied (op `u8::MAX` removes the name).
fn edited(base: &BTreeMap<Vec<u8>, Entry>, edits: &[(u32, u8, u16)]) -> BTreeMap<Vec<u8>, Entry> {
    let mut m = base.clone();
    for &(i, op, seed) in edits {
        if op == u8::MAX {
            m.remove(&name(i));
        } else {
            m.insert(name(i), entry_of(i, op, seed));
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tiny_diff_equals_naive((base, changes, removals, seed) in sets(400, 300)) {
        let a = model(&base);
        let b = edited(&edited(&a, &changes), &removals);
        check(TINY, &a, &b, seed);
        // Unrelated sets too.
        check(TINY, &a, &model(&changes), seed);
    }

    #[test]
    fn real_diff_equals_naive((base, changes, removals, seed) in sets(6000, 3000)) {
        let a = model(&base);
        let b = edited(&edited(&a, &changes), &removals);
        check(SHAPE, &a, &b, seed);
        check(SHAPE, &model(&changes), &a, seed);
    }
}

#[test]
fn empty_and_identical_trees() {
    let mut s = Counting::default();
    let e = SHAPE.build(&mut s, &[]).unwrap();
    let one = SHAPE.build(&mut s, &[file(b"x", 1)]).unwrap();
    assert_eq!(diff(&s, e, one).unwrap(), vec![(None, Some(file(b"x", 1)))]);
    assert_eq!(diff(&s, one, e).unwrap(), vec![(Some(file(b"x", 1)), None)]);
    let before = s.reads.get();
    // Equal roots read nothing, even roots that are not stored.
    assert!(diff(&s, one, one).unwrap().is_empty());
    assert!(diff(&s, Hash::ZERO, Hash::ZERO).unwrap().is_empty());
    assert_eq!(s.reads.get(), before);
}

#[test]
fn damaged_trees_are_errors() {
    let mut s = MemNodes::new();
    let all: Vec<Entry> = (0..300).map(|i| file(&name(i), u64::from(i))).collect();
    let root = TINY.build(&mut s, &all).unwrap();
    let other = TINY.build(&mut s, &all[1..]).unwrap();
    assert!(matches!(
        TINY.diff(&s, root, Hash::ZERO),
        Err(Error::Corrupt(_))
    ));
    // A parent naming a child by the wrong last name.
    let DirNode::Internal {
        height,
        mut children,
    } = TINY.read(&s, root).unwrap()
    else {
        panic!("fixture: a leaf root");
    };
    children[0].0 = b"m".to_vec();
    let bytes = encode_internal(height, &children);
    let forged = Hash::of_domain(NODE_DOMAIN, &bytes);
    s.put_node(forged, bytes).unwrap();
    assert!(matches!(
        TINY.diff(&s, forged, other),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn one_change_in_a_hundred_thousand_reads_a_path() {
    let mut s = Counting::default();
    let base: BTreeMap<Vec<u8>, Entry> = (0..100_000u64)
        .map(|i| {
            let n = format!("file-{i:06}").into_bytes();
            (n.clone(), file(&n, i))
        })
        .collect();
    let root = build_model(SHAPE, &mut s, &base);
    let height = read_node(&s, root).unwrap().height();
    assert!(height >= 2);
    let boundary = base.keys().find(|n| level(n) >= 2).unwrap().clone();
    let mut replaced = file(b"file-012345", 99);
    replaced.vv.bump(NodeId([2; 32]));
    let cases: Vec<(&str, Vec<u8>, Option<Entry>)> = vec![
        ("replace", b"file-012345".to_vec(), Some(replaced)),
        (
            "insert",
            b"file-050000a".to_vec(),
            Some(file(b"file-050000a", 1)),
        ),
        ("remove", b"file-077777".to_vec(), None),
        ("remove a level-2 boundary", boundary, None),
        ("insert first", b"a".to_vec(), Some(file(b"a", 1))),
        ("insert last", b"zzz".to_vec(), Some(file(b"zzz", 2))),
        ("remove last", b"file-099999".to_vec(), None),
    ];
    for (what, key, change) in cases {
        let mut m = base.clone();
        let old = m.get(&key).cloned();
        match &change {
            Some(e) => m.insert(key.clone(), e.clone()),
            None => m.remove(&key),
        };
        let new = build_model(SHAPE, &mut s, &m);
        let before = s.reads.get();
        let got = diff(&s, root, new).unwrap();
        let reads = s.reads.get() - before;
        println!("dir diff: {what}: height {height}, {reads} nodes read");
        assert_eq!(got, vec![(old.clone(), change.clone())], "{what}");
        assert!(reads < 20, "{what}: {reads} nodes read");
        let before = s.reads.get();
        assert_eq!(diff(&s, new, root).unwrap(), vec![(change, old)]);
        assert!(s.reads.get() - before < 20, "{what}, flipped");
    }
    // A level-2 boundary added: the new tree's nodes are cut there too.
    let fresh = (0..)
        .map(|i| format!("file-0{i:05}x").into_bytes())
        .find(|n| level(n) >= 2)
        .unwrap();
    let mut m = base.clone();
    m.insert(fresh.clone(), file(&fresh, 5));
    let new = build_model(SHAPE, &mut s, &m);
    let before = s.reads.get();
    assert_eq!(
        diff(&s, root, new).unwrap(),
        vec![(None, Some(file(&fresh, 5)))]
    );
    let reads = s.reads.get() - before;
    println!("dir diff: insert a level-2 boundary: {reads} nodes read");
    assert!(reads < 24, "boundary insert: {reads} nodes read");
}

#[test]
fn forged_trees_are_well_formed_but_not_canonical() {
    // The fixture the property tests rely on: forge() cuts elsewhere.
    let all: Vec<Entry> = (0..300).map(|i| file(&name(i), u64::from(i))).collect();
    for (shape, seed) in [(TINY, 1), (TINY, 3), (SHAPE, 3)] {
        let mut s = MemNodes::new();
        let forged = forge(shape, &mut s, &all, seed);
        assert!(!shape.is_canonical(&s, forged).unwrap(), "seed {seed}");
        assert_eq!(shape.entries(&s, forged).unwrap(), all);
        let canonical = shape.build(&mut s, &all).unwrap();
        assert!(shape.diff(&s, forged, canonical).unwrap().is_empty());
    }
}
