//! Mirroring when things go wrong (DESIGN.md, "Replication", "Threats"):
//! an untrusted node is refused, a replica killed in the middle of a big
//! transfer resumes where it was, and concurrent edits while two nodes are
//! apart keep both versions. The nodes and waits are in
//! [`crate::mirror_util`].

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use crate::mirror_util::*;
use crate::mount_util::walk;

/// Lines of `log` that say a connection from `id` was refused.
fn refusals(log: &str, id: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("refusing") && l.contains(short(id)))
        .count()
}

/// A node whose key A does not trust (X trusts and dials A) gets nothing
/// in: A's tree never changes, A logs the refusal with X's id, and X never
/// shows A as connected.
#[test]
fn an_untrusted_node_is_refused() {
    let (a, mut x) = untrusted_dialler();
    let root_a = a.root();
    x.start(false);
    let x_started = Instant::now();
    let all: [&dyn Node; 2] = [&a, &x];

    wait_until(
        "A to log that it refused X",
        || refusals(&a.log(), &x.id) > 0,
        || describe_all(&all),
    );
    write_synced(&x.path("secret.txt"), b"from an untrusted node\n");
    let x_root = x.root();
    assert_ne!(
        x_root, root_a,
        "X's committed write did not change its root"
    );
    // Watch for a while: X keeps dialling with the file committed (at
    // least twice more) and A keeps refusing; stop early if X hammers A.
    const WATCH: Duration = Duration::from_secs(3);
    const HAMMER: usize = 40;
    let seen = refusals(&a.log(), &x.id);
    let mut x_saw_connected = 0;
    let mut samples = 0;
    let start = Instant::now();
    wait_until(
        "X to dial A (and be refused) twice more",
        || {
            if let Some(st) = status(x.store()) {
                samples += 1;
                if connected(&st, &a.id) {
                    x_saw_connected += 1;
                }
            }
            let n = refusals(&a.log(), &x.id);
            n >= HAMMER || (n >= seen + 2 && x_started.elapsed() >= WATCH)
        },
        || describe_all(&all),
    );
    let refused_total = refusals(&a.log(), &x.id);
    let since_start = x_started.elapsed();
    eprintln!(
        "untrusted X: A logged {refused_total} refusals of X in {:.2} s since X started \
         (the last {} in {:.2} s); X showed A connected in {x_saw_connected} of {samples} \
         status samples",
        since_start.as_secs_f64(),
        refused_total - seen,
        start.elapsed().as_secs_f64()
    );

    assert_eq!(a.root(), root_a, "A's root changed\n{}", describe_all(&all));
    assert!(!a.path("secret.txt").exists(), "X's file reached A's mount");
    let st_a = a.status();
    assert!(
        peer_in(&st_a, &x.id).is_none(),
        "A lists X as a peer: {st_a}"
    );
    let line = a
        .log()
        .lines()
        .find(|l| l.contains("refusing") && l.contains(short(&x.id)))
        .map(str::to_string)
        .unwrap();
    assert!(
        line.contains("not trusted") || line.contains("untrusted"),
        "{line}"
    );
    assert!(
        !a.log()
            .lines()
            .any(|l| l.contains("peer connected") && l.contains(short(&x.id))),
        "A logged X as connected\n{}",
        a.describe()
    );
    let st_x = x.status();
    let entry = peer_in(&st_x, &a.id).unwrap_or_else(|| panic!("X does not list A: {st_x}"));
    assert_eq!(entry["last_sync"], Value::Null, "X's view of A: {st_x}");

    // Collected, so that one run names every problem.
    let mut problems = Vec::new();
    // A refused peer is dialled again with a backoff (250 ms doubling to
    // 30 s), not in a tight loop: a handful of attempts in these seconds.
    if refused_total >= HAMMER {
        problems.push(format!(
            "X dialled the untrusting A {refused_total} times in {:.2} s: it redials at once \
             after a session that ends immediately, with no backoff",
            since_start.as_secs_f64()
        ));
    }
    if x_saw_connected > 0 || entry["connected"] != Value::Bool(false) {
        problems.push(format!(
            "X's status showed the untrusting A as connected in {x_saw_connected} of {samples} \
             samples (and now: {})",
            entry["connected"]
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        x.describe()
    );
}

/// The length of the files under `dir`.
fn dir_len(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => total += dir_len(&entry.path()),
            Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
            _ => {}
        }
    }
    total
}

