//! The peer manager as users meet it (DESIGN.md, "Replication"; issue
//! 14): a node that stops tells its peers at once, and a node that does
//! not listen reaches a peer on another host after `peer add`, without a
//! restart. Times are printed (`--nocapture`), never asserted.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backer_tests::Run;
use serde_json::Value;

use crate::mirror_util::*;
use crate::mount_util::signal;

/// How long a stopped peer may still look connected before the test
/// fails: a third of QUIC's 30 s idle timeout, which is what a peer that
/// was not told waits (the target is under 2 s).
const TOLD_WITHIN: Duration = Duration::from_secs(10);

/// SIGTERM to one of two connected replicas: the other's `status --json`
/// shows it `"connected": false` (a JSON boolean) well before QUIC's idle
/// timeout could have said so.
#[test]
fn a_stopped_node_shows_disconnected_on_its_peer_at_once() {
    let (a, mut b) = replica_pair();
    let all: [&dyn Node; 2] = [&a, &b];
    wait_connected(&a, &b, &all);
    wait_connected(&b, &a, &all);

    let start = Instant::now();
    signal(b.pid(), libc::SIGTERM);
    let mut last = Value::Null;
    let told = loop {
        let st = status(a.store()).unwrap_or_default();
        last = peer_in(&st, &b.id).cloned().unwrap_or(last);
        if last["connected"] == Value::Bool(false) {
            break Some(start.elapsed());
        }
        if start.elapsed() > TOLD_WITHIN {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let Some(took) = told else {
        panic!(
            "A still showed B as {last} {TOLD_WITHIN:?} after B's SIGTERM\n{}",
            describe_all(&all)
        );
    };
    eprintln!(
        "A saw B disconnected {:.0} ms after B's SIGTERM (target: under 2 s)",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(b.stop(), Some(0), "B's exit after SIGTERM");

    // With no node running, B's status reads its config: its peers come
    // in the shape the running node gives them (DESIGN.md, `status --json`).
    let offline = status(b.store()).expect("status of a stopped node");
    let a_on_b = peer_in(&offline, &a.id).expect("B lists A");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(a_on_b), keys(&last), "{a_on_b} vs {last}");
    assert_eq!(a_on_b["connected"], Value::Bool(false));
    assert_eq!(a_on_b["id"], Value::from(a.id.as_str()));
}

/// Two network namespaces joined by a veth pair, 10.99.0.1/24 and
/// 10.99.0.2/24: two hosts on one machine. Names are unique per test run,
/// and both namespaces (with the pair) are deleted when this is dropped,
/// also when the test panics.
struct TwoHosts {
    ns: [String; 2],
    veth: [String; 2],
}

impl TwoHosts {
    const ADDRS: [&str; 2] = ["10.99.0.1", "10.99.0.2"];

    fn new() -> TwoHosts {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // Interface names have 15 bytes at most.
        let hosts = TwoHosts {
            ns: [format!("backer-{tag}-a"), format!("backer-{tag}-b")],
            veth: [format!("bk{tag}a"), format!("bk{tag}b")],
        };
        let [na, nb] = &hosts.ns;
        let [va, vb] = &hosts.veth;
        ip(&["netns", "add", na]);
        ip(&["netns", "add", nb]);
        ip(&["link", "add", va, "type", "veth", "peer", "name", vb]);
        for i in 0..2 {
            let (ns, dev) = (&hosts.ns[i], &hosts.veth[i]);
            ip(&["link", "set", dev, "netns", ns]);
            let cidr = format!("{}/24", Self::ADDRS[i]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it
        // the pair; the link delete covers a pair never moved.
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.veth[0]])
            .output();
    }
}

/// `ip ARGS...`, which must work (CI runs as root with iproute2).
#[track_caller]
fn ip(args: &[&str]) {
    let run = Run::of(Command::new("ip").args(args));
    assert_eq!(
        run.code,
        Some(0),
        "ip {args:?} failed (this test needs root and iproute2): {run:#?}"
    );
}

/// Host A mounts and listens on 10.99.0.1; host B runs a replica that was
/// told no listen address. Both start first; then `peer add` on both
/// sides (B with A's address): B reaches A without a restart and gets a
/// file written on A. Before, B's socket was bound to 127.0.0.1 and every
/// send to 10.99.0.1 failed with EINVAL until a restart.
#[test]
fn a_node_that_does_not_listen_reaches_a_peer_on_another_host() {
    // Declared first: dropped last, after both nodes have stopped.
    let hosts = TwoHosts::new();
    let mut a = MountNode::init("A");
    a.netns = Some(hosts.ns[0].clone());
    a.addr = format!("{}:22000", TwoHosts::ADDRS[0]);
    let mut b = ReplicaNode::init("B");
    b.netns = Some(hosts.ns[1].clone());
    b.listens = false;
    a.start(true);
    b.start();
    let all: [&dyn Node; 2] = [&a, &b];
    assert_eq!(a.status()["listen"], Value::from(a.addr.as_str()));
    assert_eq!(b.status()["listen"], Value::Null, "B listens nowhere");

    a.add_peer(&b.id, None);
    b.add_peer(&a.id, Some(&a.addr));
    let took = wait_until(
        "B to connect to A across the veth pair",
        || status(b.store()).is_some_and(|s| connected(&s, &a.id)),
        || describe_all(&all),
    );
    eprintln!(
        "B reached A on {} {:.0} ms after 'peer add'",
        a.addr,
        took.as_secs_f64() * 1e3
    );
    write_synced(&a.path("hello.txt"), b"written on host A\n");
    let root = wait_same_root("B's root to become A's", &all);
    assert_eq!(root, a.root());
}
