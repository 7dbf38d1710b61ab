//! A file's content: its ordered list of chunks and holes, as a small tree.
//!
//! A 256 MiB file has thousands of chunks; sending or rewriting that whole
//! list for a 1 MiB change would cost more than the change. So the list is
//! cut into content-defined nodes, like directories ([`crate::tree::dir`]):
//!
//! - **Canonical list**: holes of length 0 are dropped and adjacent holes
//!   merged before building, so a content has one list. Data extents have a
//!   length of at least 1.
//! - **Level** of an extent: for data, the number of leading zero bits of
//!   `Hash::of_domain("backer-content-level", chunk hash).prefix_u64()`
//!   divided by [`FANOUT_BITS`] (6), so nodes average 64 items; a hole's
//!   level is 0 (holes never end a node, so hole-only regions never split
//!   differently).
//! - A leaf holds extents and ends after one whose level is at least 1; an
//!   internal node at height `h` holds (child hash, child byte length), one
//!   per child of height `h - 1`, and ends after a child whose last extent's
//!   level exceeds `h`. Any node also ends at [`MAX_ITEMS`] items, and at the
//!   end of the list. Heights are stacked until one holds a single node, the
//!   root; the empty file is an empty leaf.
//! - A node's hash is `Hash::of_domain("backer-content-node", bytes)` over
//!   the encoding in [`crate::tree::encode`]; the content hash is the root's.
//!
//! Boundaries depend only on the chunks around them, so a change to a few
//! chunks changes the leaves that hold them and the path to the root; every
//! other node keeps its hash and is not stored again.

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::tree::encode::{Reader, Writer};
use crate::tree::{level_of, load, HashOnly, NodeStore};

/// Fanout: an extent's level counts runs of this many leading zero bits, so
/// nodes average 2^6 = 64 items.
pub const FANOUT_BITS: u32 = 6;

/// The most items one node holds: a node also ends when it reaches this.
pub const MAX_ITEMS: usize = 1024;

const NODE_DOMAIN: &str = "backer-content-node";
const LEVEL_DOMAIN: &str = "backer-content-level";

/// One run of a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// A stored chunk: its blake3 hash and length (at least 1).
    Data {
        /// The chunk's id ([`Hash::of`] its bytes).
        hash: Hash,
        /// The chunk's length in bytes.
        len: u32,
    },
    /// A hole: reads as zeros and stores nothing.
    Hole {
        /// The hole's length in bytes.
        len: u64,
    },
}

impl Extent {
    /// The length in bytes.
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Data { len, .. } => u64::from(len),
            Extent::Hole { len } => len,
        }
    }

    /// True for a zero-length extent (never part of a built content).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The level that decides node boundaries (see the module documentation).
    fn level(&self) -> u32 {
        match self {
            Extent::Data { hash, .. } => {
                level_of(&Hash::of_domain(LEVEL_DOMAIN, hash.as_bytes()), FANOUT_BITS)
            }
            Extent::Hole { .. } => 0,
        }
    }
}

/// One decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentNode {
    /// Height 0: extents in file order.
    Leaf(Vec<Extent>),
    /// Height >= 1: children of height `height - 1`, in file order.
    Internal {
        /// This node's height (its children's plus one).
        height: u8,
        /// (child node hash, bytes of content under the child).
        children: Vec<(Hash, u64)>,
    },
}

impl ContentNode {
    /// The node's height: 0 for a leaf.
    pub fn height(&self) -> u8 {
        match self {
            ContentNode::Leaf(_) => 0,
            ContentNode::Internal { height, .. } => *height,
        }
    }

    /// Bytes of content under this node (an error if it overflows `u64`,
    /// which only a forged node can).
    pub fn byte_len(&self) -> Result<u64> {
        let overflow = || Error::corrupt("content length overflows u64");
        match self {
            ContentNode::Leaf(ext) => ext
                .iter()
                .try_fold(0u64, |t, e| t.checked_add(e.len()).ok_or_else(overflow)),
            ContentNode::Internal { children, .. } => children
                .iter()
                .try_fold(0u64, |t, c| t.checked_add(c.1).ok_or_else(overflow)),
        }
    }
}

