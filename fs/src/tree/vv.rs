//! Version vectors: which edits of which node a version has seen.
//!
//! A [`VersionVector`] maps node ids to counters. It is kept canonical: the
//! pairs are sorted by node id, each id appears once, and no counter is zero
//! (a missing id means zero). So two vectors with the same meaning are equal
//! as values and encode to the same bytes.
//!
//! The rules that use them live with the vfs and the replication engine
//! (DESIGN.md, "Traps we know of"): an edit bumps the editing node's counter;
//! a merge joins and never bumps; a rename-over gives the name the join of
//! its old vector (even a tombstone's) and the source's, plus a bump; a
//! directory tombstone carries the join of its subtree's vectors.

use std::cmp::Ordering;

use crate::identity::NodeId;

/// How two versions relate in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Causality {
    /// Both have seen exactly the same edits.
    Equal,
    /// The left side has seen everything the right side has, and more: it
    /// wins.
    Dominates,
    /// The right side has seen everything the left side has, and more.
    DominatedBy,
    /// Each side has seen an edit the other has not: a conflict.
    Concurrent,
}

impl Causality {
    /// The relation seen from the other side (`a.compare(b).reverse() ==
    /// b.compare(a)`).
    #[must_use]
    pub fn reverse(self) -> Causality {
        match self {
            Causality::Dominates => Causality::DominatedBy,
            Causality::DominatedBy => Causality::Dominates,
            other => other,
        }
    }
}

/// A version vector: for each node, how many of its edits this version
/// includes. Canonical (sorted by id, no zero counters), so `==` is equality
/// of meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(Vec<(NodeId, u64)>);

impl VersionVector {
    /// The empty vector: no edits seen.
    pub fn new() -> VersionVector {
        VersionVector(Vec::new())
    }

