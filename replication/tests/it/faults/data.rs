//! Bad data from a peer: items that do not hash to what was asked,
//! roots a peer cannot serve, and names no tree may hold.

use super::*;

// ---------------------------------------------------------------------------
// Bogus hashes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_or_chunk_that_does_not_hash_to_what_was_asked_is_refused_and_not_stored() {
    let src = Node::new();
    src.write("d/f.bin", &bytes(300, 400_000));
    src.write("d/e/g.txt", b"deep");
    src.write("top.txt", b"top");
    let src_root = src.root();
    // (kind, which one of that kind, how): flip a byte, or send another
    // valid node (of `src`'s root) in its place.
    let cases: [(Ask, usize, bool); 5] = [
        (Ask::Dir, 0, true),
        (Ask::Dir, 1, true),
        (Ask::Dir, 1, false),
        (Ask::Content, 0, true),
        (Ask::Chunk, 2, true),
    ];
    for (ask, nth, flip) in cases {
        let what = format!("{ask:?} #{nth}, flip {flip}");
        let (v, root) = victim();
        let mut seen = 0;
        let tampered = std::sync::Mutex::new(None::<(Hash, Vec<u8>)>);
        let (out, got) = attack(&v, &what, |mut f| {
            let tampered = &tampered;
            let src = &src;
            async move {
                f.hello().await;
                f.send(&Message::Root(src_root)).await;
                f.serve(|k, h| {
                    let msg = answer_from(src, k, h);
                    if k != ask {
                        return msg;
                    }
                    seen += 1;
                    if seen != nth + 1 {
                        return msg;
                    }
                    let bogus = if flip {
                        let (Message::DirNode(mut b)
                        | Message::ContentNode(mut b)
                        | Message::Chunk(mut b)) = msg
                        else {
                            panic!("src lacks {h}")
                        };
                        let i = b.len() / 2;
                        b[i] ^= 0x20;
                        b
                    } else {
                        src.local().node(&src_root).unwrap().unwrap()
                    };
                    *tampered.lock().unwrap() = Some((h, bogus.clone()));
                    match k {
                        Ask::Dir => Message::DirNode(bogus),
                        Ask::Content => Message::ContentNode(bogus),
                        Ask::Chunk => Message::Chunk(bogus),
                    }
                })
                .await;
                f
            }
        })
        .await;
        assert!(
            matches!(out.result, Err(Error::BadData(_))),
            "{what}: {:?}",
            out.result
        );
        assert_aborted(&got, AbortReason::BadData, &what);
        let (h, bogus) = tampered
            .into_inner()
            .unwrap()
            .expect("nothing was tampered with");
        assert!(
            !holds(&v, &h),
            "{what}: the victim stored something under {h}"
        );
        for h in [
            Hash::of(&bogus),
            Hash::of_domain(DIR_NODE_DOMAIN, &bogus),
            Hash::of_domain("backer-content-node", &bogus),
        ] {
            if flip {
                assert!(!holds(&v, &h), "{what}: the bogus bytes were stored as {h}");
            }
        }
        assert_recovers(&v, root, &what).await;
    }
}

/// A pull that fails (the peer answered `Missing`) can never finish a
/// one-shot session: nobody will announce another root. It must end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announces_a_root_it_cannot_serve_ends_a_one_shot_session() {
    let (v, root) = victim();
    let bogus = Hash([0x42; 32]);
    let what = "a bogus root";
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(bogus)).await;
        let (ask, hashes) = f.request().await;
        assert_eq!((ask, hashes), (Ask::Dir, vec![bogus]));
        f.send(&Message::Missing).await;
        // An honest but broken peer stays, waiting for our Done.
        f.drain().await;
        f
    })
    .await;
    assert!(out.result.is_err(), "{what}: {:?}", out.result);
    assert!(
        matches!(got.last(), Some(Message::Abort(_))),
        "{what}: the victim should say why it closes; it sent {got:?}"
    );
    assert!(!holds(&v, &bogus));
    assert_recovers(&v, root, what).await;
}

