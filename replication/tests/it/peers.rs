//! The peer manager over real QUIC on 127.0.0.1: nodes find each other
//! from their peer lists, a shutdown tells the peers at once, a removed
//! peer is cut off and refused, and a node that does not listen dials out
//! and accepts nothing. Waits poll a condition up to a deadline; measured
//! times are printed (`--nocapture`), never asserted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backer_fs::NodeId;
use backer_replication::peers::Options;
use backer_replication::quic::{Endpoint, Trust};
use backer_replication::{PeerSpec, PeerStatus, Peers};

use crate::util::*;

/// Far below the 30 s QUIC idle timeout: a peer that was not told would
/// still look connected this long after it went away.
const DEADLINE: Duration = Duration::from_secs(10);

/// A node and its running peer manager.
struct Running {
    node: Node,
    peers: Peers,
}

impl Running {
    /// Starts `node`'s peer manager, listening on 127.0.0.1 when `listen`.
    fn start(node: Node, listen: bool, peers: Vec<PeerSpec>) -> Running {
        let opts = Options {
            listen: listen.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            peers,
            ..Options::default()
        };
        let peers = Peers::start(node.vfs.clone(), opts).unwrap();
        Running { node, peers }
    }

    fn id(&self) -> NodeId {
        self.node.vfs.store().node_id()
    }

    /// How a peer dials us (we must listen).
    fn spec(&self) -> PeerSpec {
        let addr = self.peers.listen_addr().expect("this node listens");
        PeerSpec {
            id: self.id(),
            addr: Some(addr.to_string()),
        }
    }

    fn peer(&self, id: NodeId) -> Option<PeerStatus> {
        self.peers.status().into_iter().find(|p| p.id == id)
    }

    fn connected_to(&self, other: &Running) -> bool {
        self.peer(other.id()).is_some_and(|p| p.connected)
    }

    /// Commits local changes and tells the sessions.
    fn publish(&self) {
        self.peers.root_feed().publish(self.node.root());
    }
}

/// A spec with no address: the peer dials us.
fn dials_us(id: NodeId) -> PeerSpec {
    PeerSpec { id, addr: None }
}

/// Polls `cond` until it holds; returns how long that took, or panics
/// with `what` after [`DEADLINE`].
#[track_caller]
fn wait(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// A listens; B knows A's address. Both connected.
fn pair(b_listens: bool) -> (Running, Running) {
    let (na, nb) = (Node::new(), Node::new());
    let b_id = nb.vfs.store().node_id();
    let a = Running::start(na, true, vec![dials_us(b_id)]);
    let b = Running::start(nb, b_listens, vec![a.spec()]);
    wait("A and B to connect", || {
        a.connected_to(&b) && b.connected_to(&a)
    });
    (a, b)
}

#[test]
fn a_shutdown_shows_the_node_disconnected_on_its_peer_at_once() {
    let (a, b) = pair(false);
    b.peers.shutdown();
    let took = wait("A to see B disconnected", || !a.connected_to(&b));
    println!("A saw B disconnected {took:?} after B's shutdown");
    // B starts nothing new and forgets nothing of its list.
    b.peers.shutdown();
    assert_eq!(b.peers.status().len(), 1);
    assert!(!b.connected_to(&a));

    // And from the listening side (A accepted the connection).
    let (a, b) = pair(true);
    a.peers.shutdown();
    let took = wait("B to see A disconnected", || !b.connected_to(&a));
    println!("B saw A disconnected {took:?} after A's shutdown");
}

#[test]
fn shutdown_is_not_held_up_by_other_handles() {
    let (a, b) = pair(false);
    let b = std::sync::Arc::new(b);
    let other_handle = b.clone();
    // Shut down on another thread while this one keeps its handle: a
    // shutdown that waited for the other handles to go would not return.
    let (done, returned) = std::sync::mpsc::channel();
    let shutter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            b.peers.shutdown();
            let _ = done.send(start.elapsed());
        })
    };
    let took = returned.recv_timeout(DEADLINE);
    assert!(took.is_ok(), "shutdown waited while another handle lived");
    println!("shutdown took {took:?}");
    wait("A to see B disconnected", || !a.connected_to(&b));
    // The other handle still works, and sees the node stopped.
    assert!(!other_handle.connected_to(&a));
    drop(other_handle);
    shutter.join().unwrap();
}

