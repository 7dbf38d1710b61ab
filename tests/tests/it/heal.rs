//! Heal from peers (DESIGN.md, "Integrity"): a chunk whose copy here is
//! damaged is fetched again by hash from a connected peer that holds it.
//! A read through the mount that meets it waits for the heal and gets the
//! right bytes, while the rest of the mount keeps answering; `check
//! --repair` heals through the running node; a node serving a pull heals
//! itself from a third node, and the puller gets the chunk from it then.

use std::path::Path;

use serde_json::Value;

use crate::integrity::{damage_first_chunk, data};
use crate::mirror_util::{
    backer, describe_all, wait_connected, wait_same_root, wait_until, write_synced, MountNode,
    Node, ReplicaNode,
};
use crate::mount_util::signal;

/// Two nodes peered with each other, `a` mounted, `b` a replica, both
/// holding `files`; then `a` is stopped, the first chunk of each file in
/// `damaged` flipped in its packs, and `a` started again (connected to
/// `b`). Returns the damaged chunks' hashes.
fn damaged_pair(
    a: &mut MountNode,
    b: &mut ReplicaNode,
    files: &[(&str, &[u8])],
    damaged: &[&[u8]],
) -> Vec<String> {
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    a.start(true);
    b.start();
    for (name, bytes) in files {
        write_synced(&a.path(name), bytes);
    }
    wait_same_root("B to hold A's files", &[&*a as &dyn Node, &*b]);
    a.m.unmount();
    let bad = damaged
        .iter()
        .map(|c| damage_first_chunk(&a.store().dir(), c))
        .collect();
    a.start(true);
    wait_connected(&*a, &*b, &[&*a, &*b]);
    bad
}

