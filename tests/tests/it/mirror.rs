//! Live mirroring between real nodes (DESIGN.md, "Replication"): real
//! `backer mount` and `backer replica` processes talking QUIC on
//! 127.0.0.1, each trusting the peers in its STORE/config.toml. Nothing
//! waits a fixed time for correctness: every wait polls a condition up to
//! a deadline and fails with the nodes' state and logs.
//!
//! Run with `--nocapture` to see the measured latencies and transfer
//! figures.

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backer_tests::{Run, TempStore};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use crate::mount_util::{process_alive, signal, walk, Mount};

/// How long anything that should happen "soon" may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// How often conditions are checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it holds and returns how long that
/// took; at [`DEADLINE`] panics with `what` and `diag()` (the nodes'
/// state, their logs).
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) -> Duration {
    wait_every(what, POLL, &mut cond, &diag)
}

#[track_caller]
fn wait_every(
    what: &str,
    every: Duration,
    cond: &mut dyn FnMut() -> bool,
    diag: &dyn Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                diag()
            );
        }
        std::thread::sleep(every);
    }
}

/// A free UDP address on 127.0.0.1 (bound, read, released).
fn free_addr() -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket on 127.0.0.1");
    let port = sock.local_addr().expect("local address").port();
    format!("127.0.0.1:{port}")
}

/// `backer --store S ARGS...`, run to completion.
fn backer(store: &TempStore, args: &[&str]) -> Run {
    Run::of(store.backer().args(args).stdin(Stdio::null()))
}

/// `backer status --json` of `store` (the running node's answer if one
/// runs); `None` if it failed or printed no JSON.
fn status(store: &TempStore) -> Option<Value> {
    let run = backer(store, &["status", "--json"]);
    if run.code != Some(0) {
        return None;
    }
    serde_json::from_str(run.stdout.trim()).ok()
}

/// The root hash in `status`.
fn root_of(st: &Value) -> Option<String> {
    st["root"].as_str().map(str::to_string)
}

/// The entry of `peer` in `status`'s peer list.
fn peer_in<'a>(st: &'a Value, peer: &str) -> Option<&'a Value> {
    st["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_str() == Some(peer))
}

/// Whether `status` shows `peer` connected.
fn connected(st: &Value, peer: &str) -> bool {
    peer_in(st, peer).is_some_and(|p| p["connected"] == Value::Bool(true))
}

/// The short form of a node id (its first 7 characters).
fn short(id: &str) -> &str {
    &id[..7]
}

/// What every node of a test is, for waiting and diagnostics.
trait Node {
    fn name(&self) -> &str;
    fn id(&self) -> &str;
    fn store(&self) -> &TempStore;
    fn log(&self) -> String;

    /// `peer add ID [ADDR]` on this node (running or not).
    fn add_peer(&self, id: &str, addr: Option<&str>) {
        let mut args = vec!["peer", "add", id];
        args.extend(addr);
        backer(self.store(), &args).assert_success();
    }

    /// `peer remove ID` on this node.
    fn remove_peer(&self, id: &str) {
        backer(self.store(), &["peer", "remove", id]).assert_success();
    }

    fn status(&self) -> Value {
        status(self.store()).unwrap_or_else(|| {
            let run = backer(self.store(), &["status", "--json"]);
            panic!("{}: status --json failed: {run:#?}", self.name())
        })
    }

    fn root(&self) -> String {
        root_of(&self.status()).expect("status has a root")
    }

    /// The status and the last lines of the log, for failure messages.
    fn describe(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- {} ({}) status: {}\n--- {} log (tail):\n{tail}\n",
            self.name(),
            short(self.id()),
            status(self.store()).map_or("<none>".into(), |s| s.to_string()),
            self.name(),
        )
    }
}

/// Everything about `nodes`, for failure messages.
fn describe_all(nodes: &[&dyn Node]) -> String {
    nodes.iter().map(|n| n.describe()).collect()
}