/// The number `key=N` in a log line.
fn log_number(line: &str, key: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// `kill -9` of a replica in the middle of a 200 MiB transfer: it starts
/// again on the same store, fetches only what it lacks, and converges to
/// an identical export.
#[test]
fn a_replica_killed_mid_transfer_resumes_and_converges() {
    const FILES: usize = 50;
    const FILE_LEN: usize = 4 << 20;
    const TOTAL: u64 = (FILES * FILE_LEN) as u64;
    let mut a = MountNode::init("A");
    a.start(true);
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x6261_636b_6572);
    let mut buf = vec![0u8; FILE_LEN];
    for i in 0..FILES {
        if i % 10 == 0 {
            fs::create_dir(a.path(&format!("d{}", i / 10))).unwrap();
        }
        rng.fill_bytes(&mut buf);
        fs::write(a.path(&format!("d{}/f{i:02}.bin", i / 10)), &buf).unwrap();
    }
    fsync(&a.path("d0/f00.bin"));
    let root_a = a.root();
    eprintln!(
        "200 MiB written into A's mount in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let mut r = ReplicaNode::init("R");
    r.add_peer(&a.id, Some(&a.addr));
    a.add_peer(&r.id, None);
    let start = Instant::now();
    r.spawn();
    // Kill once half of the chunks have arrived (the replica's pack files
    // grow as they come) and the pull has not ended.
    let packs = r.store.dir().join("packs");
    let mut held = 0;
    wait_every(
        "the replica to receive half of the chunks",
        Duration::from_millis(2),
        &mut || {
            held = dir_len(&packs);
            held > TOTAL / 2
        },
        &|| describe_all(&[&a, &r]),
    );
    r.kill9();
    let in_transfer = start.elapsed();
    let after_kill = dir_len(&packs);
    let st = status(&r.store).expect("status of the stopped replica");
    assert_ne!(
        root_of(&st).as_ref(),
        Some(&root_a),
        "the transfer ended before the replica could be killed"
    );
    eprintln!(
        "replica killed {:.2} s into the transfer with {} MiB of packs ({} MiB after the kill)",
        in_transfer.as_secs_f64(),
        held >> 20,
        after_kill >> 20
    );

    // The store opens again and the transfer completes.
    let start = Instant::now();
    r.start();
    wait_until(
        "the restarted replica to reach A's root",
        || status(&r.store).and_then(|s| root_of(&s)).as_ref() == Some(&root_a),
        || describe_all(&[&a, &r]),
    );
    let resumed = start.elapsed();
    assert_eq!(r.stop(), Some(0), "the replica's exit\n{}", r.describe());
    // What the restart fetched: A logs the bytes it sent when the
    // replica's second session ends (the first one ended when A noticed
    // the killed replica was gone).
    let sessions_over = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("peer disconnected") && l.contains(short(&r.id)))
            .filter_map(|l| log_number(l, "sent"))
            .collect()
    };
    wait_until(
        "A to log the end of both sessions with the replica",
        || sessions_over(&a.log()).len() >= 2,
        || describe_all(&[&a, &r]),
    );
    let sent = sessions_over(&a.log());
    eprintln!(
        "restart: converged in {:.2} s; A sent {} MiB before the kill and {} MiB after the \
         restart, of {} MiB; the replica's packs now hold {} MiB",
        resumed.as_secs_f64(),
        sent[0] >> 20,
        sent[1] >> 20,
        TOTAL >> 20,
        dir_len(&packs) >> 20,
    );

    // The same files, bytes and modes (mtimes: see the source tree test).
    let out = a.m.root().join("export");
    let run = backer(&r.store, &["export", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "export: {run:#?}");
    assert_same_tree(a.dir(), &out);

    // Collected, so that one run names every problem.
    let mut problems = Vec::new();
    // What was stored before the kill is not fetched again (allowing
    // for what the store had not yet made durable).
    if sent[1] >= TOTAL - TOTAL / 8 {
        problems.push(format!(
            "the restarted replica fetched {} bytes of {TOTAL}: (nearly) everything again \
             although its packs held {after_kill} bytes after the kill (they now hold {})",
            sent[1],
            dir_len(&packs)
        ));
    }
    // The restarted replica must not wait for A to time out the killed
    // one's connection (QUIC idle timeout, 30 s) to sync again.
    if resumed > Duration::from_secs(15) {
        problems.push(format!(
            "the restarted replica took {:.1} s to converge: A kept the dead session of the \
             killed replica and closed every new connection from it as a duplicate until \
             the old one timed out",
            resumed.as_secs_f64()
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        describe_all(&[&a, &r])
    );
}

/// `name.sync-conflict-YYYYMMDD-HHMMSS-<short id>.ext` of a time in Unix
/// seconds (UTC).
fn conflict_name(stem: &str, ext: &str, secs: i64, author: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{stem}.sync-conflict-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{}.{ext}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        short(author)
    )
}

/// Names in the root of a mount that contain `.sync-conflict-`.
fn conflict_copies(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.contains(".sync-conflict-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Concurrent edits of one file on two mounts while they are apart: once
/// they meet again, both versions are on both nodes, the loser as a
/// conflict copy named the same everywhere.
#[test]
fn concurrent_edits_while_apart_keep_both_versions() {
    let (a, b) = mounted_pair();
    let all: [&dyn Node; 2] = [&a, &b];

    // A common ancestor on both.
    write_synced(&a.path("notes.txt"), b"the common ancestor\n");
    wait_until(
        "the ancestor to reach B",
        || fs::read(b.path("notes.txt")).is_ok_and(|d| d == b"the common ancestor\n"),
        || describe_all(&all),
    );
    wait_same_root("A and B to agree on the ancestor", &all);

    // Apart: each forgets the other (a reload while running).
    a.remove_peer(&b.id);
    b.remove_peer(&a.id);
    wait_until(
        "A and B to drop each other",
        || {
            let (sa, sb) = (status(a.store()), status(b.store()));
            sa.is_some_and(|s| peer_in(&s, &b.id).is_none())
                && sb.is_some_and(|s| peer_in(&s, &a.id).is_none())
        },
        || describe_all(&all),
    );
    let va = b"edited on A while apart\n".repeat(3);
    let vb = b"edited on B while apart: a different length\n".to_vec();
    write_synced(&a.path("notes.txt"), &va);
    write_synced(&b.path("notes.txt"), &vb);
    assert_ne!(a.root(), b.root());

    // Together again.
    a.add_peer(&b.id, Some(&b.addr));
    b.add_peer(&a.id, Some(&a.addr));
    let root = {
        let mut root = String::new();
        wait_until(
            "A and B to merge into one root with a conflict copy",
            || {
                let both =
                    !conflict_copies(a.dir()).is_empty() && !conflict_copies(b.dir()).is_empty();
                both && {
                    let ra = status(a.store()).and_then(|s| root_of(&s));
                    let rb = status(b.store()).and_then(|s| root_of(&s));
                    root = ra.clone().unwrap_or_default();
                    ra.is_some() && ra == rb
                }
            },
            || {
                format!(
                    "A holds {:?}, B holds {:?}\n{}",
                    walk(a.dir()),
                    walk(b.dir()),
                    describe_all(&all)
                )
            },
        );
        root
    };

    let copies = conflict_copies(a.dir());
    assert_eq!(copies.len(), 1, "A: {copies:?}");
    assert_eq!(conflict_copies(b.dir()), copies, "the same copy on both");
    let copy = &copies[0];
    for node in [&a, &b] {
        let names: Vec<PathBuf> = walk(node.dir());
        assert_eq!(
            names,
            vec![PathBuf::from(copy), PathBuf::from("notes.txt")],
            "{}",
            node.name
        );
    }
    let winner = fs::read(a.path("notes.txt")).unwrap();
    let loser = fs::read(a.path(copy)).unwrap();
    assert_eq!(fs::read(b.path("notes.txt")).unwrap(), winner);
    assert_eq!(fs::read(b.path(copy)).unwrap(), loser);
    let (lost_on, won_on) = if winner == va {
        assert_eq!(loser, vb, "the conflict copy holds B's version");
        (&b, &a)
    } else {
        assert_eq!(winner, vb, "notes.txt holds neither version");
        assert_eq!(loser, va, "the conflict copy holds A's version");
        (&a, &b)
    };
    // The name: the losing version's mtime (UTC) and its author's short id.
    let mtime = fs::symlink_metadata(a.path(copy)).unwrap().mtime();
    assert_eq!(
        copy,
        &conflict_name("notes", "txt", mtime, &lost_on.id),
        "conflict copy name (the loser is {}'s version)",
        lost_on.name
    );
    eprintln!(
        "conflict: {} kept notes.txt, {}'s version is {copy}; root {}",
        won_on.name,
        lost_on.name,
        &root[..12.min(root.len())]
    );
}