/// Builds the content tree of a file from its extents (in file order) and
/// returns (content hash, total length).
///
/// Holes are merged first (zero-length ones dropped). Errors:
/// [`Error::InvalidArgument`] for a zero-length data extent,
/// [`Error::FileTooLarge`] if the total overflows `u64`.
pub fn build(store: &mut impl NodeStore, extents: &[Extent]) -> Result<(Hash, u64)> {
    let list = canonical(extents)?;
    let total = list
        .iter()
        .try_fold(0u64, |t, e| t.checked_add(e.len()))
        .ok_or(Error::FileTooLarge)?;
    // Height 0: cut the extents into leaves.
    let mut level: Vec<(Hash, u64, u32)> = Vec::new();
    for run in cut(&list, |e| e.level(), 0) {
        let bytes = encode_leaf(run);
        let len = run.iter().map(Extent::len).sum();
        let last = run.last().map_or(0, Extent::level);
        level.push(store_node(store, bytes, len, last)?);
    }
    // Stack heights until one node is left: the root.
    let mut height: u8 = 0;
    loop {
        match level.as_slice() {
            [(root, ..)] => return Ok((*root, total)),
            // No leaf at all: the empty file is one empty leaf.
            [] => return Ok((store_node(store, encode_leaf(&[]), 0, 0)?.0, 0)),
            _ => {}
        }
        height = height
            .checked_add(1)
            .ok_or(Error::InvalidArgument("content tree too high"))?;
        let mut next = Vec::new();
        for run in cut(&level, |c| c.2, height) {
            let children: Vec<(Hash, u64)> = run.iter().map(|&(h, l, _)| (h, l)).collect();
            let len = children.iter().map(|c| c.1).sum();
            let last = run.last().map_or(0, |c| c.2);
            let bytes = encode_internal(height, &children);
            next.push(store_node(store, bytes, len, last)?);
        }
        level = next;
    }
}

/// All extents of the content `root`, in order (flattened).
pub fn extents(store: &impl NodeStore, root: Hash) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut walker = Walker {
        store,
        from: 0,
        to: u64::MAX,
        prev_hole: false,
    };
    walker.walk(root, &mut |_, e| out.push(e))?;
    Ok(out)
}

/// The extents of `root` that overlap the byte range `start..end`, each with
/// the file offset where it starts. Reads only the nodes on the way to them,
/// so reading a few bytes of a large file reads O(log n) nodes.
pub fn extents_in(
    store: &impl NodeStore,
    root: Hash,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, Extent)>> {
    let mut out = Vec::new();
    if start < end {
        let mut walker = Walker {
            store,
            from: start,
            to: end,
            prev_hole: false,
        };
        walker.walk(root, &mut |at, e| out.push((at, e)))?;
    }
    Ok(out)
}

/// Whether the content `root` has exactly the shape [`build`] gives its
/// extents (a peer could send well-formed nodes cut in other places). Reads
/// the whole tree, writes nothing.
pub fn is_canonical(store: &impl NodeStore, root: Hash) -> Result<bool> {
    let list = extents(store, root)?;
    Ok(build(&mut HashOnly, &list)?.0 == root)
}

/// Reads and decodes the node `hash`, checking it against its hash.
pub fn read_node(store: &impl NodeStore, hash: Hash) -> Result<ContentNode> {
    decode_node(&load(store, &hash, NODE_DOMAIN)?)
}

/// Whether `bytes` are the node named `hash`: they hash to it and decode.
pub fn verify_node(hash: &Hash, bytes: &[u8]) -> bool {
    Hash::of_domain(NODE_DOMAIN, bytes) == *hash && decode_node(bytes).is_ok()
}

