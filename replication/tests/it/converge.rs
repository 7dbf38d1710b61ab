//! Convergence under random histories: two, three and five nodes start from
//! one synced tree, each makes its own random edits "disconnected" (writes,
//! overwrites, partial writes, deletes of files and whole directories,
//! renames, mkdirs, commits at random points), with a few random syncs
//! between rounds of edits; then they sync in a random topology and order
//! until every root is equal.
//!
//! What counts as lost is judged by the test's own bookkeeping, not by the
//! library's version vectors. Every written content is unique. Each node
//! has *seen* the (name, content) pairs it made and those held by every node
//! it synced with, directly or through others; a conflict copy counts as
//! seen by whoever saw its content at the name it was copied from. A content
//! may disappear only where it was dropped knowingly: every copy of it was
//! seen by a node that no longer held it there (deleted, replaced or moved
//! it). Checked:
//!
//! - after every sync: both sides hold the same root and read the same
//!   files; a content either side held survives unless the other side had
//!   seen and dropped each of this side's copies of it; every file is at a
//!   name one side had that content at, or is a conflict copy beside such a
//!   name; each directory's vector has seen everything beneath it;
//! - after the final syncs: every node holds the same root and reads the
//!   same bytes; every file current on some node when the final syncs began
//!   is still there (at its name, as a conflict copy beside it, or where a
//!   rename moved it) unless some node had superseded it by then; nothing is
//!   invented or misplaced; two versions of a file with equal vectors were
//!   the same version;
//! - syncing every pair once more pulls nothing and changes no root.
//!
//! Everything is derived from a seed (`StdRng`), mtimes included: every
//! node runs on a clock the test sets, and nodes are numbered in the order
//! of their (random) ids, so a failure replays up to the names of conflict
//! copies. A failing run prints its seed and history. Environment:
//! `CONVERGE_SEED=s` runs only seed `s`, `CONVERGE_SEEDS=n` runs seeds
//! `0..n` (for soaking), `CONVERGE_LOG=1` prints every history.
//!
//! At the end, minimal histories for what the random runs found.

mod cases;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use backer_fs::store::{Space, Store};
use backer_fs::tree::{dir, Causality, Entry, Kind, NodeStore, Timestamp, VersionVector};
use backer_fs::vfs::{InstallStep, Vfs, VfsOptions};
use backer_fs::{Hash, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::*;

/// Directories edits land in ("" is the root); `d1/s0` is nested, so a
/// recursive delete of `d1` takes it along.
const DIRS: [&str; 4] = ["", "d0", "d1", "d1/s0"];
/// File names: none is ever a directory name, so a name never changes
/// kind. With and without extensions, and a dot-file (conflict names keep
/// the extension last).
const FILES: [&str; 4] = ["f0", "f1.txt", "f2.tar.gz", ".f3"];
/// The first mtime (2027-01-15).
const T0: i64 = 1_800_000_000;

/// A node whose clock the test sets.
struct Peer {
    node: Node,
    now: Arc<AtomicI64>,
}

impl Peer {
    fn new() -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
        let now = Arc::new(AtomicI64::new(T0));
        let clock = now.clone();
        let opts = VfsOptions {
            clock: Arc::new(move || Timestamp {
                secs: clock.load(Ordering::SeqCst),
                nanos: 0,
            }),
            ..VfsOptions::default()
        };
        let vfs = Arc::new(Vfs::new(store, opts).unwrap());
        // Merges go in steps of a few names (as a big first sync does in
        // steps of thousands), so every step boundary meets the checks.
        vfs.set_install_step(InstallStep {
            names: 3,
            time: std::time::Duration::from_secs(3600),
        });
        Peer {
            node: Node { _dir: dir, vfs },
            now,
        }
    }
}

/// A node's committed tree nodes, read-only.
struct Nodes(Arc<Store>);

