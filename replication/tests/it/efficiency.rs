//! Efficiency, counted not timed: messages, rounds and bytes on the wire.
//! Run with `--nocapture` to see the figures.

use crate::util::*;

const MIB: usize = 1 << 20;
/// FastCDC's largest chunk.
const MAX_CHUNK: u64 = 256 * 1024;

/// 10,000 files in 100 directories of 100 (plus one deep path).
fn ten_thousand(a: &Node) {
    for d in 0..100 {
        for f in 0..100 {
            a.write(
                &format!("d{d:02}/f{f:02}.txt"),
                format!("file {d} {f}").as_bytes(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_stores_of_10k_files_exchange_one_round_trip_under_1_kib() {
    let (a, b) = (Node::new(), Node::new());
    ten_thousand(&a);
    a.write("x/y/z/deep.txt", b"deep");
    sync_ok(&a, &b).await;
    assert_eq!(a.snapshot("d42"), b.snapshot("d42"));

    let (oa, ob) = sync_ok(&a, &b).await;
    let total = oa.report.sent.bytes + ob.report.sent.bytes;
    println!(
        "in sync, 10,001 files: {} + {} messages, {total} bytes in all, {} pulls",
        oa.report.sent.messages, ob.report.sent.messages, oa.report.stats.pulls
    );
    for o in [&oa, &ob] {
        assert_eq!(o.report.sent.messages, 3, "hello, root, done");
        assert_eq!(o.report.stats.pulls, 0);
    }
    assert!(total < 1024, "{total} bytes");

    // One changed file four directories down: a cost of the path, not the tree.
    a.write("x/y/z/deep.txt", b"deeper");
    let (oa, ob) = sync_ok(&a, &b).await;
    let s = ob.report.stats;
    println!(
        "one change at depth 4 in 10,001 files: b received {} messages ({} dir nodes, {} content nodes, {} chunks, {} bytes), {} request rounds; a received {} messages",
        ob.report.received.messages,
        s.dir_nodes_received,
        s.content_nodes_received,
        s.chunks_received,
        ob.report.received.bytes,
        s.max_pull_rounds,
        oa.report.received.messages,
    );
    assert_eq!(b.read("x/y/z/deep.txt").unwrap(), b"deeper");
    // The changed path only: a node or two per directory level (the root's
    // 101 entries take two), the file's content node and its one chunk,
    // each level one more round trip.
    let levels = 4u32;
    assert!(s.dir_nodes_received <= 2 * u64::from(levels), "{s:?}");
    assert_eq!(
        (s.content_nodes_received, s.chunks_received),
        (1, 1),
        "{s:?}"
    );
    assert!(s.max_pull_rounds <= 2 * levels + 2, "{s:?}");
    assert!(
        ob.report.received.messages <= 4 * u64::from(levels),
        "{:?}",
        ob.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_overwrite_in_a_64_mib_file_sends_little_more_than_1_mib() {
    let (a, b) = (Node::new(), Node::new());
    a.write("big.bin", &bytes(7, 64 * MIB));
    sync_ok(&a, &b).await;
    a.write_at("big.bin", 31 * MIB as u64, &bytes(8, MIB));
    let (_, ob) = sync_ok(&a, &b).await;
    let got = ob.report.received.chunk_bytes;
    println!(
        "1 MiB overwrite in 64 MiB: {got} chunk bytes ({:.2} MiB) in {} chunks, {} messages, {} bytes on the wire",
        got as f64 / MIB as f64,
        ob.report.received.chunks,
        ob.report.received.messages,
        ob.report.received.bytes,
    );
    assert!(got <= MIB as u64 + 4 * MAX_CHUNK, "{got}");
    assert_eq!(b.read("big.bin"), a.read("big.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_of_a_64_mib_file_sends_no_chunk() {
    let (a, b) = (Node::new(), Node::new());
    a.write("old/name.bin", &bytes(9, 64 * MIB));
    sync_ok(&a, &b).await;
    a.rename("old/name.bin", "new/place.bin");
    let (_, ob) = sync_ok(&a, &b).await;
    println!(
        "rename of 64 MiB: {} chunk bytes, {} messages, {} bytes on the wire",
        ob.report.received.chunk_bytes, ob.report.received.messages, ob.report.received.bytes,
    );
    assert_eq!(ob.report.received.chunk_bytes, 0);
    assert_eq!(b.list("new"), vec!["place.bin"]);
    assert!(b.list("old").is_empty());
    assert_eq!(b.read("new/place.bin").unwrap(), bytes(9, 64 * MIB));
}
