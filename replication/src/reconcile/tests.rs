//! Properties of the sync state machine on the deterministic [`Mesh`]
//! harness: many nodes with random histories converge through one-shot
//! sessions in any order and interleaving, and a fault on the wire ends a
//! session without storing anything unverified or installing a partial
//! tree, after which a clean session converges. The real-session tests
//! (`tests/it`) cover the driver, the stores and the network.

use super::mesh::{Fault, Mesh};
use super::*;
use crate::local::MemLocal;
use crate::merge::tests::{arb_op, arb_ops, fill_chunks, history, node, Op};
use crate::proto::{AbortReason, FrameError};
use backer_fs::gc::check_whole;
use backer_fs::tree::dir;
use proptest::prelude::*;

/// Steps no session in these tests needs (a session that never settles
/// fails the test).
const MAX_STEPS: u64 = 200_000;

fn once() -> Config {
    Config {
        once: true,
        window_items: 16,
        window_bytes: 1 << 16,
    }
}

/// Node `i` of a test network.
fn id(i: usize) -> NodeId {
    node(i as u8 + 1)
}

/// A test network: nodes in memory and a clock for their edits.
struct Net {
    nodes: Vec<MemLocal>,
    clock: i64,
    /// Whether the last session's fault happened (its frame was written).
    fired: bool,
}

impl Net {
    fn new(n: usize) -> Net {
        Net {
            nodes: vec![MemLocal::new(); n],
            clock: 1_000,
            fired: false,
        }
    }

    /// Node `i` makes the edits `ops`.
    fn edit(&mut self, i: usize, ops: &[Op]) {
        let l = &mut self.nodes[i];
        l.root = history(&mut l.nodes, l.root, ops, id(i), self.clock);
        fill_chunks(l);
        self.clock += ops.len() as i64 + 1;
    }

    /// A one-shot session between nodes `a` and `b` with `fault`; returns
    /// both results and keeps both stores.
    fn session(&mut self, a: usize, b: usize, seed: u64, fault: Option<Fault>) -> [Result<()>; 2] {
        let two = vec![
            (self.nodes[a].clone(), id(a)),
            (self.nodes[b].clone(), id(b)),
        ];
        let mut mesh = Mesh::new(two, seed);
        let link = mesh.link(0, 1, once());
        if let Some(f) = fault {
            mesh = mesh.with_fault(link, f);
        }
        mesh.run(MAX_STEPS);
        let results = mesh.results(link);
        self.fired = mesh.fired;
        let [na, nb] = <[_; 2]>::try_from(mesh.nodes).expect("two nodes");
        self.nodes[a] = na.0;
        self.nodes[b] = nb.0;
        results
    }

    /// A clean one-shot session: both end well, holding one root.
    fn sync(&mut self, a: usize, b: usize, seed: u64) {
        let [ra, rb] = self.session(a, b, seed, None);
        if let Err(e) = ra.and(rb) {
            panic!("a clean session between {a} and {b} failed: {e}");
        }
        assert_eq!(
            self.nodes[a].root, self.nodes[b].root,
            "roots differ after a sync"
        );
    }

    /// Every node's tree is whole (every node and chunk it reaches is
    /// held) and canonical.
    fn assert_whole(&self) {
        for (i, l) in self.nodes.iter().enumerate() {
            check_whole(&l.nodes, l.root, |h| Ok(l.chunks.contains_key(h)))
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
            assert!(dir::is_canonical(&l.nodes, l.root).unwrap(), "node {i}");
        }
    }

    /// Node 0 syncs with every other, then every other with node 0 again:
    /// all hold one root.
    fn converge(&mut self, seed: u64) {
        for round in 0..2 {
            for i in 1..self.nodes.len() {
                self.sync(0, i, seed ^ (round * 100 + i as u64));
            }
        }
        let root = self.nodes[0].root;
        for l in &self.nodes {
            assert_eq!(l.root, root, "not converged");
        }
        self.assert_whole();
    }
}

/// One step of a test plan: node `who` edits, then nodes `a` and `b` sync.
type Step = (usize, Vec<Op>, usize, usize);