impl NodeStore for Nodes {
    fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.0.kv().get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
        Err(backer_fs::Error::ReadOnly)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Whether `copy` is a conflict copy name of `path`: in the same directory,
/// starting with the stem `conflict_name` cuts (the extension is what
/// follows the last dot, unless that dot leads) and the marker.
fn is_copy_of(copy: &str, path: &str) -> bool {
    let ((d1, n1), (d2, n2)) = (split(copy), split(path));
    let stem = match n2.rfind('.') {
        Some(i) if i > 0 => &n2[..i],
        _ => n2,
    };
    d1 == d2 && n1.starts_with(&format!("{stem}.sync-conflict-"))
}

/// Whether a node that has seen the versions `seen` has seen content `c`
/// at `path`: there, or at the name `path` is a conflict copy of (a
/// conflict copy is the version it was at that name, moved aside).
fn knows(seen: &Seen, path: &str, c: &Hash) -> bool {
    seen.iter()
        .any(|(p, h)| h == c && (p == path || is_copy_of(path, p)))
}

/// Whether `files` hold content `c` at `path`, or at the name `path` is a
/// conflict copy of.
fn holds(files: &Files, path: &str, c: &Hash) -> bool {
    files
        .iter()
        .any(|(p, h)| h == c && (p == path || is_copy_of(path, p)))
}

/// Every entry of the committed tree (live, tombstones, directories), by
/// path; a deleted directory's subtree is gone with it.
fn tree(node: &Node) -> BTreeMap<String, Entry> {
    let root = node.root();
    let nodes = Nodes(node.vfs.store());
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), root)];
    while let Some((path, hash)) = todo.pop() {
        for e in dir::entries(&nodes, hash).unwrap() {
            let p = join(&path, std::str::from_utf8(&e.name).unwrap());
            if e.kind == Kind::Dir && !e.deleted {
                todo.push((p.clone(), e.hash));
            }
            out.insert(p, e);
        }
    }
    out
}