    /// Builds a vector from (node, counter) pairs in any order: a node named
    /// twice keeps its larger counter, and zero counters are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (NodeId, u64)>) -> VersionVector {
        let mut v: Vec<(NodeId, u64)> = pairs.into_iter().filter(|&(_, c)| c != 0).collect();
        // Sort by id, largest counter first, then keep the first of each id.
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.dedup_by_key(|p| p.0);
        VersionVector(v)
    }

    /// Builds a vector from pairs that are already canonical: strictly
    /// increasing ids and non-zero counters. `None` otherwise.
    pub(crate) fn from_canonical(pairs: Vec<(NodeId, u64)>) -> Option<VersionVector> {
        let sorted = pairs.windows(2).all(|w| w[0].0 < w[1].0);
        let nonzero = pairs.iter().all(|&(_, c)| c != 0);
        (sorted && nonzero).then_some(VersionVector(pairs))
    }

    /// The counter of `id` (zero when absent).
    pub fn get(&self, id: &NodeId) -> u64 {
        match self.0.binary_search_by(|(n, _)| n.cmp(id)) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Records one more edit by `id`. The counter saturates at `u64::MAX`
    /// (2^64 edits by one node do not happen; a peer could only claim them).
    pub fn bump(&mut self, id: NodeId) {
        match self.0.binary_search_by(|(n, _)| n.cmp(&id)) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(1),
            Err(i) => self.0.insert(i, (id, 1)),
        }
    }

    /// Records one more edit by `id` at `tick` of `id`'s own clock: the
    /// counter becomes `max(counter + 1, tick)`. A node ticks one clock for
    /// all its edits, so its counters grow across entries too: an edit made
    /// after a version was seen has a larger counter than any that version
    /// holds (which is what lets a directory tombstone tell the entries it
    /// saw from the ones made after).
    pub fn bump_to(&mut self, id: NodeId, tick: u64) {
        match self.0.binary_search_by(|(n, _)| n.cmp(&id)) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(1).max(tick),
            Err(i) => self.0.insert(i, (id, tick.max(1))),
        }
    }

    /// The least vector that dominates or equals both: the pointwise maximum.
    #[must_use]
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    out.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((a[i].0, a[i].1.max(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        VersionVector(out)
    }

    /// Joins `other` into `self` (see [`VersionVector::join`]).
    pub fn join_from(&mut self, other: &VersionVector) {
        if !other.0.is_empty() {
            *self = self.join(other);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let (a, b) = (&self.0, &other.0);
        // `greater`: self has an edit other lacks; `less`: the reverse.
        let (mut greater, mut less) = (false, false);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Greater => greater = true,
                        Ordering::Less => less = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        greater |= i < a.len();
        less |= j < b.len();
        match (greater, less) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The (node, counter) pairs, sorted by node id, counters non-zero.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().copied()
    }

    /// How many nodes have a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no edit has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    /// See [`VersionVector::from_pairs`].
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> VersionVector {
        VersionVector::from_pairs(iter)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors over a few node ids (so they overlap) with small counters.
    pub(crate) fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(0u8..6, 1u64..5, 0..5).prop_map(|m| {
            VersionVector::from_canonical(
                m.into_iter().map(|(k, c)| (NodeId([k; 32]), c)).collect(),
            )
            .expect("a BTreeMap is sorted")
        })
    }

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn basics() {
        let mut v = VersionVector::new();
        assert!(v.is_empty());
        assert_eq!(v.get(&id(1)), 0);
        v.bump(id(3));
        v.bump(id(1));
        v.bump(id(3));
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(id(1), 1), (id(3), 2)]);
        assert_eq!(v.get(&id(3)), 2);
        assert_eq!(v.len(), 2);

        let mut w = VersionVector::new();
        w.bump(id(2));
        assert_eq!(v.compare(&w), Causality::Concurrent);
        let j = v.join(&w);
        assert_eq!(
            j.iter().collect::<Vec<_>>(),
            vec![(id(1), 1), (id(2), 1), (id(3), 2)]
        );
        assert_eq!(j.compare(&v), Causality::Dominates);
        assert_eq!(v.compare(&j), Causality::DominatedBy);
        assert_eq!(
            VersionVector::new().compare(&VersionVector::new()),
            Causality::Equal
        );
        let mut k = v.clone();
        k.join_from(&w);
        assert_eq!(k, j);
    }

    #[test]
    fn from_canonical_rejects_bad_pairs() {
        assert!(VersionVector::from_canonical(vec![(id(2), 1), (id(1), 1)]).is_none());
        assert!(VersionVector::from_canonical(vec![(id(1), 1), (id(1), 2)]).is_none());
        assert!(VersionVector::from_canonical(vec![(id(1), 0)]).is_none());
        assert!(VersionVector::from_canonical(vec![(id(1), 1), (id(2), 7)]).is_some());
    }

    #[test]
    fn from_pairs_canonicalises() {
        let v =
            VersionVector::from_pairs([(id(3), 1), (id(1), 0), (id(2), 4), (id(3), 5), (id(3), 2)]);
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(id(2), 4), (id(3), 5)]);
        let w: VersionVector = v.iter().collect();
        assert_eq!(w, v);
    }

    proptest! {
        #[test]
        fn from_pairs_is_the_join_of_singletons(pairs in proptest::collection::vec((0u8..5, 0u64..4), 0..10)) {
            let v = VersionVector::from_pairs(pairs.iter().map(|&(n, c)| (id(n), c)));
            let mut j = VersionVector::new();
            for &(n, c) in &pairs {
                j.join_from(&VersionVector::from_pairs([(id(n), c)]));
            }
            prop_assert_eq!(&v, &j);
            prop_assert_eq!(VersionVector::from_canonical(v.iter().collect()), Some(v));
        }

        #[test]
        fn join_is_commutative(a in arb_vv(), b in arb_vv()) {
            prop_assert_eq!(a.join(&b), b.join(&a));
        }

        #[test]
        fn join_is_associative(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        }

        #[test]
        fn join_is_idempotent_and_an_upper_bound(a in arb_vv(), b in arb_vv()) {
            prop_assert_eq!(a.join(&a), a.clone());
            let j = a.join(&b);
            prop_assert!(matches!(j.compare(&a), Causality::Dominates | Causality::Equal));
            prop_assert!(matches!(j.compare(&b), Causality::Dominates | Causality::Equal));
            for (n, c) in j.iter() {
                prop_assert!(c != 0);
                prop_assert_eq!(c, a.get(&n).max(b.get(&n)));
            }
        }

        #[test]
        fn bump_dominates(a in arb_vv(), n in 0u8..8) {
            let mut b = a.clone();
            b.bump(id(n));
            prop_assert_eq!(b.compare(&a), Causality::Dominates);
            prop_assert_eq!(a.compare(&b), Causality::DominatedBy);
            prop_assert_eq!(b.get(&id(n)), a.get(&id(n)) + 1);
        }

        #[test]
        fn compare_is_antisymmetric(a in arb_vv(), b in arb_vv()) {
            let ab = a.compare(&b);
            prop_assert_eq!(b.compare(&a), ab.reverse());
            prop_assert_eq!(ab == Causality::Equal, a == b);
        }

        #[test]
        fn compare_agrees_with_pointwise_order(a in arb_vv(), b in arb_vv()) {
            let ids: Vec<NodeId> = a.iter().chain(b.iter()).map(|(n, _)| n).collect();
            let le = ids.iter().all(|n| a.get(n) <= b.get(n));
            let ge = ids.iter().all(|n| a.get(n) >= b.get(n));
            let expect = match (ge, le) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::Dominates,
                (false, true) => Causality::DominatedBy,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(&b), expect);
        }
    }
}
