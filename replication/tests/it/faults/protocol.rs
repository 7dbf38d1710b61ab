//! Bad frames and protocol violations: oversized, truncated and unknown
//! frames, messages out of place, too many requests, and incompatible
//! hellos.

use super::*;

// ---------------------------------------------------------------------------
// Frames.

/// One malformed stream: what the fake sends, and what the victim must do.
struct FrameCase {
    what: &'static str,
    /// Send a valid hello first.
    hello: bool,
    raw: Vec<u8>,
    /// Then end the stream.
    close: bool,
    error: fn(&Error) -> bool,
    /// What the victim tells us (`None`: a broken stream gets no answer).
    abort: Option<AbortReason>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_truncated_and_unknown_frames_end_the_session() {
    let with_tail = |prefix: [u8; 4]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(&[0; 64]);
        v
    };
    let root_frame = proto::encode(&Message::Root(Hash([9; 32]))).unwrap();
    let mut trailing = proto::encode(&Message::Missing).unwrap();
    trailing[3] += 1;
    trailing.push(0);
    let too_large: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::TooLarge(_)));
    let truncated: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::Truncated));
    let malformed: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::Malformed(_)));
    let protocol = Some(AbortReason::Protocol);
    let case = |what, hello, raw, close, error, abort| FrameCase {
        what,
        hello,
        raw,
        close,
        error,
        abort,
    };
    let cases = [
        case(
            "a 4 GiB frame",
            true,
            with_tail([0xff; 4]),
            false,
            too_large,
            protocol,
        ),
        case(
            "a 4 GiB frame first",
            false,
            with_tail([0xff; 4]),
            false,
            too_large,
            protocol,
        ),
        case(
            "MAX_FRAME + 1",
            true,
            with_tail(((MAX_FRAME + 1) as u32).to_be_bytes()),
            false,
            too_large,
            protocol,
        ),
        case(
            "half a frame, then the end",
            true,
            root_frame[..20].to_vec(),
            true,
            truncated,
            None,
        ),
        case(
            "half a prefix, then the end",
            true,
            root_frame[..2].to_vec(),
            true,
            truncated,
            None,
        ),
        case(
            "an unknown message",
            true,
            vec![0, 0, 0, 1, 200],
            false,
            malformed,
            protocol,
        ),
        case("trailing bytes", true, trailing, false, malformed, protocol),
    ];
    for c in cases {
        let what = c.what;
        let (v, root) = victim();
        let nodes = all_of(&v, Space::Nodes).len();
        let (hello, raw, close) = (c.hello, c.raw, c.close);
        let (out, got) = attack(&v, what, |mut f| async move {
            if hello {
                f.hello().await;
            }
            f.send_raw(&raw).await;
            if close {
                f.close().await;
            }
            f
        })
        .await;
        match &out.result {
            Err(e) if (c.error)(e) => {}
            other => panic!("{what}: {other:?}"),
        }
        match c.abort {
            Some(r) => assert_aborted(&got, r, what),
            None => assert!(
                !got.iter().any(|m| matches!(m, Message::Abort(_))),
                "{what}: {got:?}"
            ),
        }
        assert_eq!(all_of(&v, Space::Nodes).len(), nodes, "{what}");
        assert_recovers(&v, root, what).await;
    }
}

// ---------------------------------------------------------------------------
// Protocol violations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_out_of_place_are_protocol_violations() {
    let (sub_hash, sub) = leaf(&[symlink(b"s")]);
    let (top_hash, top) = leaf(&[subdir(b"sub", sub_hash)]);
    assert!(dir::verify_node(&sub_hash, &sub) && dir::verify_node(&top_hash, &top));

    // Before the hello.
    let (v, root) = victim();
    let (out, got) = attack(&v, "a root before the hello", |mut f| async move {
        f.send(&Message::Root(Hash([1; 32]))).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, "a root before the hello");
    assert_recovers(&v, root, "a root before the hello").await;

    // A second hello.
    let (v, root) = victim();
    let (out, got) = attack(&v, "a second hello", |mut f| async move {
        f.hello().await;
        f.hello().await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, "a second hello");
    assert_recovers(&v, root, "a second hello").await;

    // Answers nobody asked for: no pull under way.
    for answer in [
        Message::DirNode(top.clone()),
        Message::Chunk(b"unasked".to_vec()),
        Message::Missing,
    ] {
        let what = format!("an unasked {}", answer.kind());
        let (v, root) = victim();
        let (out, got) = attack(&v, &what, |mut f| async move {
            f.hello().await;
            f.send(&Message::Root(root)).await;
            f.send(&answer).await;
            f
        })
        .await;
        assert!(
            matches!(out.result, Err(Error::Protocol(_))),
            "{what}: {:?}",
            out.result
        );
        assert_aborted(&got, AbortReason::Protocol, &what);
        assert!(!holds(&v, &top_hash), "{what}");
        assert_recovers(&v, root, &what).await;
    }

    // One answer too many, right after a pull completed.
    let (v, root) = victim();
    let what = "one answer too many";
    let (top2, sub2) = (top.clone(), sub.clone());
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(top_hash)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![top_hash]));
        f.send(&Message::DirNode(top2)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![sub_hash]));
        f.send(&Message::DirNode(sub2.clone())).await;
        f.send(&Message::DirNode(sub2)).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    // The pull was complete and verified, so it was merged before the
    // extra answer came.
    assert_ne!(v.root(), root, "{what}");
    assert_eq!(v.list("sub"), vec!["s"], "{what}");
    assert_recovers(&v, v.root(), what).await;

    // The wrong kind of answer.
    let (v, root) = victim();
    let what = "a chunk for a directory node";
    let as_chunk = top.clone();
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(top_hash)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![top_hash]));
        f.send(&Message::Chunk(as_chunk)).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    assert!(
        !holds(&v, &top_hash) && !holds(&v, &Hash::of(&top)),
        "{what}"
    );
    assert_recovers(&v, root, what).await;

    // A request for too many items at once.
    let (v, root) = victim();
    let what = "a request over MAX_BATCH";
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(root)).await;
        f.send(&Message::GetChunks(vec![Hash([3; 32]); MAX_BATCH + 1]))
            .await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    assert_recovers(&v, root, what).await;
}