/// The live files and directories of a node's namespace.
fn live(node: &Node) -> (Vec<String>, Vec<String>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut todo = vec![String::new()];
    while let Some(d) = todo.pop() {
        for name in node.list(&d) {
            let p = join(&d, &name);
            let kind = node
                .vfs
                .names()
                .getattr(node.lookup(&p).unwrap())
                .unwrap()
                .kind;
            if kind == Kind::Dir {
                dirs.push(p.clone());
                todo.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// Path -> blake3 of the bytes, of every file a node reads through its vfs.
type Files = BTreeMap<String, Hash>;

/// (path, blake3 of the bytes) of file versions.
type Seen = BTreeSet<(String, Hash)>;

fn files(node: &Node) -> Files {
    node.snapshot("")
        .into_iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .map(|(p, b)| (p, Hash::of(&b)))
        .collect()
}

fn contents(f: &Files) -> BTreeSet<Hash> {
    f.values().copied().collect()
}

/// One run: `n` nodes, one seed.
struct Run {
    n: usize,
    seed: u64,
    rng: StdRng,
    peers: Vec<Peer>,
    /// Per node, every (path, content) it has seen: made itself, or held
    /// by a node it synced with, directly or through others.
    seen: Vec<Seen>,
    /// Contents written on purpose by more than one node (exempt from the
    /// loss checks: their identity is not one version's).
    shared: BTreeSet<Hash>,
    /// Every content's name in the log (`w<n>`: the write that made it).
    labels: BTreeMap<Hash, String>,
    /// What happened, printed if the run fails.
    log: Vec<String>,
    /// Writes so far: makes every written content unique.
    writes: u64,
    syncs: usize,
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CONVERGE_LOG").is_some() {
            eprintln!(
                "--- converge: {} nodes, seed {} ({} syncs); history:\n{}\n--- end of seed {}",
                self.n,
                self.seed,
                self.syncs,
                self.log.join("\n"),
                self.seed
            );
        }
    }
}

impl Run {
    fn new(n: usize, seed: u64) -> Run {
        let mut peers: Vec<Peer> = (0..n).map(|_| Peer::new()).collect();
        // Concurrent versions with equal mtimes are ordered by author id.
        peers.sort_by_key(|p| p.node.vfs.store().node_id());
        let mut log = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            log.push(format!(
                "node {i} is {}",
                p.node.vfs.store().node_id().short()
            ));
        }
        Run {
            n,
            seed,
            rng: StdRng::seed_from_u64(seed),
            peers,
            seen: vec![BTreeSet::new(); n],
            shared: BTreeSet::new(),
            labels: BTreeMap::new(),
            log,
            writes: 0,
            syncs: 0,
        }
    }

    /// How the log names content `c`.
    fn label(&self, c: &Hash) -> String {
        self.labels.get(c).cloned().unwrap_or_else(|| c.to_string())
    }

    /// Notes that node `i` made `data` at `path`; returns its label.
    fn made(&mut self, i: usize, path: &str, data: &[u8]) -> String {
        let c = Hash::of(data);
        let label = match self.shared.contains(&c) {
            true => String::from_utf8_lossy(data).into_owned(),
            false => format!("w{}", self.writes),
        };
        self.labels.entry(c).or_insert(label.clone());
        self.seen[i].insert((path.to_string(), c));
        label
    }

    fn random_file(&mut self) -> String {
        let d = DIRS[self.rng.gen_range(0..DIRS.len())];
        let f = FILES[self.rng.gen_range(0..FILES.len())];
        join(d, f)
    }

    /// New content for node `node`, never written before: small, sometimes
    /// 300 KB (several chunks), and, if `may_share`, sometimes one of two
    /// strings any node may write (equal concurrent writes are no conflict).
    fn content(&mut self, node: usize, may_share: bool) -> Vec<u8> {
        self.writes += 1;
        let r = self.rng.gen_range(0..100);
        if may_share && r < 8 {
            let data = format!("shared {}", r % 2).into_bytes();
            self.shared.insert(Hash::of(&data));
            return data;
        }
        let mut out = format!("n{node} w{} seed {}:", self.writes, self.seed).into_bytes();
        if r >= 94 {
            out.extend(bytes(self.seed << 20 | self.writes, 300_000));
        } else {
            let len = self.rng.gen_range(0..40);
            out.extend((0..len).map(|_| self.rng.gen_range(b'a'..=b'z')));
        }
        out
    }

    /// One random operation on node `i`.
    fn op(&mut self, i: usize) {
        let tick = self.rng.gen_range(0..=1);
        self.peers[i].now.fetch_add(tick, Ordering::SeqCst);
        let (files, dirs) = live(&self.peers[i].node);
        let r = self.rng.gen_range(0..100);
        let line = if r < 30 || files.is_empty() {
            let path = if !files.is_empty() && self.rng.gen_bool(0.3) {
                files[self.rng.gen_range(0..files.len())].clone()
            } else {
                self.random_file()
            };
            let data = self.content(i, true);
            self.peers[i].node.write(&path, &data);
            let label = self.made(i, &path, &data);
            format!("write {path} = {label} ({} bytes)", data.len())
        } else if r < 40 {
            let path = files[self.rng.gen_range(0..files.len())].clone();
            let size = self.peers[i].node.read(&path).unwrap().len() as u64;
            let offset = self.rng.gen_range(0..=size);
            let data = self.content(i, false);
            self.peers[i].node.write_at(&path, offset, &data);
            let now = self.peers[i].node.read(&path).unwrap();
            let label = self.made(i, &path, &now);
            format!("write {path} at {offset} = {label} ({} bytes)", data.len())
        } else if r < 52 {
            let path = files[self.rng.gen_range(0..files.len())].clone();
            self.peers[i].node.remove(&path);
            format!("rm {path}")
        } else if r < 59 && !dirs.is_empty() {
            let path = dirs[self.rng.gen_range(0..dirs.len())].clone();
            self.peers[i].node.remove(&path);
            format!("rm -r {path}")
        } else if r < 75 {
            let from = files[self.rng.gen_range(0..files.len())].clone();
            let to = self.random_file();
            if from == to {
                return;
            }
            let moved = Hash::of(&self.peers[i].node.read(&from).unwrap());
            self.peers[i].node.rename(&from, &to);
            self.seen[i].insert((to.clone(), moved));
            format!("mv {from} {to}")
        } else if r < 82 {
            let d = DIRS[self.rng.gen_range(1..DIRS.len())];
            self.peers[i].node.mkdir_p(d);
            format!("mkdir -p {d}")
        } else {
            let root = self.peers[i].node.root();
            format!("commit -> {root}")
        };
        let now = self.peers[i].now.load(Ordering::SeqCst) - T0;
        self.log.push(format!("  node {i} @{now}: {line}"));
    }

    /// A one-shot sync of `a` and `b`, checked against the oracle.
    async fn sync(&mut self, a: usize, b: usize) {
        self.syncs += 1;
        self.log.push(format!("  sync {a} {b}"));
        let (fa, fb) = (files(&self.peers[a].node), files(&self.peers[b].node));
        let (oa, ob) = sync(&self.peers[a].node, &self.peers[b].node).await;
        if oa.result.is_err() || ob.result.is_err() {
            panic!(
                "sync {a} {b} failed: node {a}: {:?}; node {b}: {:?}",
                oa.result, ob.result
            );
        }
        let root = self.peers[a].node.root();
        assert_eq!(
            root,
            self.peers[b].node.root(),
            "roots differ after a sync of {a} and {b}"
        );
        self.log.push(format!(
            "    -> {root} (merges {} {})",
            oa.report.stats.merges, ob.report.stats.merges
        ));
        let after = files(&self.peers[a].node);
        let listing: Vec<String> = after
            .iter()
            .map(|(p, c)| format!("{p} = {}", self.label(c)))
            .collect();
        self.log.push(format!("       {}", listing.join(", ")));
        assert!(
            files(&self.peers[b].node) == after,
            "nodes {a} and {b} read other files with the same root"
        );

        // A content may vanish only if the other side had seen each of
        // this side's copies of it (there, or at the name a conflict copy
        // was made from) and no longer held it (there or at that name).
        let now = contents(&after);
        let dropped = |x: usize, held: &Files, (q, c): (&String, &Hash)| {
            knows(&self.seen[x], q, c) && !holds(held, q, c)
        };
        for c in contents(&fa).union(&contents(&fb)) {
            if now.contains(c) || self.shared.contains(c) {
                continue;
            }
            let ok = fa.iter().filter(|v| v.1 == c).all(|v| dropped(b, &fb, v))
                && fb.iter().filter(|v| v.1 == c).all(|v| dropped(a, &fa, v));
            assert!(
                ok,
                "a sync of {a} and {b} lost {} (held at {:?} on {a}, {:?} on {b}), \
                 though the other side had not seen it there and dropped it; files now: {:?}",
                self.label(c),
                fa.iter()
                    .filter(|(_, h)| *h == c)
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>(),
                fb.iter()
                    .filter(|(_, h)| *h == c)
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>(),
                after.keys().collect::<Vec<_>>()
            );
        }
        for (q, c) in &after {
            let had = |f: &Files| {
                f.get(q) == Some(c) || f.iter().any(|(p, h)| h == c && is_copy_of(q, p))
            };
            assert!(
                had(&fa) || had(&fb),
                "after a sync of {a} and {b}, {q} holds content that neither side had \
                 there (nor beside it, as a conflict copy)"
            );
        }
        check_dir_vectors(&format!("after sync {a} {b}"), &tree(&self.peers[a].node));
        let mut seen: Seen = self.seen[a].union(&self.seen[b]).cloned().collect();
        seen.extend(after);
        self.seen[a] = seen.clone();
        self.seen[b] = seen;
    }

    fn pair(&mut self) -> (usize, usize) {
        let a = self.rng.gen_range(0..self.n);
        let b = (a + self.rng.gen_range(1..self.n)) % self.n;
        (a, b)
    }

    fn roots(&self) -> Vec<Hash> {
        self.peers.iter().map(|p| p.node.root()).collect()
    }

    fn converged(&self) -> bool {
        let roots = self.roots();
        roots.iter().all(|r| *r == roots[0])
    }

    /// The whole scenario.
    async fn go(&mut self) {
        // A common start: a seed tree on node 0, synced to all.
        self.log.push("seed tree on node 0".into());
        for _ in 0..8 {
            let path = self.random_file();
            let data = self.content(0, false);
            self.peers[0].node.write(&path, &data);
            let label = self.made(0, &path, &data);
            self.log.push(format!("  {path} = {label}"));
        }
        for i in 1..self.n {
            self.sync(0, i).await;
        }
        assert!(self.converged(), "the seed tree did not reach every node");

        // Rounds of disconnected edits, with a few random syncs between.
        let rounds = self.rng.gen_range(1..=3);
        for round in 0..rounds {
            self.log.push(format!("round {round}"));
            for i in 0..self.n {
                for _ in 0..self.rng.gen_range(0..=8) {
                    self.op(i);
                }
            }
            if round + 1 < rounds {
                for _ in 0..self.rng.gen_range(0..self.n) {
                    let (a, b) = self.pair();
                    self.sync(a, b).await;
                }
            }
        }

        // What every node holds and has seen as the final syncs begin.
        let trees: Vec<BTreeMap<String, Entry>> =
            self.peers.iter().map(|p| tree(&p.node)).collect();
        for (i, t) in trees.iter().enumerate() {
            check_dir_vectors(&format!("node {i} before the final syncs"), t);
        }
        let held: Vec<Files> = self.peers.iter().map(|p| files(&p.node)).collect();
        let seen = self.seen.clone();

        // Random pairs until they connect every node, then rounds of every
        // pair in a random order until all roots are equal. After one round
        // every node has merged what every other held.
        self.log.push("final syncs".into());
        let mut group: Vec<usize> = (0..self.n).collect();
        let find = |g: &Vec<usize>, mut x: usize| {
            while g[x] != x {
                x = g[x];
            }
            x
        };
        let mut parts = self.n;
        while parts > 1 {
            let (a, b) = self.pair();
            self.sync(a, b).await;
            let (ra, rb) = (find(&group, a), find(&group, b));
            if ra != rb {
                group[ra] = rb;
                parts -= 1;
            }
        }
        let mut rounds = 0;
        while !self.converged() {
            rounds += 1;
            assert!(
                rounds <= 2,
                "roots still differ after a round of syncs of every pair: {:?}",
                self.roots()
            );
            let mut pairs: Vec<(usize, usize)> = (0..self.n)
                .flat_map(|a| (a + 1..self.n).map(move |b| (a, b)))
                .collect();
            for k in (1..pairs.len()).rev() {
                pairs.swap(k, self.rng.gen_range(0..=k));
            }
            for (a, b) in pairs {
                if self.rng.gen_bool(0.5) {
                    self.sync(a, b).await;
                } else {
                    self.sync(b, a).await;
                }
            }
        }

        self.check_final(&held, &seen);
        check_vectors(&trees);

        // Syncing again changes nothing and pulls nothing.
        let root = self.peers[0].node.root();
        for a in 0..self.n {
            for b in a + 1..self.n {
                let (oa, ob) = sync_ok(&self.peers[a].node, &self.peers[b].node).await;
                for o in [&oa, &ob] {
                    assert_eq!(
                        o.report.stats.pulls, 0,
                        "a second sync of {a} and {b} pulled"
                    );
                }
                assert_eq!(
                    self.roots(),
                    vec![root; self.n],
                    "a second sync changed a root"
                );
            }
        }
    }

    /// Every node holds the same files; nothing held when the final syncs
    /// began was lost unless superseded; nothing was invented or misplaced.
    fn check_final(&self, held: &[Files], seen: &[Seen]) {
        let node = &self.peers[0].node;
        let snap = node.snapshot("");
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            assert!(
                p.node.snapshot("") == snap,
                "node {i} reads other files than node 0 with the same root"
            );
        }
        let fin = files(node);
        let in_tree: BTreeMap<String, u64> = tree(node)
            .into_iter()
            .filter(|(_, e)| !e.deleted && e.kind == Kind::File)
            .map(|(p, e)| (p, e.size))
            .collect();
        let in_namespace: BTreeMap<String, u64> = snap
            .iter()
            .filter(|(p, _)| !p.ends_with('/'))
            .map(|(p, b)| (p.clone(), b.len() as u64))
            .collect();
        assert_eq!(in_tree, in_namespace, "the tree and the namespace differ");

        let now = contents(&fin);
        // Every copy of it dropped knowingly by some node.
        let superseded = |c: &Hash| {
            held.iter()
                .flatten()
                .filter(|v| v.1 == c)
                .all(|(q, c)| (0..self.n).any(|j| knows(&seen[j], q, c) && !holds(&held[j], q, c)))
        };
        let mut lost = Vec::new();
        for (i, f) in held.iter().enumerate() {
            for (p, c) in f {
                if now.contains(c) || self.shared.contains(c) || superseded(c) {
                    continue;
                }
                lost.push(format!(
                    "node {i}'s {p} = {}: now {}",
                    self.label(c),
                    match fin.get(p) {
                        Some(h) => format!("{p} = {}", self.label(h)),
                        None => "no file".into(),
                    }
                ));
            }
        }
        assert!(
            lost.is_empty(),
            "{} version(s) lost in the final syncs:\n  {}",
            lost.len(),
            lost.join("\n  ")
        );
        for (q, c) in &fin {
            let placed = held
                .iter()
                .any(|f| f.get(q) == Some(c) || f.iter().any(|(p, h)| h == c && is_copy_of(q, p)));
            assert!(
                placed,
                "{q} holds content no node had there (nor beside it) before the final syncs"
            );
        }
    }
}