#[test]
fn a_dial_only_node_reaches_its_peer_and_accepts_nothing() {
    let (a, b) = pair(false);
    assert_eq!(b.peers.listen_addr(), None, "B was told no listen address");
    let local = b.peers.local_addr().expect("B has a socket");
    assert!(
        local.ip().is_unspecified(),
        "not a wildcard socket: {local}"
    );

    // Changes flow both ways over B's outgoing connection.
    a.node.write("from-a", b"hello b");
    a.publish();
    wait("B to get A's file", || b.node.read("from-a").is_some());
    b.node.write("from-b", b"hello a");
    b.publish();
    wait("A to get B's file", || a.node.read("from-b").is_some());
    assert_eq!(a.node.root(), b.node.root());

    // A node B trusts dials B's port directly: nobody answers (quinn has
    // no server configuration there), so the dial fails or times out.
    let x = Node::new();
    let x_id = x.vfs.store().node_id();
    b.peers.reload(vec![a.spec(), dials_us(x_id)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dialled = rt.block_on(async {
        let trust: Trust = [b.id()].into_iter().collect();
        let store = x.vfs.store();
        let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap(), store.node_key(), trust).unwrap();
        let target = SocketAddr::from(([127, 0, 0, 1], local.port()));
        let wait = Duration::from_secs(3);
        tokio::time::timeout(wait, ep.connect(target, b.id())).await
    });
    assert!(
        !matches!(dialled, Ok(Ok(_))),
        "a dial-only node accepted a connection"
    );
    assert!(!b.peer(x_id).is_some_and(|p| p.connected));
}

#[test]
fn both_dialling_keep_one_session_and_stay_connected() {
    let (na, nb) = (Node::new(), Node::new());
    let b_id = nb.vfs.store().node_id();
    // A learns B's address after B has started listening.
    let a = Running::start(na, true, vec![dials_us(b_id)]);
    let b = Running::start(nb, true, vec![a.spec()]);
    a.peers.reload(vec![b.spec()]);
    wait("A and B to connect", || {
        a.connected_to(&b) && b.connected_to(&a)
    });
    // Whichever connection lost, the one kept carries the changes, and the
    // dedupe does not flap: both stay connected throughout.
    for i in 0..5u8 {
        a.node.write("f", &[i; 1000]);
        a.publish();
        wait("B to get A's write", || {
            b.node.read("f").as_deref() == Some(&[i; 1000][..])
        });
        assert!(
            a.connected_to(&b) && b.connected_to(&a),
            "a session dropped"
        );
    }
}

#[test]
fn a_removed_peer_is_disconnected_and_refused() {
    let (a, b) = pair(false);
    a.peers.reload(vec![]);
    assert!(a.peer(b.id()).is_none(), "A still lists B");
    let took = wait("B to see A drop it", || !b.connected_to(&a));
    println!("B saw the removal after {took:?}");
    // B keeps dialling (it still trusts A) and is refused each time.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!b.connected_to(&a), "A let a removed peer back in");
    a.node.write("secret", b"not for b");
    a.publish();
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.node.read("secret").is_none());

    // Trusted again: B's next dial gets in.
    a.peers.reload(vec![dials_us(b.id())]);
    wait("B to be let back in", || b.connected_to(&a));
    wait("B to get A's file", || b.node.read("secret").is_some());
}

#[test]
fn a_peer_is_dialled_by_host_name() {
    let (na, nb) = (Node::new(), Node::new());
    let a = Running::start(na, true, vec![dials_us(nb.vfs.store().node_id())]);
    let port = a.peers.listen_addr().expect("A listens").port();
    let by_name = PeerSpec {
        id: a.id(),
        addr: Some(format!("localhost:{port}")),
    };
    let b = Running::start(nb, false, vec![by_name]);
    wait("B to reach A by name", || {
        a.connected_to(&b) && b.connected_to(&a)
    });
}