/// Decodes one node, rejecting every non-canonical form one node can show:
/// zero lengths, two holes in a row, a data extent before the last whose
/// level should have ended the leaf, more than [`MAX_ITEMS`] items, an empty
/// internal node, a total over `u64`, unknown tags, trailing bytes.
pub fn decode_node(bytes: &[u8]) -> Result<ContentNode> {
    let mut r = Reader::new(bytes);
    let height = r.read_header()?;
    let node = if height == 0 {
        let n = r.read_count(MAX_ITEMS, 2)?;
        let mut ext = Vec::with_capacity(n);
        for _ in 0..n {
            let e = match r.read_u8()? {
                0 => Extent::Data {
                    hash: r.read_hash()?,
                    len: r.read_varint_u32()?,
                },
                1 => Extent::Hole {
                    len: r.read_varint()?,
                },
                t => return Err(Error::corrupt(format!("unknown extent tag {t}"))),
            };
            if e.is_empty() {
                return Err(Error::corrupt("zero-length extent"));
            }
            match ext.last() {
                Some(Extent::Hole { .. }) if matches!(e, Extent::Hole { .. }) => {
                    return Err(Error::corrupt("two holes in a row"));
                }
                Some(prev) if prev.level() > 0 => {
                    return Err(Error::corrupt("content leaf continues past a boundary"));
                }
                _ => {}
            }
            ext.push(e);
        }
        ContentNode::Leaf(ext)
    } else {
        let n = r.read_count(MAX_ITEMS, 33)?;
        if n == 0 {
            return Err(Error::corrupt("empty internal content node"));
        }
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let hash = r.read_hash()?;
            let len = r.read_varint()?;
            if len == 0 {
                return Err(Error::corrupt("zero-length content child"));
            }
            children.push((hash, len));
        }
        ContentNode::Internal { height, children }
    };
    r.finish()?;
    node.byte_len()?;
    Ok(node)
}

/// Drops empty holes and merges adjacent ones; refuses empty data extents.
fn canonical(extents: &[Extent]) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for &e in extents {
        match e {
            Extent::Data { len: 0, .. } => {
                return Err(Error::InvalidArgument("zero-length data extent"))
            }
            Extent::Hole { len: 0 } => {}
            Extent::Hole { len } => match out.last_mut() {
                Some(Extent::Hole { len: prev }) => {
                    *prev = prev.checked_add(len).ok_or(Error::FileTooLarge)?;
                }
                _ => out.push(e),
            },
            Extent::Data { .. } => out.push(e),
        }
    }
    Ok(out)
}

/// Cuts `items` into nodes of height `height`: a node ends after an item
/// whose level exceeds `height`, at [`MAX_ITEMS`] items, or at the end.
fn cut<T>(items: &[T], level: impl Fn(&T) -> u32, height: u8) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .take(MAX_ITEMS)
            .position(|x| level(x) > u32::from(height))
            .map_or(rest.len().min(MAX_ITEMS), |i| i + 1);
        let (node, tail) = rest.split_at(end);
        rest = tail;
        Some(node)
    })
}

/// Hashes and stores one node; returns the item its parent holds for it.
fn store_node(
    store: &mut impl NodeStore,
    bytes: Vec<u8>,
    len: u64,
    last_level: u32,
) -> Result<(Hash, u64, u32)> {
    let hash = Hash::of_domain(NODE_DOMAIN, &bytes);
    store.put_node(hash, bytes)?;
    Ok((hash, len, last_level))
}

fn encode_leaf(extents: &[Extent]) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_header(0, extents.len());
    for e in extents {
        match *e {
            Extent::Data { hash, len } => {
                w.put_u8(0);
                w.put_hash(&hash);
                w.put_varint(u64::from(len));
            }
            Extent::Hole { len } => {
                w.put_u8(1);
                w.put_varint(len);
            }
        }
    }
    w.into_bytes()
}

fn encode_internal(height: u8, children: &[(Hash, u64)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_header(height, children.len());
    for (hash, len) in children {
        w.put_hash(hash);
        w.put_varint(*len);
    }
    w.into_bytes()
}

/// Visits, in file order, the extents that overlap `from..to`, reading only
/// the nodes that hold them, and checks what it reads: each child's height
/// and length against its parent, and no two holes in a row across leaves.
struct Walker<'s, S> {
    store: &'s S,
    from: u64,
    to: u64,
    /// The last extent visited was a hole (reset when a child is skipped).
    prev_hole: bool,
}