/// Waits until `node` shows `peer` connected.
fn wait_connected(node: &dyn Node, peer: &dyn Node, all: &[&dyn Node]) {
    wait_until(
        &format!("{} to be connected to {}", node.name(), peer.name()),
        || status(node.store()).is_some_and(|s| connected(&s, peer.id())),
        || describe_all(all),
    );
}

/// Waits until every node has the same committed root; returns it.
fn wait_same_root(what: &str, nodes: &[&dyn Node]) -> String {
    let mut root = String::new();
    wait_until(
        what,
        || {
            let roots: Vec<Option<String>> = nodes
                .iter()
                .map(|n| status(n.store()).and_then(|s| root_of(&s)))
                .collect();
            match &roots[0] {
                Some(r) if roots.iter().all(|x| x.as_ref() == Some(r)) => {
                    root = r.clone();
                    true
                }
                _ => false,
            }
        },
        || describe_all(nodes),
    );
    root
}

/// A mounted node: a store in a temporary folder, its mount point, and
/// (when listening) its QUIC address. Unmounted (and its process waited
/// for or killed) when dropped, by [`Mount`].
struct MountNode {
    name: &'static str,
    m: Mount,
    id: String,
    addr: String,
}

impl MountNode {
    /// A new store, not mounted yet (add peers first).
    fn init(name: &'static str) -> MountNode {
        let m = Mount::init();
        let id = backer(m.store(), &["id"])
            .assert_success()
            .last_line()
            .to_string();
        MountNode {
            name,
            m,
            id,
            addr: free_addr(),
        }
    }

    /// `backer mount DIR [--listen ADDR]`: returns with the mount up.
    fn start(&mut self, listen: bool) {
        let mut args = vec![];
        if listen {
            args.extend(["--listen", self.addr.as_str()]);
        }
        let run = self.m.try_mount(&args);
        if run.code == Some(0) {
            self.m.adopt_running_node(); // so that Drop cleans up
        }
        assert_eq!(
            run.code,
            Some(0),
            "{}: backer mount failed: {run:#?}\nlog:\n{}",
            self.name,
            self.m.log()
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }

    fn dir(&self) -> &Path {
        self.m.dir()
    }
}

impl Node for MountNode {
    fn name(&self) -> &str {
        self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn store(&self) -> &TempStore {
        self.m.store()
    }
    fn log(&self) -> String {
        self.m.log()
    }
}

/// A `backer replica --listen ADDR` in the background, its stderr (the
/// log) in a file per run; stopped by SIGTERM (killed if it will not
/// stop) when dropped.
struct ReplicaNode {
    name: &'static str,
    store: TempStore,
    id: String,
    addr: String,
    child: Option<Child>,
    /// Runs started so far; the log of run `n` is `replica-<n>.log`.
    runs: u32,
}

impl ReplicaNode {
    fn init(name: &'static str) -> ReplicaNode {
        let store = TempStore::new();
        let id = backer(&store, &["init"])
            .assert_success()
            .last_line()
            .to_string();
        ReplicaNode {
            name,
            store,
            id,
            addr: free_addr(),
            child: None,
            runs: 0,
        }
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.store
            .dir()
            .parent()
            .expect("the store has a parent")
            .join(format!("replica-{run}.log"))
    }

    /// The log of run `run` (1 is the first).
    fn log_of(&self, run: u32) -> String {
        fs::read_to_string(self.log_path(run)).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("the replica runs").id() as i32
    }

    /// Starts the replica and waits until it answers `status`.
    fn start(&mut self) {
        self.spawn();
        let pid = self.pid();
        wait_until(
            &format!("{} (pid {pid}) to answer status", self.name),
            || {
                assert!(
                    process_alive(pid),
                    "{}: the replica exited\nlog:\n{}",
                    self.name,
                    self.log()
                );
                status(&self.store).is_some_and(|s| s["pid"].as_i64() == Some(i64::from(pid)))
            },
            || self.describe(),
        );
    }

