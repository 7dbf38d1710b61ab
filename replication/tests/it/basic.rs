//! Two nodes over an in-memory pipe: the common cases.

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pair_is_in_sync_in_one_round_trip() {
    let (a, b) = (Node::new(), Node::new());
    let (oa, ob) = sync_ok(&a, &b).await;
    for o in [&oa, &ob] {
        // hello, root, done: nothing else.
        assert_eq!(o.report.sent.messages, 3, "{:?}", o.report);
        assert_eq!(o.report.stats.pulls, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_flow_both_ways_and_a_second_sync_changes_nothing() {
    let (a, b) = (Node::new(), Node::new());
    a.write("docs/a.txt", b"from a");
    a.write("big.bin", &bytes(1, 700_000));
    b.write("docs/b.txt", b"from b");
    b.write("src/lib/deep.rs", b"fn main() {}");
    let (oa, ob) = sync_ok(&a, &b).await;
    assert!(oa.report.stats.merges >= 1 && ob.report.stats.merges >= 1);
    assert_eq!(a.snapshot(""), b.snapshot(""));
    assert_eq!(b.read("big.bin").unwrap(), bytes(1, 700_000));
    assert_eq!(a.read("src/lib/deep.rs").unwrap(), b"fn main() {}");
    let root = a.root();
    let (oa, _) = sync_ok(&a, &b).await;
    assert_eq!(oa.report.stats.pulls, 0);
    assert_eq!(a.root(), root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_leave_a_conflict_copy_on_both_nodes() {
    let (a, b) = (Node::new(), Node::new());
    a.write("notes.txt", b"v1");
    sync_ok(&a, &b).await;
    a.write("notes.txt", b"edit on a");
    b.write("notes.txt", b"edit on b");
    sync_ok(&a, &b).await;
    let names = a.list("");
    assert_eq!(names, b.list(""));
    assert_eq!(names.len(), 2, "{names:?}");
    let copy = names.iter().find(|n| *n != "notes.txt").unwrap();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with(".txt"),
        "{copy}"
    );
    assert_eq!(b.read(copy), a.read(copy));
    let mut both = vec![a.read("notes.txt").unwrap(), a.read(copy).unwrap()];
    both.sort();
    assert_eq!(both, vec![b"edit on a".to_vec(), b"edit on b".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_renames_replicate() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/keep.txt", b"keep");
    a.write("d/gone.txt", b"gone");
    a.write("old-name.bin", &bytes(2, 300_000));
    sync_ok(&a, &b).await;
    a.remove("d/gone.txt");
    a.rename("old-name.bin", "new-name.bin");
    let (_, ob) = sync_ok(&a, &b).await;
    assert_eq!(b.list("d"), vec!["keep.txt"]);
    assert_eq!(b.list(""), vec!["d", "new-name.bin"]);
    assert_eq!(
        ob.report.stats.chunks_received, 0,
        "a rename sends no chunk"
    );
    assert_eq!(b.read("new-name.bin").unwrap(), bytes(2, 300_000));
}
