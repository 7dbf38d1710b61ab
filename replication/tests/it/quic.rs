//! Nodes over real QUIC on 127.0.0.1: pinned mutual TLS, trust changes at
//! run time, and a sync session over a QUIC stream.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use backer_fs::identity::{NodeId, NodeKey};
use backer_replication::quic::{Connection, Endpoint, Trust};
use backer_replication::{run, Channels};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

const LOCALHOST: &str = "127.0.0.1:0";

/// Fails the test instead of hanging it.
async fn soon<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

fn key() -> NodeKey {
    NodeKey::generate().unwrap()
}

fn trusting(ids: &[NodeId]) -> Trust {
    ids.iter().copied().collect()
}

fn bind(key: &NodeKey, trust: Trust) -> (Endpoint, SocketAddr) {
    let ep = Endpoint::bind(LOCALHOST.parse().unwrap(), key, trust).unwrap();
    let addr = ep.local_addr().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    (ep, addr)
}

/// `client` dials `server` (at `addr`, expecting `expected`) while `server`
/// accepts; both results.
async fn dial(
    client: &Endpoint,
    server: &Endpoint,
    addr: SocketAddr,
    expected: NodeId,
) -> (
    backer_replication::quic::Result<Connection>,
    backer_replication::quic::Result<Connection>,
) {
    let (c, s) =
        soon(async { tokio::join!(client.connect(addr, expected), server.accept()) }).await;
    (c, s.expect("the endpoint is open"))
}

/// Sends `msg` on a new stream of `from`, echoes it back from `to`, and
/// checks it arrives.
async fn round_trip(from: &Connection, to: &Connection, msg: &[u8]) {
    soon(async {
        let mut a = from.open_stream().await.unwrap();
        a.write_all(msg).await.unwrap();
        a.shutdown().await.unwrap();
        let mut b = to.accept_stream().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, msg);
        b.write_all(&got).await.unwrap();
        b.shutdown().await.unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, msg);
    })
    .await;
}