fn arb_plan() -> impl Strategy<Value = Vec<Step>> {
    let ops = arb_ops(4);
    proptest::collection::vec((0usize..5, ops, 0usize..5, 0usize..5), 1..7)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn nodes_converge_after_random_histories_and_sessions(
        n in 2usize..=5,
        plan in arb_plan(),
        seed in any::<u64>(),
    ) {
        let mut net = Net::new(n);
        for (k, (who, ops, a, b)) in plan.iter().enumerate() {
            net.edit(who % n, ops);
            let (a, b) = (a % n, b % n);
            if a != b {
                net.sync(a, b, seed ^ k as u64);
            }
        }
        net.assert_whole();
        net.converge(seed);
    }
}

fn arb_fault() -> impl Strategy<Value = Fault> {
    (0usize..2, 0u64..30, 0u8..4).prop_map(|(from, n, kind)| match kind {
        0 => Fault::Cut { from, n },
        1 => Fault::Truncate { from, n },
        2 => Fault::Garbage { from, n },
        _ => Fault::Abort { from, n },
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn a_fault_on_the_wire_ends_the_session_and_a_clean_one_converges(
        a_ops in arb_ops(8),
        b_ops in arb_ops(8),
        fault in arb_fault(),
        seed in any::<u64>(),
    ) {
        let mut net = Net::new(2);
        net.edit(0, &a_ops);
        net.edit(1, &b_ops);
        // The harness's Checked store fails the test on anything stored
        // unverified; whatever the fault, each side still holds a whole
        // tree (a merge installs only complete trees).
        let results = net.session(0, 1, seed, Some(fault));
        let same_root = net.nodes[0].root == net.nodes[1].root;
        for (s, r) in results.iter().enumerate() {
            match r {
                // A one-shot session ends well only once both hold one
                // root, unless this side is the one that left (an abort
                // as it shuts down ends its own session cleanly).
                Ok(()) => prop_assert!(
                    same_root || (net.fired && matches!(fault, Fault::Abort { from, .. } if from == s)),
                    "side {} ended well apart ({:?})", s, results
                ),
                // The wire failed, not a store.
                Err(e) => prop_assert!(
                    net.fired && !matches!(e, Error::Local(_) | Error::Stopped(_) | Error::Stalled(_)),
                    "side {} ended with {} (fault happened: {})", s, e, net.fired
                ),
            }
        }
        net.assert_whole();
        net.converge(seed);
    }
}

/// Two nodes with different trees, for the fault cases below.
fn two_apart() -> Net {
    let mut net = Net::new(2);
    let w = |p: Vec<u8>, d| Op::Write(p, d);
    net.edit(0, &[w(vec![0, 1], 1), w(vec![2], 2)]);
    net.edit(1, &[w(vec![1, 1], 3), w(vec![3, 0, 2], 4)]);
    net
}

#[test]
fn a_frame_cut_in_half_ends_the_readers_session_as_truncated() {
    let mut net = two_apart();
    let [a, b] = net.session(0, 1, 7, Some(Fault::Truncate { from: 0, n: 1 }));
    assert!(
        matches!(b, Err(Error::Frame(FrameError::Truncated))),
        "{b:?}"
    );
    assert!(matches!(a, Err(Error::Closed)), "{a:?}");
    net.converge(7);
}

#[test]
fn garbage_on_the_wire_ends_the_readers_session() {
    for n in 0..6 {
        let mut net = two_apart();
        let [_, b] = net.session(0, 1, n, Some(Fault::Garbage { from: 0, n }));
        assert!(b.is_err(), "garbage as frame {n} was accepted");
        net.converge(n);
    }
}

#[test]
fn a_peer_that_shuts_down_ends_the_session_with_its_reason() {
    let mut net = two_apart();
    let [a, b] = net.session(0, 1, 3, Some(Fault::Abort { from: 0, n: 2 }));
    assert!(a.is_ok());
    assert!(
        matches!(b, Err(Error::PeerAborted(AbortReason::Shutdown))),
        "{b:?}"
    );
    net.converge(3);
}

#[test]
fn the_same_seed_gives_the_same_session() {
    let run = |seed| {
        let net = two_apart();
        let nodes = (0..2).map(|i| (net.nodes[i].clone(), id(i))).collect();
        let mut mesh = Mesh::new(nodes, seed);
        let link = mesh.link(0, 1, once());
        mesh.run(MAX_STEPS);
        let [a, b] = &mesh.links[link];
        (mesh.steps, a.m.stats(), b.m.stats())
    };
    assert_eq!(run(5), run(5));
}

#[test]
fn the_seed_also_picks_inputs_before_every_transmit_is_polled() {
    // The session driver does this whenever its writer is backed up: the
    // harness must explore it, not always drain transmits first.
    let early: u64 = (0..20)
        .map(|seed| {
            let net = two_apart();
            let nodes = (0..2).map(|i| (net.nodes[i].clone(), id(i))).collect();
            let mut mesh = Mesh::new(nodes, seed);
            let link = mesh.link(0, 1, once());
            mesh.run(MAX_STEPS);
            let [a, b] = mesh.results(link);
            assert!(a.and(b).is_ok(), "seed {seed}");
            mesh.early_inputs
        })
        .sum();
    assert!(early > 0, "every input came after every transmit");
}

fn live() -> Config {
    Config {
        once: false,
        ..once()
    }
}

/// Node `i` of `mesh` commits a write of `data` to "n`k`/n3".
fn commit(mesh: &mut Mesh, i: usize, k: u8, data: u64) -> Hash {
    let l = &mut mesh.nodes[i].0;
    let op = Op::Write(vec![k, 3], data);
    l.root = history(&mut l.nodes, l.root, &[op], id(i), 5_000 + i64::from(k));
    fill_chunks(l);
    l.root
}

fn roots(mesh: &Mesh) -> Vec<Hash> {
    mesh.nodes.iter().map(|n| n.0.root).collect()
}

#[test]
fn a_live_session_pulls_every_root_either_side_commits() {
    let net = two_apart();
    let nodes = (0..2).map(|i| (net.nodes[i].clone(), id(i))).collect();
    let mut mesh = Mesh::new(nodes, 11);
    mesh.link(0, 1, live());
    mesh.run(MAX_STEPS);
    let r = roots(&mesh);
    assert_eq!(r[0], r[1], "the first roots were exchanged");
    for (k, i) in [(0u8, 1usize), (1, 0), (2, 1)] {
        let root = commit(&mut mesh, i, k, 5);
        mesh.run(MAX_STEPS);
        assert_eq!(roots(&mesh), vec![root; 2], "after commit {k} on node {i}");
    }
    let [a, b] = &mesh.links[0];
    assert!(a.end.is_none() && b.end.is_none(), "a live session runs on");
    assert_eq!(a.m.stats().merges + b.m.stats().merges, 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Live sessions along a line of nodes (each node a machine per
    /// neighbour over one store): every commit anywhere reaches every
    /// node, relayed by the merges in between.
    #[test]
    fn live_sessions_relay_every_commit_along_a_line_of_nodes(
        n in 2usize..=5,
        start in proptest::collection::vec(arb_ops(4), 5),
        commits in proptest::collection::vec((0usize..5, arb_op()), 0..6),
        seed in any::<u64>(),
    ) {
        let mut net = Net::new(n);
        for (i, ops) in start.iter().take(n).enumerate() {
            net.edit(i, ops);
        }
        let nodes = net.nodes.into_iter().enumerate().map(|(i, l)| (l, id(i))).collect();
        let mut mesh = Mesh::new(nodes, seed);
        for i in 1..n {
            mesh.link(i - 1, i, live());
        }
        mesh.run(MAX_STEPS);
        let r = roots(&mesh);
        prop_assert!(r.iter().all(|x| *x == r[0]), "not converged at the start");
        for (k, (i, op)) in commits.iter().enumerate() {
            let l = &mut mesh.nodes[i % n].0;
            l.root = history(&mut l.nodes, l.root, std::slice::from_ref(op), id(i % n), 9_000 + k as i64);
            fill_chunks(l);
            mesh.run(MAX_STEPS);
            let r = roots(&mesh);
            prop_assert!(r.iter().all(|x| *x == r[0]), "not converged after commit {k}");
        }
        for (link, sides) in mesh.links.iter().enumerate() {
            prop_assert!(sides.iter().all(|s| s.end.is_none()), "link {link} ended");
        }
        let net = Net { nodes: mesh.nodes.into_iter().map(|c| c.0).collect(), clock: 0, fired: false };
        net.assert_whole();
    }
}
