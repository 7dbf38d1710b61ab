//! A hand-driven peer on real QUIC over 127.0.0.1, against a node's peer
//! manager. When it misbehaves (a hello that names another node than the
//! key the handshake proved, a connection that never opens its stream,
//! more connections than a peer needs) it is cut off with a reason it is
//! told; when its sessions keep failing, it is not redialled in a loop;
//! when the node shuts down, it reads why. Measured times are printed
//! (`--nocapture`), never asserted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backer_fs::identity::{NodeId, NodeKey};
use backer_fs::{chunk, Hash};
use backer_replication::peers::{Options, FIRST_STREAM_TIMEOUT, MAX_CONNECTIONS_PER_PEER};
use backer_replication::proto::{encode, AbortReason, Message, MAX_BATCH};
use backer_replication::quic::{self, Connection, Endpoint, Trust};
use backer_replication::session::read_frame;
use backer_replication::{Hello, PeerSpec, Peers};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

use crate::util::*;

/// A node's peer manager, and the misbehaving peer's own endpoint.
struct Setup {
    node: Node,
    peers: Peers,
    rt: Runtime,
    rogue: Endpoint,
    rogue_key: NodeKey,
}

impl Setup {
    /// A node that trusts the rogue peer: listening (the rogue dials it)
    /// or dialling the rogue's listening endpoint.
    fn new(node_listens: bool) -> Setup {
        let node = Node::new();
        let rogue_key = NodeKey::generate().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let rogue = {
            let _guard = rt.enter();
            let trust: Trust = [node.vfs.store().node_id()].into_iter().collect();
            Endpoint::bind(local, &rogue_key, trust).unwrap()
        };
        let spec = PeerSpec {
            id: rogue_key.node_id(),
            addr: (!node_listens).then(|| rogue.local_addr().unwrap().to_string()),
        };
        let opts = Options {
            listen: node_listens.then_some(local),
            peers: vec![spec],
            ..Options::default()
        };
        let peers = Peers::start(node.vfs.clone(), opts).unwrap();
        Setup {
            node,
            peers,
            rt,
            rogue,
            rogue_key,
        }
    }

    fn node_id(&self) -> NodeId {
        self.node.vfs.store().node_id()
    }

    /// The next connection the node dials to the rogue, and its stream.
    async fn dialled(&self) -> (Connection, quic::Stream) {
        let conn = tokio::time::timeout(Duration::from_secs(10), self.rogue.accept())
            .await
            .expect("the node never dialled")
            .expect("the endpoint is open")
            .unwrap();
        let stream = conn.accept_stream().await.unwrap();
        (conn, stream)
    }

    /// [`Setup::dialled`], once the rogue answered the node's hello with
    /// its own.
    async fn answer(&self) -> (Connection, quic::Stream) {
        let (conn, mut stream) = self.dialled().await;
        let first = read_frame(&mut stream).await.unwrap();
        assert!(matches!(first, Some((Message::Hello(_), _))), "{first:?}");
        let hello = hello_frame(self.rogue_key.node_id());
        stream.write_all(&hello).await.unwrap();
        (conn, stream)
    }

    /// The rogue dials the node.
    async fn dial(&self) -> Connection {
        let addr = self.peers.listen_addr().expect("the node listens");
        self.rogue.connect(addr, self.node_id()).await.unwrap()
    }

    /// The rogue, whose hello lied (`role`: it dialled or was dialled), was
    /// told why its connection closed (`why`), and never showed connected.
    #[track_caller]
    fn assert_liar_cut_off(&self, role: &str, why: Option<String>) {
        println!("the node closed the {role} liar's connection: {why:?}");
        let why = why.unwrap_or_else(|| panic!("the node kept a {role} peer whose hello lied"));
        assert!(why.contains("hello names another node"), "{why}");
        let rogue = self.rogue_key.node_id();
        assert!(!self
            .peers
            .status()
            .iter()
            .any(|p| p.id == rogue && p.connected));
    }
}

/// A hello from this build's chunker that names `node`.
fn hello_frame(node: NodeId) -> Vec<u8> {
    encode(&Message::Hello(Hello::new(
        node,
        chunk::params_fingerprint(),
    )))
    .unwrap()
}

/// Why `conn` was closed, if that happens within `limit`.
async fn closed_within(conn: &Connection, limit: Duration) -> Option<String> {
    tokio::time::timeout(limit, conn.closed())
        .await
        .ok()
        .map(|e| e.to_string())
}

#[test]
fn a_hello_naming_another_node_than_the_tls_key_closes_the_connection() {
    let impostor = NodeId([7; 32]);
    // The rogue dials, and lies on the stream it opens.
    let s = Setup::new(true);
    let why = s.rt.block_on(async {
        let conn = s.dial().await;
        let mut stream = conn.open_stream().await.unwrap();
        stream.write_all(&hello_frame(impostor)).await.unwrap();
        closed_within(&conn, Duration::from_secs(10)).await
    });
    s.assert_liar_cut_off("dialling", why);

    // The node dials, and the rogue lies in its answer.
    let s = Setup::new(false);
    let why = s.rt.block_on(async {
        let (conn, mut stream) = s.dialled().await;
        stream.write_all(&hello_frame(impostor)).await.unwrap();
        closed_within(&conn, Duration::from_secs(10)).await
    });
    s.assert_liar_cut_off("dialled", why);
}