/// A client whose own key the server refuses may see its handshake finish
/// (TLS 1.3 clients finish first), but the connection is closed before any
/// stream gets anywhere.
async fn assert_refused(client: backer_replication::quic::Result<Connection>) {
    let Ok(conn) = client else { return };
    soon(async {
        let reason = conn.closed().await;
        let mut s = match conn.open_stream().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let _ = s.write_all(b"let me in").await;
        let mut buf = Vec::new();
        assert!(s.read_to_end(&mut buf).await.is_err(), "closed: {reason}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_nodes_connect_and_know_each_other() {
    let (ka, kb) = (key(), key());
    let (a, _) = bind(&ka, trusting(&[kb.node_id()]));
    let (b, addr_b) = bind(&kb, trusting(&[ka.node_id()]));
    assert_eq!(a.node_id(), ka.node_id());

    let (ca, cb) = dial(&a, &b, addr_b, kb.node_id()).await;
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.peer(), kb.node_id(), "the client sees the server");
    assert_eq!(cb.peer(), ka.node_id(), "the server sees the client");
    assert_eq!(ca.remote_addr(), addr_b);

    round_trip(&ca, &cb, b"hello from a").await;
    round_trip(&cb, &ca, &bytes(7, 300_000)).await;
    ca.close("done");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_dials_and_accepts() {
    let (ka, kb) = (key(), key());
    let (a, addr_a) = bind(&ka, trusting(&[kb.node_id()]));
    let (b, addr_b) = bind(&kb, trusting(&[ka.node_id()]));
    let (ab, ba) = dial(&a, &b, addr_b, kb.node_id()).await;
    let (ba2, ab2) = dial(&b, &a, addr_a, ka.node_id()).await;
    for (x, y) in [(ab.unwrap(), ba.unwrap()), (ba2.unwrap(), ab2.unwrap())] {
        round_trip(&x, &y, b"both ways").await;
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_server_does_not_trust_is_refused() {
    let (ka, kb, kc) = (key(), key(), key());
    // The server trusts someone else; the client trusts the server.
    let (a, _) = bind(&ka, trusting(&[kb.node_id()]));
    let (b, addr_b) = bind(&kb, trusting(&[kc.node_id()]));
    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    assert!(server.is_err(), "the server accepted an untrusted client");
    // The client can tell why: the server does not trust its key.
    match &client {
        Err(e) => assert!(e.refused_our_key(), "{e}"),
        Ok(conn) => {
            let reason = soon(conn.closed()).await;
            assert!(conn.refused_our_key(), "closed: {reason}");
        }
    }
    assert_refused(client).await;
    // Nothing else comes out of accept.
    let next = tokio::time::timeout(Duration::from_millis(300), b.accept()).await;
    assert!(next.is_err(), "unexpected accept: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_client_does_not_trust_is_refused() {
    let (ka, kb) = (key(), key());
    let (a, _) = bind(&ka, Trust::new());
    let (b, addr_b) = bind(&kb, trusting(&[ka.node_id()]));
    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    let err = client.unwrap_err();
    assert!(err.to_string().contains("handshake"), "{err}");
    // We refused the server: it did not refuse us.
    assert!(!err.refused_our_key(), "{err}");
    assert!(server.is_err(), "the server saw a finished handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expecting_another_node_refuses() {
    let (ka, kb, kc) = (key(), key(), key());
    // Both are trusted, but the client meant to reach c.
    let (a, _) = bind(&ka, trusting(&[kb.node_id(), kc.node_id()]));
    let (b, addr_b) = bind(&kb, trusting(&[ka.node_id()]));
    let (client, server) = dial(&a, &b, addr_b, kc.node_id()).await;
    assert!(client.is_err());
    assert!(server.is_err());
    // The same endpoints connect when the client expects the right node.
    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    round_trip(&client.unwrap(), &server.unwrap(), b"right node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_changes_apply_to_the_next_connection() {
    let (ka, kb) = (key(), key());
    let trust_b = Trust::new();
    let (a, _) = bind(&ka, trusting(&[kb.node_id()]));
    let (b, addr_b) = bind(&kb, trust_b.clone());

    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    assert!(server.is_err());
    assert_refused(client).await;

    // `peer add` on b, no restart.
    assert!(trust_b.add(ka.node_id()));
    assert!(b.trust().contains(&ka.node_id()));
    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    let (ca, cb) = (client.unwrap(), server.unwrap());
    assert_eq!(cb.peer(), ka.node_id());
    round_trip(&ca, &cb, b"now trusted").await;

    // `peer remove` on b: the next connection is refused...
    assert!(b.trust().remove(&ka.node_id()));
    let (client, server) = dial(&a, &b, addr_b, kb.node_id()).await;
    assert!(server.is_err());
    assert_refused(client).await;
    // ...and so is dialling out to a once a removes b on its side.
    assert!(a.trust().remove(&kb.node_id()));
    b.trust().add(ka.node_id());
    let (client, _) = dial(&a, &b, addr_b, kb.node_id()).await;
    assert!(client.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_syncs_two_nodes_over_quic() {
    let (a, b) = (Node::new(), Node::new());
    a.write("docs/a.txt", b"from a");
    a.write("big.bin", &bytes(3, 700_000));
    b.write("src/lib.rs", b"fn main() {}");
    a.vfs.commit().unwrap();
    b.vfs.commit().unwrap();
    let (store_a, store_b) = (a.vfs.store(), b.vfs.store());
    let (ka, kb) = (store_a.node_key(), store_b.node_key());
    let (ea, _) = bind(ka, trusting(&[kb.node_id()]));
    let (eb, addr_b) = bind(kb, trusting(&[ka.node_id()]));

    let (ca, cb) = dial(&ea, &eb, addr_b, kb.node_id()).await;
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.peer(), b.vfs.store().node_id());
    assert_eq!(cb.peer(), a.vfs.store().node_id());

    let side_a = async {
        let stream = ca.open_stream().await.unwrap();
        run(stream, a.local(), a.hello(), once(), Channels::default()).await
    };
    // b sees the stream once a's hello is written on it.
    let side_b = async {
        let stream = cb.accept_stream().await.unwrap();
        run(stream, b.local(), b.hello(), once(), Channels::default()).await
    };
    let (oa, ob) = soon(async { tokio::join!(side_a, side_b) }).await;
    if let Err(e) = &oa.result {
        panic!("side a: {e}");
    }
    if let Err(e) = &ob.result {
        panic!("side b: {e}");
    }
    assert_eq!(a.root(), b.root(), "roots differ after a sync over QUIC");
    assert_eq!(a.snapshot(""), b.snapshot(""));
    assert_eq!(b.read("big.bin").unwrap(), bytes(3, 700_000));
    ca.close("synced");
    ea.close().await;
    eb.close().await;
}
