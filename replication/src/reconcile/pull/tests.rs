//! The pull fetches everything the merge then uses: for random pairs of
//! trees, after a pull the merged tree is whole on the puller, and every
//! chunk it references was held before or asked for.

use super::*;
use crate::local::MemLocal;
use crate::merge::tests::{arb_ops, fill_chunks, history, node};
use backer_fs::gc::{check_whole, Marks};
use backer_fs::tree::{dir, MemNodes};
use proptest::prelude::*;

/// A node holding the tree `root` of `nodes`, with the chunks it reaches.
fn holding(nodes: MemNodes, root: Hash) -> MemLocal {
    let mut l = MemLocal {
        nodes,
        chunks: HashMap::new(),
        root,
    };
    fill_chunks(&mut l);
    l
}

/// Pulls `from`'s root into `to`, answering every request at once from
/// `from`; returns what was asked for.
fn pull(to: &mut MemLocal, from: &MemLocal, window: Window) -> HashSet<Hash> {
    let mut p = Pull::new(from.root, to.root);
    let mut asked = HashSet::new();
    loop {
        p.run(to).unwrap();
        if p.is_complete() {
            break;
        }
        let mut sent = false;
        while let Some(req) = p.next_request(window) {
            sent = true;
            let (item, hashes) = match req {
                Message::GetDirNodes(h) => (Item::Dir, h),
                Message::GetContentNodes(h) => (Item::Content, h),
                Message::GetChunks(h) => (Item::Chunk, h),
                other => panic!("a pull sent {other:?}"),
            };
            for h in hashes {
                asked.insert(h);
                let bytes = match item {
                    Item::Chunk => from.chunk(&h),
                    Item::Dir | Item::Content => from.node(&h),
                };
                p.receive(to, item, bytes.unwrap()).unwrap();
            }
        }
        assert!(sent, "a pull that is not complete asks for nothing");
    }
    assert_eq!(p.failed, None);
    asked
}

/// Pulls and merges `from` into `to`; asserts the merged tree is whole
/// and its chunks were held before or asked for.
fn pull_and_merge(to: &mut MemLocal, from: &MemLocal, window: Window) {
    let before: HashSet<Hash> = to.chunks.keys().copied().collect();
    let asked = pull(to, from, window);
    let merged = to.merge(from.root).unwrap();
    let chunks = &to.chunks;
    check_whole(&to.nodes, merged.root, |h| Ok(chunks.contains_key(h))).unwrap();
    let mut m = Marks::default();
    m.dir_tree(&to.nodes, merged.root).unwrap();
    for c in &m.chunks {
        assert!(
            before.contains(c) || asked.contains(c),
            "chunk {c} neither held nor asked for"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_pull_fetches_everything_the_merge_references(
        base_ops in arb_ops(8),
        a_ops in arb_ops(8),
        b_ops in arb_ops(8),
        items in 1usize..20,
    ) {
        let mut nodes = MemNodes::new();
        let empty = dir::empty(&mut nodes).unwrap();
        let base = history(&mut nodes, empty, &base_ops, node(9), 1_000);
        let (mut na, mut nb) = (nodes.clone(), nodes);
        let a = history(&mut na, base, &a_ops, node(1), 2_000);
        let b = history(&mut nb, base, &b_ops, node(2), 2_000);
        let (a, b) = (holding(na, a), holding(nb, b));
        let window = Window { items, bytes: 1 << 20 };
        pull_and_merge(&mut a.clone(), &b, window);
        pull_and_merge(&mut b.clone(), &a, window);
    }
}