fn check_json(store_of: &dyn Node, args: &[&str]) -> (Option<i32>, Value) {
    let run = backer(store_of.store(), args);
    let v = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{}: {e}: {run:#?}", store_of.name()));
    (run.code, v)
}

#[test]
fn a_read_of_a_damaged_chunk_heals_from_the_peer_and_check_repair_heals_the_rest() {
    let (f, g) = (data(700_000, 21), data(400_000, 22));
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let bad = damaged_pair(&mut a, &mut b, &[("f.bin", &f), ("g.bin", &g)], &[&f, &g]);
    let all: [&dyn Node; 2] = [&a, &b];

    // The read waits for the heal and gets the right bytes.
    let got = std::fs::read(a.path("f.bin")).expect("a read of a healed file");
    assert!(got == f, "f.bin came back wrong after the heal");
    let log = a.log();
    assert!(
        log.contains("healed") && log.contains(&bad[0]),
        "A's log does not say it healed {}\n{}",
        bad[0],
        describe_all(&all)
    );

    // g.bin's chunk is still damaged on disk: check finds it, the repair
    // heals it from B through the running node.
    let (code, r) = check_json(&a, &["check", "--json"]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["bad_chunks"], serde_json::json!([bad[1]]), "{r}");
    let run = backer(a.store(), &["check", "--repair"]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", describe_all(&all));
    assert!(
        run.stdout.contains("repaired: healed from peers: 1") && run.stdout.contains(&bad[1]),
        "{run:#?}"
    );
    let run = backer(a.store(), &["check"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(std::fs::read(a.path("g.bin")).unwrap() == g, "g.bin wrong");
    let st = a.status();
    assert_eq!(st["missing_chunks"], serde_json::json!([]), "{st}");
}

#[test]
fn a_read_waiting_for_a_heal_freezes_nothing_and_without_a_peer_it_is_eio() {
    let (f, g) = (data(700_000, 31), data(300_000, 32));
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let bad = damaged_pair(&mut a, &mut b, &[("f.bin", &f), ("g.bin", &g)], &[&f]);
    let all: [&dyn Node; 2] = [&a, &b];

    // B connected but frozen: A's request for the chunk goes unanswered,
    // so a read of f.bin waits (up to its bound) for the heal.
    signal(b.pid(), libc::SIGSTOP);
    let path = a.path("f.bin");
    let reader = std::thread::spawn(move || std::fs::read(path));
    wait_until(
        "A's read to wait for the heal",
        || a.log().contains("a read waits for a chunk's heal"),
        || describe_all(&all),
    );
    // Meanwhile the same mount answers: a listing, a stat, another file.
    let names: Vec<_> = std::fs::read_dir(a.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.iter().any(|n| n == "g.bin"), "{names:?}");
    assert_eq!(std::fs::metadata(a.path("f.bin")).unwrap().len(), 700_000);
    assert!(std::fs::read(a.path("g.bin")).unwrap() == g);
    assert!(
        !reader.is_finished(),
        "the read did not wait for the heal:\n{}",
        describe_all(&all)
    );
    signal(b.pid(), libc::SIGCONT);
    // Healed in time, or EIO at its bound: never a wrong byte.
    match reader.join().unwrap() {
        Ok(got) => assert!(got == f, "f.bin came back wrong"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }

    // No peer at all: a damaged chunk is EIO at once, no wait.
    b.stop();
    a.m.unmount();
    let bad_g = damage_first_chunk(&a.store().dir(), &g);
    a.start(true);
    let waits = |log: &str| log.matches("a read waits for a chunk's heal").count();
    let before = waits(&a.log());
    let err = std::fs::read(a.path("g.bin")).expect_err("a damaged chunk, no peer");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(waits(&a.log()), before, "a read waited with no peer");
    assert!(a.log().contains(&bad_g));
    let _ = bad;
}

#[test]
fn a_serving_node_with_a_bad_chunk_heals_from_a_third_and_the_fresh_replica_converges() {
    let (f, g) = (data(700_000, 41), data(300_000, 42));
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let bad = damaged_pair(&mut a, &mut b, &[("f.bin", &f), ("g.bin", &g)], &[&f]);

    // C knows only A.
    let mut c = ReplicaNode::init("C");
    a.add_peer(&c.id, Some(&c.addr));
    c.add_peer(&a.id, Some(&a.addr));
    c.start();
    let all: [&dyn Node; 3] = [&a, &b, &c];
    wait_same_root("C to converge on A", &all);
    let missing = |n: &dyn Node| n.status()["missing_chunks"].clone();
    wait_until(
        "A and C to hold every chunk (A healed from B, C from A)",
        || missing(&a) == serde_json::json!([]) && missing(&c) == serde_json::json!([]),
        || describe_all(&all),
    );
    assert!(a.log().contains(&bad[0]), "A never met its bad chunk");
    for n in [&a as &dyn Node, &c] {
        let run = backer(n.store(), &["check"]);
        assert_eq!(run.code, Some(0), "{}: {run:#?}", n.name());
    }
    let out = c.store.dir().parent().unwrap().join("export");
    backer(&c.store, &["export", out.to_str().unwrap()]).assert_success();
    assert!(std::fs::read(Path::new(&out).join("f.bin")).unwrap() == f);
}

#[test]
fn the_background_scrub_finds_a_damaged_chunk_and_heals_it_from_the_peer() {
    let (f, g) = (data(500_000, 51), data(200_000, 52));
    let mut a = MountNode::init("A");
    let mut b = ReplicaNode::init("B");
    let cfg = a.store().dir().join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap_or_default();
    text.push_str("\n[check]\nscrub_every = \"2s\"\n");
    std::fs::write(&cfg, text).unwrap();
    let bad = damaged_pair(&mut a, &mut b, &[("f.bin", &f), ("g.bin", &g)], &[&g]);
    let all: [&dyn Node; 2] = [&a, &b];
    let ev = crate::events::Follower::start(a.store().backer());
    // No read touches g.bin: the scrub alone finds the damage.
    let (e, _) = ev.wait_for("CheckDone naming the damaged chunk", |e| {
        e["type"] == "CheckDone"
            && e["data"]["bad_chunks"]
                .as_array()
                .is_some_and(|l| l.iter().any(|h| h == bad[0].as_str()))
    });
    assert!(e["data"]["chunks"].as_u64() > Some(0), "{e}");
    wait_until(
        "A to heal what its scrub found",
        || backer(a.store(), &["check"]).code == Some(0),
        || describe_all(&all),
    );
    let st = a.status();
    assert!(st["scrub"]["last"].as_u64().is_some(), "{st}");
    assert!(st["scrub"]["next"].as_u64().is_some(), "{st}");
    assert!(std::fs::read(a.path("g.bin")).unwrap() == g);
}
