//! What the live-mirroring tests share (DESIGN.md, "Replication"): real
//! `backer mount` and `backer replica` processes talking QUIC on
//! 127.0.0.1, each trusting the peers in its STORE/config.toml. Nothing
//! waits a fixed time for correctness: every wait polls a condition up to
//! a deadline and fails with the nodes' state and logs.
//!
//! Run the tests with `--nocapture` to see the measured latencies and
//! transfer figures.

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backer_tests::{Run, TempStore};
use serde_json::Value;

use crate::mount_util::{process_alive, signal, walk, Mount};

/// How long anything that should happen "soon" may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
/// How often conditions are checked.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it holds and returns how long that
/// took; at [`DEADLINE`] panics with `what` and `diag()` (the nodes'
/// state, their logs).
#[track_caller]
pub(crate) fn wait_until(
    what: &str,
    mut cond: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) -> Duration {
    wait_every(what, POLL, &mut cond, &diag)
}

#[track_caller]
pub(crate) fn wait_every(
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
pub(crate) fn free_addr() -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket on 127.0.0.1");
    let port = sock.local_addr().expect("local address").port();
    format!("127.0.0.1:{port}")
}

/// `cmd` (program, arguments, environment) run by `nsenter` in the
/// network namespace `/run/netns/NS` and nothing else: unlike `ip netns
/// exec`, it keeps this mount namespace, so a FUSE mount made there is
/// visible here. `nsenter` execs the program: the pid is the node's.
pub(crate) fn in_netns(cmd: &Command, ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// `backer --store S ARGS...`, run to completion.
pub(crate) fn backer(store: &TempStore, args: &[&str]) -> Run {
    Run::of(store.backer().args(args).stdin(Stdio::null()))
}

/// `backer status --json` of `store` (the running node's answer if one
/// runs); `None` if it failed or printed no JSON.
pub(crate) fn status(store: &TempStore) -> Option<Value> {
    let run = backer(store, &["status", "--json"]);
    if run.code != Some(0) {
        return None;
    }
    serde_json::from_str(run.stdout.trim()).ok()
}

/// The root hash in `status`.
pub(crate) fn root_of(st: &Value) -> Option<String> {
    st["root"].as_str().map(str::to_string)
}

/// The entry of `peer` in `status`'s peer list.
pub(crate) fn peer_in<'a>(st: &'a Value, peer: &str) -> Option<&'a Value> {
    st["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_str() == Some(peer))
}

/// Whether `status` shows `peer` connected.
pub(crate) fn connected(st: &Value, peer: &str) -> bool {
    peer_in(st, peer).is_some_and(|p| p["connected"] == Value::Bool(true))
}

/// The short form of a node id (its first 7 characters).
pub(crate) fn short(id: &str) -> &str {
    &id[..7]
}