/// Two real nodes: `a` announces a tree one of whose chunks it no longer
/// holds. It answers `Missing` for that chunk and the session goes on:
/// `b` converges on everything else, records the chunk as missing (and
/// reads of the file give an error, never wrong bytes); a chunk stored
/// later clears the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_store_lost_a_chunk_is_converged_on_and_the_chunk_recorded_missing() {
    let (a, b) = (Node::new(), Node::new());
    a.write("f.bin", &bytes(400, 300_000));
    a.write("g.bin", &bytes(401, 200_000));
    let a_root = a.root();
    // Damage a's store: one chunk of f.bin is no longer indexed.
    let lost = backer_fs::chunk::chunks(&bytes(400, 300_000))[0].hash;
    assert!(chunk_set(&a).contains(&lost));
    let mut batch = Batch::default();
    batch.remove(Space::Chunks, lost.as_bytes().to_vec());
    a.vfs.store().kv().apply(batch).unwrap();
    let (oa, ob) = guard("a sync with a peer that lost a chunk", sync(&a, &b)).await;
    assert!(ob.result.is_ok(), "b: {:?}", ob.result);
    assert!(oa.result.is_ok(), "a: {:?}", oa.result);
    assert_eq!(b.root(), a_root);
    assert_eq!(b.vfs.store().missing_chunks().unwrap(), vec![lost]);
    let read = |path: &str| {
        let ino = b.lookup(path).unwrap();
        let fh = b.vfs.files().open(ino, false, false).unwrap();
        b.vfs.files().read(fh, 0, 1 << 20)
    };
    assert_eq!(read("g.bin").unwrap(), bytes(401, 200_000));
    let err = read("f.bin").unwrap_err();
    assert!(
        matches!(err, backer_fs::Error::BadChunk(h) if h == lost),
        "{err}"
    );
    assert_all_verified(&b, "after a pull with a missing chunk");
}

// ---------------------------------------------------------------------------
// Bad names.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_a_slash_nul_dot_dotdot_or_over_255_bytes_are_refused_and_not_stored() {
    let ok = leaf(&[symlink(&[b'n'; 255])]);
    assert!(dir::verify_node(&ok.0, &ok.1), "the node encoding is ours");
    let long = vec![b'n'; 256];
    let bad: [&[u8]; 7] = [b"a/b", b"/", b"..", b".", b"x\0y", &long, b""];
    for name in bad {
        // At the root, and one directory down.
        for depth in 0..2 {
            let what = format!("{:?} at depth {depth}", String::from_utf8_lossy(name));
            let (bad_hash, bad_node) = leaf(&[symlink(b"fine"), symlink(name)]);
            assert!(!dir::verify_node(&bad_hash, &bad_node), "{what}");
            let (top_hash, top_node) = leaf(&[subdir(b"sub", bad_hash)]);
            let nodes = if depth == 0 {
                vec![(bad_hash, bad_node)]
            } else {
                vec![(top_hash, top_node), (bad_hash, bad_node)]
            };
            let (v, root) = victim();
            let (out, got) = serve_tree(&v, &what, nodes).await;
            assert!(
                matches!(out.result, Err(Error::BadData(_))),
                "{what}: {:?}",
                out.result
            );
            assert_aborted(&got, AbortReason::BadData, &what);
            assert!(!holds(&v, &bad_hash), "{what}: the bad node was stored");
            assert_recovers(&v, root, &what).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserved_name_at_the_root_is_refused_and_never_merged() {
    let (hash, node) = leaf(&[symlink(b".backer")]);
    assert!(
        dir::verify_node(&hash, &node),
        "well-formed: only its place is wrong"
    );
    let (v, root) = victim();
    let names = v.list("");
    let what = "a .backer entry at the root";
    let (out, got) = serve_tree(&v, what, vec![(hash, node)]).await;
    assert!(
        matches!(out.result, Err(Error::BadData(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::BadData, what);
    assert_eq!(v.root(), root);
    assert_eq!(v.list(""), names);
    let tree = dir::entries(&LocalNodes(&v.local()), v.root()).unwrap();
    assert!(tree.iter().all(|e| e.name != b".backer"), "{tree:?}");
    assert_recovers(&v, root, what).await;
}