impl<S: NodeStore> Walker<'_, S> {
    fn walk(&mut self, root: Hash, visit: &mut impl FnMut(u64, Extent)) -> Result<()> {
        let node = read_node(self.store, root)?;
        self.node(node, 0, visit)
    }

    /// Walks `node`, whose content starts at file offset `at`.
    fn node(
        &mut self,
        node: ContentNode,
        mut at: u64,
        visit: &mut impl FnMut(u64, Extent),
    ) -> Result<()> {
        let overflow = || Error::corrupt("content length overflows u64");
        match node {
            ContentNode::Leaf(ext) => {
                for e in ext {
                    let hole = matches!(e, Extent::Hole { .. });
                    if hole && self.prev_hole {
                        return Err(Error::corrupt("two holes in a row across content leaves"));
                    }
                    self.prev_hole = hole;
                    let end = at.checked_add(e.len()).ok_or_else(overflow)?;
                    if end > self.from && at < self.to {
                        visit(at, e);
                    }
                    at = end;
                }
            }
            ContentNode::Internal { height, children } => {
                for (hash, len) in children {
                    let end = at.checked_add(len).ok_or_else(overflow)?;
                    if end <= self.from || at >= self.to {
                        self.prev_hole = false;
                    } else {
                        let child = read_node(self.store, hash)?;
                        if child.height().checked_add(1) != Some(height) || child.byte_len()? != len
                        {
                            return Err(Error::corrupt(format!(
                                "content node {hash} does not fit its parent (height or length)"
                            )));
                        }
                        self.node(child, at, visit)?;
                    }
                    at = end;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemNodes;
    use proptest::prelude::*;
    use std::cell::Cell;

    fn data(i: u64) -> Extent {
        Extent::Data {
            hash: Hash::of(&i.to_le_bytes()),
            len: 1000 + (i % 7) as u32,
        }
    }

    fn encode(node: &ContentNode) -> Vec<u8> {
        match node {
            ContentNode::Leaf(ext) => encode_leaf(ext),
            ContentNode::Internal { height, children } => encode_internal(*height, children),
        }
    }

    /// Counts node reads, to show that range reads touch few nodes.
    struct CountReads<'a>(&'a MemNodes, Cell<u64>);

    impl NodeStore for CountReads<'_> {
        fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
            self.1.set(self.1.get() + 1);
            self.0.get_node(hash)
        }
        fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
            unreachable!("reads only")
        }
    }

    #[test]
    fn empty_file_is_an_empty_leaf() {
        let mut s = MemNodes::new();
        let (h, len) = build(&mut s, &[]).unwrap();
        assert_eq!(len, 0);
        assert_eq!(read_node(&s, h).unwrap(), ContentNode::Leaf(vec![]));
        assert!(extents(&s, h).unwrap().is_empty());
        assert_eq!(build(&mut s, &[Extent::Hole { len: 0 }]).unwrap(), (h, 0));
        assert!(extents_in(&s, h, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn holes_merge_and_empty_data_is_refused() {
        let mut s = MemNodes::new();
        let d = data(1);
        let messy = [
            Extent::Hole { len: 5 },
            Extent::Hole { len: 0 },
            Extent::Hole { len: 7 },
            d,
            Extent::Hole { len: 1 },
            Extent::Hole { len: 1 },
        ];
        let clean = [Extent::Hole { len: 12 }, d, Extent::Hole { len: 2 }];
        let (h, len) = build(&mut s, &messy).unwrap();
        assert_eq!((h, len), build(&mut s, &clean).unwrap());
        assert_eq!(len, 14 + d.len());
        assert_eq!(extents(&s, h).unwrap(), clean);
        let zero = Extent::Data {
            hash: Hash::of(b""),
            len: 0,
        };
        assert!(matches!(
            build(&mut s, &[zero]),
            Err(Error::InvalidArgument(_))
        ));
        let huge = [Extent::Hole { len: u64::MAX }, d];
        assert!(matches!(build(&mut s, &huge), Err(Error::FileTooLarge)));
    }

    #[test]
    fn a_changed_extent_rewrites_few_nodes() {
        let mut s = MemNodes::new();
        let mut list: Vec<Extent> = (0..4096).map(data).collect();
        let (root, _) = build(&mut s, &list).unwrap();
        let height = read_node(&s, root).unwrap().height();
        assert!(height >= 1, "4096 extents must be a tree");
        let leaves = |s: &MemNodes, root| {
            let mut level = vec![root];
            for _ in 0..height {
                level = level
                    .iter()
                    .flat_map(|&h| match read_node(s, h).unwrap() {
                        ContentNode::Internal { children, .. } => {
                            children.into_iter().map(|c| c.0).collect()
                        }
                        ContentNode::Leaf(_) => vec![],
                    })
                    .collect();
            }
            level
        };
        let old_leaves = leaves(&s, root);

        // Replace one chunk, then punch a hole, then insert a chunk.
        type Edit = Box<dyn Fn(&mut Vec<Extent>)>;
        let edits: [(&str, Edit); 3] = [
            (
                "replace",
                Box::new(|l: &mut Vec<Extent>| l[2000] = data(1_000_000)),
            ),
            (
                "hole",
                Box::new(|l: &mut Vec<Extent>| l[3000] = Extent::Hole { len: 4096 }),
            ),
            (
                "insert",
                Box::new(|l: &mut Vec<Extent>| l.insert(100, data(2_000_000))),
            ),
        ];
        for (what, edit) in edits {
            edit(&mut list);
            let before = s.writes();
            let (new_root, len) = build(&mut s, &list).unwrap();
            let written = s.writes() - before;
            println!(
                "content: {what}: height {height}, {written} new nodes of {}",
                old_leaves.len() + 1
            );
            assert!(written <= 4, "{what}: {written} new nodes");
            assert_eq!(len, list.iter().map(Extent::len).sum::<u64>());
            assert_eq!(extents(&s, new_root).unwrap(), list);
            let new_leaves = leaves(&s, new_root);
            let kept = new_leaves.iter().filter(|c| old_leaves.contains(c)).count();
            assert!(
                kept + 3 >= old_leaves.len(),
                "{what}: only {kept} leaves kept"
            );
        }
    }

    #[test]
    fn large_files_are_trees_and_ranges_read_few_nodes() {
        let mut s = MemNodes::new();
        let list: Vec<Extent> = (0..100_000)
            .map(|i| {
                if i % 10 == 9 {
                    Extent::Hole { len: 4096 + i }
                } else {
                    data(i)
                }
            })
            .collect();
        let (root, total) = build(&mut s, &list).unwrap();
        let height = read_node(&s, root).unwrap().height();
        assert!(height >= 2, "height {height}");
        assert_eq!(extents(&s, root).unwrap(), list);
        let mut starts = Vec::with_capacity(list.len());
        let mut at = 0;
        for e in &list {
            starts.push(at);
            at += e.len();
        }
        assert_eq!(at, total);
        for (from, to) in [
            (0, 1),
            (total / 3, total / 3 + 200_000),
            (total - 1, total),
            (total, total + 9),
        ] {
            let counting = CountReads(&s, Cell::new(0));
            let got = extents_in(&counting, root, from, to).unwrap();
            let want: Vec<(u64, Extent)> = starts
                .iter()
                .zip(&list)
                .filter(|&(&a, e)| a < to && a + e.len() > from)
                .map(|(&a, &e)| (a, e))
                .collect();
            assert_eq!(got, want, "{from}..{to}");
            let reads = counting.1.get();
            assert!(
                reads <= 2 * (u64::from(height) + 1),
                "{reads} reads for {from}..{to}"
            );
        }
    }

    #[test]
    fn tampered_trees_are_refused() {
        let mut s = MemNodes::new();
        let list: Vec<Extent> = (0..2000).map(data).collect();
        let (root, _) = build(&mut s, &list).unwrap();
        let ContentNode::Internal {
            height,
            mut children,
        } = read_node(&s, root).unwrap()
        else {
            panic!("2000 extents must be a tree");
        };
        children[0].1 += 1;
        let bytes = encode_internal(height, &children);
        let forged = Hash::of_domain(NODE_DOMAIN, &bytes);
        assert!(verify_node(&forged, &bytes));
        assert!(!verify_node(&root, &bytes));
        s.put_node(forged, bytes).unwrap();
        assert!(matches!(extents(&s, forged), Err(Error::Corrupt(_))));
        assert!(is_canonical(&s, root).unwrap());
        // Well-formed but cut elsewhere: two leaves where build makes one.
        let plain: Vec<Extent> = (0..).map(data).filter(|e| e.level() == 0).take(2).collect();
        let (a, la) = build(&mut s, &plain[..1]).unwrap();
        let (b, lb) = build(&mut s, &plain[1..]).unwrap();
        let bytes = encode_internal(1, &[(a, la), (b, lb)]);
        let split = Hash::of_domain(NODE_DOMAIN, &bytes);
        s.put_node(split, bytes).unwrap();
        assert_eq!(extents(&s, split).unwrap(), plain);
        assert!(!is_canonical(&s, split).unwrap());
        // Two holes that meet across a leaf boundary.
        let (a, _) = build(&mut s, &[data(1), Extent::Hole { len: 3 }]).unwrap();
        let (b, _) = build(&mut s, &[Extent::Hole { len: 3 }]).unwrap();
        let bytes = encode_internal(1, &[(a, 1001 + 3), (b, 3)]);
        let forged = Hash::of_domain(NODE_DOMAIN, &bytes);
        s.put_node(forged, bytes).unwrap();
        assert!(matches!(extents(&s, forged), Err(Error::Corrupt(_))));
        assert!(matches!(extents(&s, Hash::ZERO), Err(Error::Corrupt(_))));
    }

    #[test]
    fn decoding_rejects_non_canonical_nodes() {
        let d = data(3);
        let good = encode_leaf(&[d, Extent::Hole { len: 9 }]);
        assert!(decode_node(&good).is_ok());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_node(&trailing).is_err());
        for n in 0..good.len() {
            assert!(decode_node(&good[..n]).is_err(), "truncated at {n}");
        }
        let bad = [
            encode_leaf(&[Extent::Hole { len: 1 }, Extent::Hole { len: 1 }]),
            encode_leaf(&[Extent::Hole { len: 0 }]),
            encode_internal(1, &[]),
            encode_internal(1, &[(Hash::ZERO, 0)]),
            encode_internal(1, &[(Hash::ZERO, u64::MAX), (Hash::ZERO, 1)]),
        ];
        for b in bad {
            assert!(decode_node(&b).is_err(), "{b:?}");
        }
        // A boundary extent must end its leaf.
        let boundary = (0..).map(data).find(|e| e.level() > 0).unwrap();
        assert!(decode_node(&encode_leaf(&[d, boundary])).is_ok());
        assert!(decode_node(&encode_leaf(&[boundary, d])).is_err());
    }

    fn arb_extent() -> impl Strategy<Value = Extent> {
        prop_oneof![
            (any::<[u8; 32]>(), 1u32..).prop_map(|(h, len)| Extent::Data { hash: Hash(h), len }),
            (0u64..1 << 40).prop_map(|len| Extent::Hole { len }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(list in proptest::collection::vec(arb_extent(), 0..3000)) {
            let mut s = MemNodes::new();
            let (root, len) = build(&mut s, &list)?;
            let clean = canonical(&list)?;
            prop_assert_eq!(len, clean.iter().map(Extent::len).sum::<u64>());
            prop_assert_eq!(extents(&s, root)?, clean.clone());
            // Building the canonical list gives the same hash, and nothing new.
            let before = s.writes();
            prop_assert_eq!(build(&mut s, &clean)?, (root, len));
            prop_assert_eq!(s.writes(), before);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(node) = decode_node(&bytes) {
                prop_assert_eq!(encode(&node), bytes);
            }
        }

        #[test]
        fn mutated_nodes_decode_canonically_or_fail(
            list in proptest::collection::vec(arb_extent(), 1..40),
            internal in any::<bool>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), truncate in any::<bool>(),
        ) {
            let mut bytes = if internal {
                let children: Vec<(Hash, u64)> = list.iter().map(|e| (Hash::of(&e.len().to_le_bytes()), e.len() + 1)).collect();
                encode_internal(1, &children)
            } else {
                let clean = canonical(&list)?;
                let leaf = cut(&clean, Extent::level, 0).next().unwrap_or_default();
                encode_leaf(leaf)
            };
            prop_assert!(decode_node(&bytes).is_ok());
            let i = at.index(bytes.len());
            if truncate { bytes.truncate(i) } else { bytes[i] = byte }
            match decode_node(&bytes) {
                Ok(node) => prop_assert_eq!(encode(&node), bytes),
                Err(e) => prop_assert!(matches!(e, Error::Corrupt(_))),
            }
        }
    }
}