#[test]
fn a_connection_that_never_opens_its_stream_is_closed() {
    let s = Setup::new(true);
    let start = Instant::now();
    let why = s.rt.block_on(async {
        let conn = s.dial().await;
        closed_within(&conn, FIRST_STREAM_TIMEOUT + Duration::from_secs(5)).await
    });
    println!(
        "a connection with no stream was closed after {:?}: {why:?}",
        start.elapsed()
    );
    let why = why.expect("the node kept a connection that opened no stream");
    assert!(why.contains("no stream"), "{why}");
}

#[test]
fn a_peer_gets_a_few_connections_at_most() {
    let s = Setup::new(true);
    let extra = 3;
    let closed = s.rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_PEER + extra {
            conns.push(s.dial().await);
        }
        // Well within the first-stream timeout, which would close them all.
        let window = Duration::from_secs(2);
        assert!(window < FIRST_STREAM_TIMEOUT);
        let waits: Vec<_> = conns
            .iter()
            .cloned()
            .map(|c| tokio::spawn(async move { closed_within(&c, window).await }))
            .collect();
        let mut closed = Vec::new();
        for w in waits {
            closed.push(w.await.unwrap());
        }
        closed
    });
    println!("connections closed at once: {closed:?}");
    let (kept, over) = closed.split_at(MAX_CONNECTIONS_PER_PEER);
    assert!(kept.iter().all(Option::is_none), "{closed:?}");
    assert!(
        over.iter().all(|w| w
            .as_deref()
            .is_some_and(|w| w.contains("too many connections"))),
        "{closed:?}"
    );
}

#[test]
fn a_shutdown_tells_the_peer_why_with_answers_queued() {
    let s = Setup::new(false);
    // One chunk (a file under the chunker's minimum), asked for many
    // times: 4 MiB of answers queued when the node shuts down, ahead of
    // its goodbye.
    let data = bytes(7, 16 << 10);
    s.node.write("one-chunk", &data);
    let c = Hash::of(&data);
    let asked = MAX_BATCH;
    let (conn, mut stream) = s.rt.block_on(async {
        let (conn, mut stream) = s.answer().await;
        let get = encode(&Message::GetChunks(vec![c; asked])).unwrap();
        stream.write_all(&get).await.unwrap();
        // The first answer is here: the rest are made, waiting for us.
        loop {
            match read_frame(&mut stream).await.unwrap() {
                Some((Message::Chunk(_), _)) => break,
                Some(_) => continue,
                None => panic!("the node closed the stream"),
            }
        }
        (conn, stream)
    });
    // The peer reads on, as a node's session does, and closes the
    // connection once it reads the goodbye.
    let reader = s.rt.spawn(async move {
        let mut chunks = 1;
        loop {
            match read_frame(&mut stream).await {
                Ok(Some((Message::Abort(reason), _))) => {
                    conn.close("session ended");
                    return (chunks, Ok(reason));
                }
                Ok(Some((Message::Chunk(_), _))) => chunks += 1,
                Ok(Some(_)) => continue,
                Ok(None) => return (chunks, Err("the stream ended without a reason".into())),
                Err(e) => return (chunks, Err(e.to_string())),
            }
        }
    });
    let start = Instant::now();
    s.peers.shutdown();
    println!("shutdown took {:?}", start.elapsed());
    let (chunks, heard) = s.rt.block_on(reader).unwrap();
    println!("the peer read {chunks} of {asked} answers, then {heard:?}");
    assert_eq!(heard, Ok(AbortReason::Shutdown), "after {chunks} chunks");
}

#[test]
fn a_peer_whose_sessions_fail_is_not_redialled_in_a_loop() {
    let s = Setup::new(false);
    // Every session the node dials gets as far as both hellos (the node
    // shows the peer connected), then fails on the peer's side.
    let window = Duration::from_secs(4);
    let fail = |conn: Connection, mut stream: quic::Stream| async move {
        let abort = encode(&Message::Abort(AbortReason::Internal)).unwrap();
        let _ = stream.write_all(&abort).await;
        let _ = stream.shutdown().await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            conn.close("session ended");
        });
    };
    let (dials, again) = s.rt.block_on(async {
        let (conn, stream) = s.answer().await;
        fail(conn, stream).await;
        let start = Instant::now();
        let mut dials = 1;
        while let Ok((conn, stream)) =
            tokio::time::timeout(window.saturating_sub(start.elapsed()), s.answer()).await
        {
            dials += 1;
            fail(conn, stream).await;
        }
        // It backs off; it does not give up.
        let again = tokio::time::timeout(Duration::from_secs(40), s.answer()).await;
        (dials, again.is_ok())
    });
    println!("{dials} dials in {window:?}");
    // Backing off from 250 ms and doubling: 5 dials in 4 s at most (a
    // slow machine makes fewer, never more). Starting over after each
    // failed session made one every 250 ms or so.
    assert!(dials <= 6, "{dials} dials in {window:?}: no backoff");
    assert!(again, "the node stopped dialling its peer");
}