/// Two versions of one file with equal version vectors are the same
/// version: the merge takes equal vectors for equal histories.
fn check_vectors(trees: &[BTreeMap<String, Entry>]) {
    for (i, ti) in trees.iter().enumerate() {
        for (j, tj) in trees.iter().enumerate().skip(i + 1) {
            for (path, a) in ti {
                let Some(b) = tj.get(path) else { continue };
                if a.kind == Kind::File
                    && b.kind == Kind::File
                    && a.vv.compare(&b.vv) == Causality::Equal
                {
                    assert!(
                        a.deleted == b.deleted && a.hash == b.hash && a.size == b.size,
                        "{path}: nodes {i} and {j} held different versions with the same \
                         version vector {}",
                        vv(&a.vv)
                    );
                }
            }
        }
    }
}

/// A version vector with short node ids.
fn vv(v: &VersionVector) -> String {
    let pairs: Vec<String> = v
        .iter()
        .map(|(n, c)| format!("{}:{c}", n.short()))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A directory's vector joins every version beneath it (DESIGN.md,
/// "Traps": so a directory tombstone carries its subtree's maximum).
fn check_dir_vectors(what: &str, t: &BTreeMap<String, Entry>) {
    for (path, e) in t {
        let Some((parent, _)) = path.rsplit_once('/') else {
            continue;
        };
        let d = &t[parent];
        assert!(
            matches!(d.vv.compare(&e.vv), Causality::Dominates | Causality::Equal),
            "{what}: the vector of {parent} {} has not seen {path} {}",
            vv(&d.vv),
            vv(&e.vv)
        );
    }
}

/// Seeds to run: `CONVERGE_SEED` alone, else `0..CONVERGE_SEEDS`, else
/// `0..default`.
fn seeds(default: u64) -> Vec<u64> {
    let var = |k| std::env::var(k).ok().and_then(|v: String| v.parse().ok());
    match (var("CONVERGE_SEED"), var("CONVERGE_SEEDS")) {
        (Some(s), _) => vec![s],
        (None, Some(n)) => (0..n).collect(),
        (None, None) => (0..default).collect(),
    }
}

async fn scenario(n: usize, default_seeds: u64) {
    for seed in seeds(default_seeds) {
        Run::new(n, seed).go().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_after_random_histories() {
    scenario(2, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_after_random_histories() {
    scenario(3, 48).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_after_random_histories() {
    scenario(5, 32).await;
}