    /// Starts the replica and returns at once.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).expect("create the replica log");
        let child = self
            .store
            .backer()
            .args(["replica", "--listen", &self.addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start backer replica");
        self.child = Some(child);
    }

    /// SIGTERM; returns the exit code once it has exited.
    fn stop(&mut self) -> Option<i32> {
        let pid = self.pid();
        signal(pid, libc::SIGTERM);
        wait_until(
            &format!("{} (pid {pid}) to exit after SIGTERM", self.name),
            || !process_alive(pid),
            || self.describe(),
        );
        let mut child = self.child.take().expect("the replica ran");
        child.wait().expect("wait for the replica").code()
    }

    /// `kill -9`; returns once the process is gone.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("the replica runs");
        child.kill().expect("kill -9 of the replica");
        child.wait().expect("wait for the killed replica");
    }
}

impl Node for ReplicaNode {
    fn name(&self) -> &str {
        self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn store(&self) -> &TempStore {
        &self.store
    }
    fn log(&self) -> String {
        (1..=self.runs)
            .map(|r| format!("[run {r}]\n{}", self.log_of(r)))
            .collect()
    }
}

impl Drop for ReplicaNode {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) of our own child; no memory involved.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("cleanup: {} did not stop on SIGTERM; killing it", self.name);
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Writes `data` at `path` and fsyncs it: once this returns, the node's
/// committed root holds it (and every change made before).
fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// fsyncs an existing file: the root is durable and holds every change
/// made before.
fn fsync(path: &Path) {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// The median of some durations.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Two mounted nodes, each the other's peer: ten writes alternating in
/// direction, all to the same file (so the reader's kernel caches of the
/// previous version must be invalidated), each read back on the other
/// mount.
#[test]
fn two_mounts_mirror_writes_both_ways() {
    let mut a = MountNode::init("A");
    let mut b = MountNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    b.start(true);
    let all: [&dyn Node; 2] = [&a, &b];
    wait_connected(&a, &b, &all);
    wait_connected(&b, &a, &all);

    const NAME: &str = "pingpong.bin";
    let mut rng = rand::thread_rng();
    let mut latencies = Vec::new();
    for round in 0..10 {
        let (from, to) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // Sizes differ every round: a stale size shows as well as stale bytes.
        let mut data = vec![0u8; rng.gen_range(1_000..300_000)];
        rng.fill_bytes(&mut data);
        data[..8].copy_from_slice(&(round as u64).to_le_bytes());
        let start = Instant::now();
        fs::write(from.path(NAME), &data)
            .unwrap_or_else(|e| panic!("round {round}: write on {}: {e}", from.name));
        let target = to.path(NAME);
        wait_every(
            &format!(
                "round {round}: {} bytes written on {} to be read on {}",
                data.len(),
                from.name,
                to.name
            ),
            Duration::from_millis(2),
            &mut || fs::read(&target).is_ok_and(|got| got == data),
            &|| {
                let got = fs::read(&target);
                format!(
                    "{} reads {:?}\n{}",
                    to.name,
                    got.map(|g| (g.len(), g.get(..8).map(<[u8]>::to_vec))),
                    describe_all(&all)
                )
            },
        );
        latencies.push(start.elapsed());
    }
    wait_same_root("A and B to hold the same root", &all);
    let ms: Vec<String> = latencies
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "mirror latency A<->B over QUIC (write to read on the other mount), ms: [{}]; median {:.1} ms",
        ms.join(", "),
        median(latencies).as_secs_f64() * 1e3
    );
}

/// A source tree to copy: the largest of a few well-known crates in the
/// local cargo registry, else this repository's fs/src.
fn source_tree() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut candidates = Vec::new();
    if let Some(src) = cargo_home.map(|h| h.join("registry/src")) {
        for index in fs::read_dir(src).into_iter().flatten().flatten() {
            for entry in fs::read_dir(index.path()).into_iter().flatten().flatten() {
                candidates.push(entry.path());
            }
        }
    }
    candidates.sort();
    for prefix in ["tokio-1.", "syn-2.", "serde-1."] {
        if let Some(found) = candidates.iter().rev().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
                && p.join("src").is_dir()
        }) {
            return found.clone();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fs/src")
}

/// `cp -R -P --preserve=mode,timestamps SRC/. DST/`: symlinks as symlinks.
fn copy_tree(src: &Path, dst: &Path) {
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    let run = Run::of(
        Command::new("cp")
            .args(["-R", "-P", "--preserve=mode,timestamps"])
            .arg(from)
            .arg(dst),
    );
    assert_eq!(
        run.code,
        Some(0),
        "cp {} -> {}: {run:#?}",
        src.display(),
        dst.display()
    );
}

/// Asserts that `got` holds what `want` holds: names, types, modes (not
/// of symlinks), symlink targets, sizes; bytes by `diff -r`.
fn assert_same_tree(want: &Path, got: &Path) {
    let (want_names, got_names) = (walk(want), walk(got));
    if want_names != got_names {
        let missing: Vec<_> = want_names
            .iter()
            .filter(|n| !got_names.contains(n))
            .collect();
        let extra: Vec<_> = got_names
            .iter()
            .filter(|n| !want_names.contains(n))
            .collect();
        panic!(
            "{} and {} hold different names: missing {missing:?}, extra {extra:?}",
            got.display(),
            want.display()
        );
    }
    for rel in &want_names {
        let (w, g) = (want.join(rel), got.join(rel));
        let wm = fs::symlink_metadata(&w).unwrap();
        let gm = fs::symlink_metadata(&g).unwrap();
        let what = rel.display();
        assert_eq!(gm.file_type(), wm.file_type(), "type of {what}");
        if wm.file_type().is_symlink() {
            assert_eq!(fs::read_link(&g).unwrap(), fs::read_link(&w).unwrap());
        } else {
            assert_eq!(
                format!("{:o}", gm.mode() & 0o7777),
                format!("{:o}", wm.mode() & 0o7777),
                "mode of {what}"
            );
        }
        if wm.is_file() {
            assert_eq!(gm.len(), wm.len(), "size of {what}");
        }
    }
    let diff = Run::of(
        Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(want)
            .arg(got),
    );
    assert_eq!(diff.code, Some(0), "diff -r: {diff:#?}");
}

/// Asserts that every regular file under `want` has the same mtime (to
/// the nanosecond) under `got`; names the mismatches.
fn assert_same_mtimes(want: &Path, got: &Path) {
    let mut wrong = Vec::new();
    let mut files = 0;
    for rel in walk(want) {
        let wm = fs::symlink_metadata(want.join(&rel)).unwrap();
        if !wm.is_file() {
            continue;
        }
        files += 1;
        let gm = fs::symlink_metadata(got.join(&rel)).unwrap();
        if (gm.mtime(), gm.mtime_nsec()) != (wm.mtime(), wm.mtime_nsec()) {
            wrong.push(format!(
                "{}: {}.{:09} instead of {}.{:09}",
                rel.display(),
                gm.mtime(),
                gm.mtime_nsec(),
                wm.mtime(),
                wm.mtime_nsec()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {files} files in {} do not have the mtime they have in {}, e.g.:\n{}",
        wrong.len(),
        got.display(),
        want.display(),
        wrong[..wrong.len().min(5)].join("\n")
    );
}

/// A real source tree copied into a mount reaches a replica; the
/// replica's export is the same tree, executable bit and symlink
/// included.
#[test]
fn source_tree_reaches_a_replica_and_exports_identically() {
    let mut a = MountNode::init("A");
    let mut r = ReplicaNode::init("R");
    a.add_peer(&r.id, None);
    r.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    r.start();
    let all: [&dyn Node; 2] = [&a, &r];

    // The reference: a copy of the source with an executable and a symlink.
    let source = source_tree();
    let reference = a.m.root().join("reference");
    fs::create_dir(&reference).unwrap();
    copy_tree(&source, &reference);
    let exe = reference.join("run-me.sh");
    fs::write(&exe, b"#!/bin/sh\necho mirrored\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let lib_rs = ["src/lib.rs", "lib.rs", "src/main.rs"]
        .into_iter()
        .find(|p| reference.join(p).is_file())
        .unwrap_or("run-me.sh");
    std::os::unix::fs::symlink(lib_rs, reference.join("the-lib")).unwrap();
    let files = walk(&reference).len();
    eprintln!(
        "copying {} ({files} entries) into the mount",
        source.display()
    );

    let start = Instant::now();
    copy_tree(&reference, a.dir());
    fsync(&a.path("run-me.sh"));
    let copied = start.elapsed();
    let root = a.root();
    let converge = wait_until(
        "the replica to reach A's root",
        || status(&r.store).and_then(|s| root_of(&s)).as_ref() == Some(&root),
        || describe_all(&all),
    );
    eprintln!(
        "source tree: copied into the mount in {:.2} s; replica converged {:.2} s later",
        copied.as_secs_f64(),
        converge.as_secs_f64()
    );
    assert_eq!(r.stop(), Some(0), "the replica's exit\n{}", r.describe());

    let out = a.m.root().join("export");
    let run = backer(&r.store, &["export", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "export: {run:#?}");
    assert_same_tree(&reference, &out);
    // What the issue names explicitly.
    let mode = fs::metadata(out.join("run-me.sh")).unwrap().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "755", "mode of the executable");
    assert_eq!(
        fs::read_link(out.join("the-lib")).unwrap(),
        PathBuf::from(lib_rs)
    );
    // And the mount itself still matches.
    assert_same_tree(&reference, a.dir());
    // Last, as it is the one known to fail: `cp --preserve=timestamps`
    // sets each file's mtime (futimens before close); the replica must
    // get those times, not the time of the copy.
    assert_same_mtimes(&reference, &out);
}

/// A chain A - B - C (A and C mounted, B a replica; A and C do not know
/// each other): a change on A reaches C, and one on C reaches A.
#[test]
fn a_change_travels_along_a_chain() {
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let mut c = MountNode::init("C");
    a.add_peer(&b.id, Some(&b.addr));
    c.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    b.add_peer(&c.id, Some(&c.addr));
    b.start();
    a.start(true);
    c.start(true);
    let all: [&dyn Node; 3] = [&a, &b, &c];

    let data = b"written on A, read on C\n".repeat(1000);
    fs::write(a.path("from-a.txt"), &data).unwrap();
    let took = wait_until(
        "A's file to reach C through B",
        || fs::read(c.path("from-a.txt")).is_ok_and(|got| got == data),
        || describe_all(&all),
    );
    eprintln!("chain A->B->C: {:.1} ms", took.as_secs_f64() * 1e3);

    fs::create_dir(c.path("from-c")).unwrap();
    fs::write(c.path("from-c/back.txt"), b"and back\n").unwrap();
    let took = wait_until(
        "C's file to reach A through B",
        || fs::read(a.path("from-c/back.txt")).is_ok_and(|got| got == b"and back\n"),
        || describe_all(&all),
    );
    eprintln!("chain C->B->A: {:.1} ms", took.as_secs_f64() * 1e3);
    wait_same_root("A, B and C to hold the same root", &all);
    // A and C never met: nothing in their status about each other.
    assert!(peer_in(&a.status(), &c.id).is_none());
    assert!(peer_in(&c.status(), &a.id).is_none());
}

/// Lines of `log` that say a connection from `id` was refused.
fn refusals(log: &str, id: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("refusing") && l.contains(short(id)))
        .count()
}

/// A node whose key A does not trust (X trusts and dials A) gets nothing
/// in: A's tree never changes, A logs the refusal with X's id, and X never
/// shows A as connected.
#[test]
fn an_untrusted_node_is_refused() {
    let mut a = MountNode::init("A");
    let mut x = MountNode::init("X");
    // A trusts some other node, not X.
    let other = TempStore::new();
    let other_id = backer(&other, &["init"])
        .assert_success()
        .last_line()
        .to_string();
    a.add_peer(&other_id, None);
    x.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    let root_a = a.root();
    x.start(false);
    let x_started = Instant::now();
    let all: [&dyn Node; 2] = [&a, &x];

    wait_until(
        "A to log that it refused X",
        || refusals(&a.log(), &x.id) > 0,
        || describe_all(&all),
    );
    write_synced(&x.path("secret.txt"), b"from an untrusted node\n");
    let x_root = x.root();
    assert_ne!(
        x_root, root_a,
        "X's committed write did not change its root"
    );
    // Watch for a while: X keeps dialling with the file committed (at
    // least twice more) and A keeps refusing; stop early if X hammers A.
    const WATCH: Duration = Duration::from_secs(3);
    const HAMMER: usize = 40;
    let seen = refusals(&a.log(), &x.id);
    let mut x_saw_connected = 0;
    let mut samples = 0;
    let start = Instant::now();
    wait_until(
        "X to dial A (and be refused) twice more",
        || {
            if let Some(st) = status(x.store()) {
                samples += 1;
                if connected(&st, &a.id) {
                    x_saw_connected += 1;
                }
            }
            let n = refusals(&a.log(), &x.id);
            n >= HAMMER || (n >= seen + 2 && x_started.elapsed() >= WATCH)
        },
        || describe_all(&all),
    );
    let refused_total = refusals(&a.log(), &x.id);
    let since_start = x_started.elapsed();
    eprintln!(
        "untrusted X: A logged {refused_total} refusals of X in {:.2} s since X started \
         (the last {} in {:.2} s); X showed A connected in {x_saw_connected} of {samples} \
         status samples",
        since_start.as_secs_f64(),
        refused_total - seen,
        start.elapsed().as_secs_f64()
    );

    assert_eq!(a.root(), root_a, "A's root changed\n{}", describe_all(&all));
    assert!(!a.path("secret.txt").exists(), "X's file reached A's mount");
    let st_a = a.status();
    assert!(
        peer_in(&st_a, &x.id).is_none(),
        "A lists X as a peer: {st_a}"
    );
    let line = a
        .log()
        .lines()
        .find(|l| l.contains("refusing") && l.contains(short(&x.id)))
        .map(str::to_string)
        .unwrap();
    assert!(
        line.contains("not trusted") || line.contains("untrusted"),
        "{line}"
    );
    assert!(
        !a.log()
            .lines()
            .any(|l| l.contains("peer connected") && l.contains(short(&x.id))),
        "A logged X as connected\n{}",
        a.describe()
    );
    let st_x = x.status();
    let entry = peer_in(&st_x, &a.id).unwrap_or_else(|| panic!("X does not list A: {st_x}"));
    assert_eq!(entry["last_sync"], Value::Null, "X's view of A: {st_x}");

    // Collected, so that one run names every problem.
    let mut problems = Vec::new();
    // A refused peer is dialled again with a backoff (250 ms doubling to
    // 30 s), not in a tight loop: a handful of attempts in these seconds.
    if refused_total >= HAMMER {
        problems.push(format!(
            "X dialled the untrusting A {refused_total} times in {:.2} s: it redials at once \
             after a session that ends immediately, with no backoff",
            since_start.as_secs_f64()
        ));
    }
    if x_saw_connected > 0 || entry["connected"] != Value::Bool(false) {
        problems.push(format!(
            "X's status showed the untrusting A as connected in {x_saw_connected} of {samples} \
             samples (and now: {})",
            entry["connected"]
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        x.describe()
    );
}

/// The length of the files under `dir`.
fn dir_len(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => total += dir_len(&entry.path()),
            Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
            _ => {}
        }
    }
    total
}

/// The number `key=N` in a log line.
fn log_number(line: &str, key: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// `kill -9` of a replica in the middle of a 200 MiB transfer: it starts
/// again on the same store, fetches only what it lacks, and converges to
/// an identical export.
#[test]
fn a_replica_killed_mid_transfer_resumes_and_converges() {
    const FILES: usize = 50;
    const FILE_LEN: usize = 4 << 20;
    const TOTAL: u64 = (FILES * FILE_LEN) as u64;
    let mut a = MountNode::init("A");
    a.start(true);
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x6261_636b_6572);
    let mut buf = vec![0u8; FILE_LEN];
    for i in 0..FILES {
        if i % 10 == 0 {
            fs::create_dir(a.path(&format!("d{}", i / 10))).unwrap();
        }
        rng.fill_bytes(&mut buf);
        fs::write(a.path(&format!("d{}/f{i:02}.bin", i / 10)), &buf).unwrap();
    }
    fsync(&a.path("d0/f00.bin"));
    let root_a = a.root();
    eprintln!(
        "200 MiB written into A's mount in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let mut r = ReplicaNode::init("R");
    r.add_peer(&a.id, Some(&a.addr));
    a.add_peer(&r.id, None);
    let start = Instant::now();
    r.spawn();
    // Kill once half of the chunks have arrived (the replica's pack files
    // grow as they come) and the pull has not ended.
    let packs = r.store.dir().join("packs");
    let mut held = 0;
    wait_every(
        "the replica to receive half of the chunks",
        Duration::from_millis(2),
        &mut || {
            held = dir_len(&packs);
            held > TOTAL / 2
        },
        &|| describe_all(&[&a, &r]),
    );
    r.kill9();
    let in_transfer = start.elapsed();
    let after_kill = dir_len(&packs);
    let st = status(&r.store).expect("status of the stopped replica");
    assert_ne!(
        root_of(&st).as_ref(),
        Some(&root_a),
        "the transfer ended before the replica could be killed"
    );
    eprintln!(
        "replica killed {:.2} s into the transfer with {} MiB of packs ({} MiB after the kill)",
        in_transfer.as_secs_f64(),
        held >> 20,
        after_kill >> 20
    );

    // The store opens again and the transfer completes.
    let start = Instant::now();
    r.start();
    wait_until(
        "the restarted replica to reach A's root",
        || status(&r.store).and_then(|s| root_of(&s)).as_ref() == Some(&root_a),
        || describe_all(&[&a, &r]),
    );
    let resumed = start.elapsed();
    assert_eq!(r.stop(), Some(0), "the replica's exit\n{}", r.describe());
    // What the restart fetched: A logs the bytes it sent when the
    // replica's second session ends (the first one ended when A noticed
    // the killed replica was gone).
    let sessions_over = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("peer disconnected") && l.contains(short(&r.id)))
            .filter_map(|l| log_number(l, "sent"))
            .collect()
    };
    wait_until(
        "A to log the end of both sessions with the replica",
        || sessions_over(&a.log()).len() >= 2,
        || describe_all(&[&a, &r]),
    );
    let sent = sessions_over(&a.log());
    eprintln!(
        "restart: converged in {:.2} s; A sent {} MiB before the kill and {} MiB after the \
         restart, of {} MiB; the replica's packs now hold {} MiB",
        resumed.as_secs_f64(),
        sent[0] >> 20,
        sent[1] >> 20,
        TOTAL >> 20,
        dir_len(&packs) >> 20,
    );

    // The same files, bytes and modes (mtimes: see the source tree test).
    let out = a.m.root().join("export");
    let run = backer(&r.store, &["export", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "export: {run:#?}");
    assert_same_tree(a.dir(), &out);

    // Collected, so that one run names every problem.
    let mut problems = Vec::new();
    // What was stored before the kill is not fetched again (allowing
    // for what the store had not yet made durable).
    if sent[1] >= TOTAL - TOTAL / 8 {
        problems.push(format!(
            "the restarted replica fetched {} bytes of {TOTAL}: (nearly) everything again \
             although its packs held {after_kill} bytes after the kill (they now hold {})",
            sent[1],
            dir_len(&packs)
        ));
    }
    // The restarted replica must not wait for A to time out the killed
    // one's connection (QUIC idle timeout, 30 s) to sync again.
    if resumed > Duration::from_secs(15) {
        problems.push(format!(
            "the restarted replica took {:.1} s to converge: A kept the dead session of the \
             killed replica and closed every new connection from it as a duplicate until \
             the old one timed out",
            resumed.as_secs_f64()
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        describe_all(&[&a, &r])
    );
}

/// `name.sync-conflict-YYYYMMDD-HHMMSS-<short id>.ext` of a time in Unix
/// seconds (UTC).
fn conflict_name(stem: &str, ext: &str, secs: i64, author: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{stem}.sync-conflict-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{}.{ext}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        short(author)
    )
}

/// Names in the root of a mount that contain `.sync-conflict-`.
fn conflict_copies(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.contains(".sync-conflict-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Concurrent edits of one file on two mounts while they are apart: once
/// they meet again, both versions are on both nodes, the loser as a
/// conflict copy named the same everywhere.
#[test]
fn concurrent_edits_while_apart_keep_both_versions() {
    let mut a = MountNode::init("A");
    let mut b = MountNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    b.start(true);
    let all: [&dyn Node; 2] = [&a, &b];

    // A common ancestor on both.
    write_synced(&a.path("notes.txt"), b"the common ancestor\n");
    wait_until(
        "the ancestor to reach B",
        || fs::read(b.path("notes.txt")).is_ok_and(|d| d == b"the common ancestor\n"),
        || describe_all(&all),
    );
    wait_same_root("A and B to agree on the ancestor", &all);

    // Apart: each forgets the other (a reload while running).
    a.remove_peer(&b.id);
    b.remove_peer(&a.id);
    wait_until(
        "A and B to drop each other",
        || {
            let (sa, sb) = (status(a.store()), status(b.store()));
            sa.is_some_and(|s| peer_in(&s, &b.id).is_none())
                && sb.is_some_and(|s| peer_in(&s, &a.id).is_none())
        },
        || describe_all(&all),
    );
    let va = b"edited on A while apart\n".repeat(3);
    let vb = b"edited on B while apart: a different length\n".to_vec();
    write_synced(&a.path("notes.txt"), &va);
    write_synced(&b.path("notes.txt"), &vb);
    assert_ne!(a.root(), b.root());

    // Together again.
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    let root = {
        let mut root = String::new();
        wait_until(
            "A and B to merge into one root with a conflict copy",
            || {
                let both =
                    !conflict_copies(a.dir()).is_empty() && !conflict_copies(b.dir()).is_empty();
                both && {
                    let ra = status(a.store()).and_then(|s| root_of(&s));
                    let rb = status(b.store()).and_then(|s| root_of(&s));
                    root = ra.clone().unwrap_or_default();
                    ra.is_some() && ra == rb
                }
            },
            || {
                format!(
                    "A holds {:?}, B holds {:?}\n{}",
                    walk(a.dir()),
                    walk(b.dir()),
                    describe_all(&all)
                )
            },
        );
        root
    };

    let copies = conflict_copies(a.dir());
    assert_eq!(copies.len(), 1, "A: {copies:?}");
    assert_eq!(conflict_copies(b.dir()), copies, "the same copy on both");
    let copy = &copies[0];
    for node in [&a, &b] {
        let names: Vec<PathBuf> = walk(node.dir());
        assert_eq!(
            names,
            vec![PathBuf::from(copy), PathBuf::from("notes.txt")],
            "{}",
            node.name
        );
    }
    let winner = fs::read(a.path("notes.txt")).unwrap();
    let loser = fs::read(a.path(copy)).unwrap();
    assert_eq!(fs::read(b.path("notes.txt")).unwrap(), winner);
    assert_eq!(fs::read(b.path(copy)).unwrap(), loser);
    let (lost_on, won_on) = if winner == va {
        assert_eq!(loser, vb, "the conflict copy holds B's version");
        (&b, &a)
    } else {
        assert_eq!(winner, vb, "notes.txt holds neither version");
        assert_eq!(loser, va, "the conflict copy holds A's version");
        (&a, &b)
    };
    // The name: the losing version's mtime (UTC) and its author's short id.
    let mtime = fs::symlink_metadata(a.path(copy)).unwrap().mtime();
    assert_eq!(
        copy,
        &conflict_name("notes", "txt", mtime, &lost_on.id),
        "conflict copy name (the loser is {}'s version)",
        lost_on.name
    );
    eprintln!(
        "conflict: {} kept notes.txt, {}'s version is {copy}; root {}",
        won_on.name,
        lost_on.name,
        &root[..12.min(root.len())]
    );
}
