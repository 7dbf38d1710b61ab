//! The manager's own bookkeeping, which its public surface cannot show.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backer_fs::store::Store;
use backer_fs::vfs::{Vfs, VfsOptions};
use backer_fs::{Hash, NodeId};

use super::{Options, PeerSpec, Peers};
use crate::Event;

fn vfs(dir: &tempfile::TempDir, name: &str) -> Arc<Vfs> {
    let store = Arc::new(Store::create(&dir.path().join(name)).unwrap());
    Arc::new(Vfs::new(store, VfsOptions::default()).unwrap())
}

/// Polls `cond` for up to five seconds.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_peer_removed_and_added_again_has_one_dialler() {
    let dir = tempfile::tempdir().unwrap();
    let other: NodeId = vfs(&dir, "other").store().node_id();
    // A socket that never answers: a dial to it stays in flight for the
    // whole dial timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = PeerSpec {
        id: other,
        addr: Some(silent.local_addr().unwrap().to_string()),
    };
    let opts = Options {
        listen: None,
        peers: vec![spec.clone()],
        ..Options::default()
    };
    let peers = Peers::start(vfs(&dir, "me"), opts).unwrap();
    let loops = || peers.shared.dial_loops.load(Ordering::SeqCst);
    assert!(eventually(|| loops() == 1), "no dialler started");
    std::thread::sleep(Duration::from_millis(100)); // the dial is in flight

    peers.reload(vec![]);
    peers.reload(vec![spec]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(loops(), 1, "the removed peer's dialler still runs");

    peers.reload(vec![]);
    assert!(
        eventually(|| loops() == 0),
        "a removed peer is still dialled"
    );
}

#[test]
fn an_event_of_a_replaced_session_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let other: NodeId = vfs(&dir, "other").store().node_id();
    let opts = Options {
        peers: vec![PeerSpec {
            id: other,
            addr: None,
        }],
        ..Options::default()
    };
    let peers = Peers::start(vfs(&dir, "me"), opts).unwrap();
    // Session 2 replaced session 1, which is still winding down.
    peers.shared.peers().get_mut(&other).unwrap().session = Some(super::Active {
        id: 2,
        dialled_by: other,
        stop: None,
    });
    let ready = || Event::Ready { peer: other };
    let connected = || peers.status()[0].connected;
    super::link::on_event(&peers.shared, other, 1, ready());
    assert!(!connected(), "the old session's event marked the new one");
    super::link::on_event(&peers.shared, other, 2, ready());
    assert!(connected());
    super::link::on_event(&peers.shared, other, 1, Event::InSync { root: Hash::ZERO });
    assert_eq!(peers.status()[0].last_sync, None);
}
