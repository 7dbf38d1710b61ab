//! `backer events --json` against real nodes: it waits for a node to
//! start, shows a write in the mount as a `LocalChange`, a peer's arrival
//! as `PeerConnected`, the peer's write as a `RemoteChange`, and follows
//! the next node after a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mirror_util::{write_synced, MountNode, Node};

/// How long an event may take to show: generous, for a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// A running `backer events --json` and the events it printed.
pub(crate) struct Follower {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Follower {
    /// Starts `cmd` (a `backer ... events --json`) with its output read
    /// on a thread.
    pub(crate) fn start(mut cmd: Command) -> Follower {
        let mut child = cmd
            .args(["events", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start backer events");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("events --json printed {line:?}: {e}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// Waits for an event that `want` accepts; returns it and how long it
    /// took. Panics with what it saw after [`WAIT`].
    pub(crate) fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> (Value, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < WAIT {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(e) if want(&e) => return (e, start.elapsed()),
                Ok(e) => seen.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no {what} event; saw: {seen:#?}");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(e: &Value, kind: &str, field: &str, value: &str) -> bool {
    e["type"] == kind && e["data"][field] == value
}

#[test]
fn events_follow_local_writes_peers_and_restarts() {
    let mut a = MountNode::init("A");
    let mut b = MountNode::init("B");
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    // Started before any node runs: it waits for one.
    let ev = Follower::start(a.store().backer());
    a.start(true);

    write_synced(&a.path("hello.txt"), b"hi");
    let (e, took) = ev.wait_for("LocalChange of hello.txt", |e| {
        is(e, "LocalChange", "path", "hello.txt")
    });
    println!("LocalChange after {took:?}");
    assert_eq!(e["data"]["kind"], "added", "{e}");
    let first = e["id"].as_u64().expect("an id");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");

    b.start(true);
    let (e, took) = ev.wait_for("PeerConnected of B", |e| {
        is(e, "PeerConnected", "peer", &b.id)
    });
    println!("PeerConnected after {took:?}");
    assert!(e["id"].as_u64() > Some(first), "ids rise: {e}");
    assert!(
        e["data"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{e}"
    );

    write_synced(&b.path("from-b.txt"), b"from b");
    let (e, took) = ev.wait_for("RemoteChange from B", |e| {
        e["type"] == "RemoteChange"
            && e["data"]["peer"] == b.id.as_str()
            && e["data"]["paths"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == "from-b.txt"))
    });
    println!("RemoteChange after {took:?}");
    assert_eq!(e["data"]["counts"]["added"], 1, "{e}");

    // The node restarts: the follower finds the new one (ids from 1).
    a.m.unmount();
    a.start(true);
    write_synced(&a.path("again.txt"), b"again");
    let (e, _) = ev.wait_for("LocalChange of again.txt after the restart", |e| {
        is(e, "LocalChange", "path", "again.txt")
    });
    assert!(e["id"].as_u64().is_some(), "{e}");
}

#[test]
fn a_merge_that_keeps_both_versions_is_a_conflict_event() {
    let mut a = MountNode::init("A");
    let mut b = MountNode::init("B");
    a.start(true);
    b.start(true);
    // Two different files by one name, made before the nodes know each
    // other: their first merge keeps both.
    write_synced(&a.path("c.txt"), b"a's version");
    write_synced(&b.path("c.txt"), b"b's version, longer");
    let ev = Follower::start(a.store().backer());
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    let (e, took) = ev.wait_for("Conflict of c.txt", |e| is(e, "Conflict", "path", "c.txt"));
    println!("Conflict after {took:?}");
    let copy = e["data"]["copy"].as_str().expect("the copy's name");
    assert!(
        copy.starts_with("c.sync-conflict-") && copy.ends_with(".txt"),
        "{e}"
    );
    assert_eq!(e["data"]["peer"], b.id.as_str(), "{e}");
    assert!(
        e["data"]["author"].as_str().is_some_and(|s| s.len() == 7),
        "{e}"
    );
    assert!(a.path(copy).exists(), "the copy is in the mount: {e}");
}