/// A victim holding one small file of one chunk: the node, its root and
/// the chunk's hash.
fn victim_with_a_chunk() -> (Node, Hash, Hash) {
    let v = Node::new();
    let data = bytes(600, 1024);
    v.write("small.bin", &data);
    let c = Hash::of(&data);
    assert!(v.local().has_chunk(&c).unwrap());
    let root = v.root();
    (v, root, c)
}

/// proto.rs: "The most items a peer may have asked for and not yet been
/// answered. A peer that asks for more is cut off (it would make us queue
/// without bound)." Here the peer asks for twice that and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_asks_for_more_than_max_outstanding_without_reading_is_cut_off() {
    let (v, root, c) = victim_with_a_chunk();
    // A small pipe, so the victim's answers back up at once.
    let (x, y) = tokio::io::duplex(64 << 10);
    let session = tokio::spawn(run(x, v.local(), v.hello(), once(), Channels::default()));
    let (mut rd, mut wr) = tokio::io::split(y);
    let requests = 2 * MAX_OUTSTANDING / MAX_BATCH;
    let writer = tokio::spawn(async move {
        let mut frames = proto::encode(&Message::Hello(fake_hello())).unwrap();
        frames.extend(proto::encode(&Message::Root(root)).unwrap());
        let get = proto::encode(&Message::GetChunks(vec![c; MAX_BATCH])).unwrap();
        for _ in 0..requests {
            frames.extend_from_slice(&get);
        }
        // Every request goes out before we read a single answer.
        let sent = wr.write_all(&frames).await.is_ok();
        let _ = wr.shutdown().await;
        sent
    });
    let (sent, got, out) = guard("a flood of requests", async {
        let sent = writer.await.unwrap();
        let mut got = Vec::new();
        while let Ok(Some((m, _))) = read_frame(&mut rd).await {
            got.push(m);
        }
        (sent, got, session.await.unwrap())
    })
    .await;
    let served = out.report.stats.items_served;
    println!(
        "{requests} requests of {MAX_BATCH} written in full: {sent}; the victim served {served} items and ended with {:?}",
        out.result
    );
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "the victim should cut off the peer, not queue its requests: {:?} after serving {served} items",
        out.result
    );
    assert!(served <= MAX_OUTSTANDING as u64, "{served} items served");
    // The answers may have filled the pipe: a victim that drops the
    // connection need not get its Abort through, but may say no other.
    assert!(
        got.iter()
            .all(|m| !matches!(m, Message::Abort(r) if *r != AbortReason::Protocol)),
        "{:?}",
        got.last()
    );
}

/// A peer that asks within the limits but never reads the answers (and
/// never closes) is cut off once our writes make no progress for the
/// session's stall limit, instead of holding the session forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off() {
    let (v, root, c) = victim_with_a_chunk();
    // A small pipe, so the victim's answers back up at once.
    let (x, y) = tokio::io::duplex(64 << 10);
    let limit = Duration::from_millis(500);
    let ch = Channels {
        write_stall: Some(limit),
        ..Channels::default()
    };
    let session = tokio::spawn(run(x, v.local(), v.hello(), once(), ch));
    let (_rd, mut wr) = tokio::io::split(y);
    let mut frames = proto::encode(&Message::Hello(fake_hello())).unwrap();
    frames.extend(proto::encode(&Message::Root(root)).unwrap());
    let get = proto::encode(&Message::GetChunks(vec![c; MAX_BATCH])).unwrap();
    for _ in 0..MAX_OUTSTANDING / MAX_BATCH {
        frames.extend_from_slice(&get);
    }
    wr.write_all(&frames).await.unwrap();
    // Never read, never close: only the stall limit ends this.
    let out = tokio::time::timeout(Duration::from_secs(20), session)
        .await
        .expect("a peer that does not read held the session")
        .unwrap();
    println!("the victim ended with {:?}", out.result);
    assert!(
        matches!(out.result, Err(Error::Stalled(d)) if d == limit),
        "{:?}",
        out.result
    );
    drop(wr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_hello_is_refused() {
    let cases = [
        ("another chunker", Incompatible::Chunker),
        (
            "another protocol version",
            Incompatible::ProtocolVersion {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1,
            },
        ),
        ("ourselves", Incompatible::SameNode),
    ];
    for (what, expected) in cases {
        let (v, root) = victim();
        let mut hello = fake_hello();
        match expected {
            Incompatible::Chunker => hello.chunker_fingerprint = b"fastcdc 8k/32k/128k".to_vec(),
            Incompatible::ProtocolVersion { theirs, .. } => hello.protocol_version = theirs,
            Incompatible::SameNode => hello.node = v.vfs.store().node_id(),
        }
        let (out, got) = attack(&v, what, |mut f| async move {
            f.send(&Message::Hello(hello)).await;
            f.send(&Message::Root(Hash([5; 32]))).await;
            f
        })
        .await;
        match &out.result {
            Err(Error::Incompatible(i)) if *i == expected => {}
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(out.report.peer, None, "{what}");
        assert_aborted(&got, AbortReason::Incompatible, what);
        assert_recovers(&v, root, what).await;
    }
}