/// What every node of a test is, for waiting and diagnostics.
pub(crate) trait Node {
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
pub(crate) fn describe_all(nodes: &[&dyn Node]) -> String {
    nodes.iter().map(|n| n.describe()).collect()
}

/// Waits until `node` shows `peer` connected.
pub(crate) fn wait_connected(node: &dyn Node, peer: &dyn Node, all: &[&dyn Node]) {
    wait_until(
        &format!("{} to be connected to {}", node.name(), peer.name()),
        || status(node.store()).is_some_and(|s| connected(&s, peer.id())),
        || describe_all(all),
    );
}

/// Waits until every node has the same committed root; returns it.
pub(crate) fn wait_same_root(what: &str, nodes: &[&dyn Node]) -> String {
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
pub(crate) struct MountNode {
    pub(crate) name: &'static str,
    pub(crate) m: Mount,
    pub(crate) id: String,
    pub(crate) addr: String,
    /// The network namespace the node runs in (`/run/netns/NAME`), if
    /// not this process's.
    pub(crate) netns: Option<String>,
}

impl MountNode {
    /// A new store, not mounted yet (add peers first).
    pub(crate) fn init(name: &'static str) -> MountNode {
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
            netns: None,
        }
    }

    /// `backer mount DIR [--listen ADDR]`: returns with the mount up.
    pub(crate) fn start(&mut self, listen: bool) {
        let mut args = vec![];
        if listen {
            args.extend(["--listen", self.addr.as_str()]);
        }
        let run = match &self.netns {
            None => self.m.try_mount(&args),
            Some(ns) => {
                let mut cmd = self.m.store().backer();
                cmd.arg("mount").arg(self.m.dir()).args(&args);
                Run::of(in_netns(&cmd, ns).stdin(Stdio::null()))
            }
        };
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

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }

    pub(crate) fn dir(&self) -> &Path {
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

/// A `backer replica [--listen ADDR]` in the background, its stderr (the
/// log) in a file per run; stopped by SIGTERM (killed if it will not
/// stop) when dropped.
pub(crate) struct ReplicaNode {
    pub(crate) name: &'static str,
    pub(crate) store: TempStore,
    pub(crate) id: String,
    pub(crate) addr: String,
    /// Whether it listens at `addr` (else it only dials out).
    pub(crate) listens: bool,
    /// The network namespace it runs in, if not this process's.
    pub(crate) netns: Option<String>,
    pub(crate) child: Option<Child>,
    /// Runs started so far; the log of run `n` is `replica-<n>.log`.
    pub(crate) runs: u32,
}

impl ReplicaNode {
    pub(crate) fn init(name: &'static str) -> ReplicaNode {
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
            listens: true,
            netns: None,
            child: None,
            runs: 0,
        }
    }

    pub(crate) fn log_path(&self, run: u32) -> PathBuf {
        self.store
            .dir()
            .parent()
            .expect("the store has a parent")
            .join(format!("replica-{run}.log"))
    }

    /// The log of run `run` (1 is the first).
    pub(crate) fn log_of(&self, run: u32) -> String {
        fs::read_to_string(self.log_path(run)).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().expect("the replica runs").id() as i32
    }

    /// Starts the replica and waits until it answers `status`.
    pub(crate) fn start(&mut self) {
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
    pub(crate) fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        self.runs += 1;
        let log = fs::File::create(self.log_path(self.runs)).expect("create the replica log");
        let mut cmd = self.store.backer();
        cmd.arg("replica");
        if self.listens {
            cmd.args(["--listen", &self.addr]);
        }
        if let Some(ns) = &self.netns {
            cmd = in_netns(&cmd, ns);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start backer replica");
        self.child = Some(child);
    }

    /// SIGTERM; returns the exit code once it has exited.
    pub(crate) fn stop(&mut self) -> Option<i32> {
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
    pub(crate) fn kill9(&mut self) {
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

/// Two mounts, A and B, each the other's peer at its address, both
/// listening and started (not necessarily connected yet).
pub(crate) fn mounted_pair() -> (MountNode, MountNode) {
    let mut a = MountNode::init("A");
    let mut b = MountNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    b.start(true);
    (a, b)
}

/// A started mount A that trusts some other node, not X, and a mount X
/// (not started) that trusts A and dials it: X's key will be refused.
pub(crate) fn untrusted_dialler() -> (MountNode, MountNode) {
    let mut a = MountNode::init("A");
    let x = MountNode::init("X");
    let other = TempStore::new();
    let other_id = backer(&other, &["init"])
        .assert_success()
        .last_line()
        .to_string();
    a.add_peer(&other_id, None);
    x.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    (a, x)
}

/// Two replicas, A and B, each the other's peer at its address, both
/// listening and started (not necessarily connected yet).
pub(crate) fn replica_pair() -> (ReplicaNode, ReplicaNode) {
    let mut a = ReplicaNode::init("A");
    let mut b = ReplicaNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start();
    b.start();
    (a, b)
}

/// Writes `data` at `path` and fsyncs it: once this returns, the node's
/// committed root holds it (and every change made before).
pub(crate) fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// fsyncs an existing file: the root is durable and holds every change
/// made before.
pub(crate) fn fsync(path: &Path) {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// The median of some durations.
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Asserts that `got` holds what `want` holds: names, types, modes (not
/// of symlinks), symlink targets, sizes; bytes by `diff -r`.
pub(crate) fn assert_same_tree(want: &Path, got: &Path) {
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
