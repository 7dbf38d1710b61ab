//! Minimal histories for the failures the random runs found (DESIGN.md,
//! "Replication" step 4: the dominating side wins, a concurrent delete and
//! edit keeps the edit, nothing is ever lost silently).

use super::*;

/// The contents of the files directly in `dir`, sorted.
fn contents_in(node: &Node, dir: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = node
        .list(dir)
        .iter()
        .filter_map(|n| node.read(&join(dir, n)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_recreated_over_the_peers_tombstone_reaches_the_peer() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/f", b"old");
    sync_ok(&a, &b).await;
    b.remove("d");
    sync_ok(&a, &b).await;
    // a has seen b's delete: its new d dominates b's tombstone, so the
    // merge takes a's d whole, including g, whose content b must fetch.
    a.write("d/g", b"new");
    sync_ok(&a, &b).await;
    assert_eq!(b.read("d/g").unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_recreated_over_the_peers_older_copy_reaches_the_peer() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/x", b"x0");
    a.write("d/s/y", b"y0");
    sync_ok(&a, &b).await;
    b.write("d/x", b"x1");
    b.write("d/s/y", b"y1");
    sync_ok(&a, &b).await;
    // a has seen b's edits and replaces d: its d dominates b's, so the
    // merge takes a's d whole, including x and s, which b must fetch.
    a.remove("d");
    a.write("d/x", b"x2");
    a.write("d/s/z", b"z2");
    sync_ok(&a, &b).await;
    assert_eq!(b.snapshot("d"), a.snapshot("d"));
    assert_eq!(b.read("d/x").unwrap(), b"x2");
    assert_eq!(b.read("d/s/z").unwrap(), b"z2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_made_in_a_recreated_directory_conflicts_with_a_concurrent_edit() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/f", b"v0");
    sync_ok(&a, &b).await;
    b.write("d/f", b"edit on b");
    a.remove("d");
    a.write("d/f", b"new on a");
    sync_ok(&a, &b).await;
    let both = vec![b"edit on b".to_vec(), b"new on a".to_vec()];
    assert_eq!(contents_in(&a, "d"), both, "{:?}", a.list("d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_made_in_a_concurrently_deleted_directory_is_kept() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/x", b"x0");
    sync_ok(&a, &b).await;
    b.write("d/x", b"x1");
    sync_ok(&a, &b).await;
    a.remove("d");
    b.write("d/new", b"new on b");
    sync_ok(&a, &b).await;
    assert_eq!(a.list("d"), vec!["new"]);
    assert_eq!(a.read("d/new").unwrap(), b"new on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_concurrent_with_a_rename_over_it_is_kept() {
    let (a, b) = (Node::new(), Node::new());
    a.write("x", b"x0");
    a.write("y", b"y0");
    a.root();
    for i in 1..4 {
        a.write("y", format!("y{i}").as_bytes());
        a.root();
    }
    sync_ok(&a, &b).await;
    a.write("x", b"edit on a");
    b.rename("y", "x");
    sync_ok(&a, &b).await;
    let both = vec![b"edit on a".to_vec(), b"y3".to_vec()];
    assert_eq!(contents_in(&a, ""), both, "{:?}", a.list(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_kept_under_a_concurrent_delete_has_seen_what_it_holds() {
    let (a, b) = (Node::new(), Node::new());
    a.write("d/s/x", b"x0");
    a.write("d/s/y", b"y0");
    sync_ok(&a, &b).await;
    a.remove("d");
    b.write("d/s/x", b"x1");
    sync_ok(&a, &b).await;
    // b's edit keeps d/s alive; the delete has seen y, so y is deleted.
    assert_eq!(
        a.snapshot("d"),
        vec![("d/s/".into(), vec![]), ("d/s/x".into(), b"x1".to_vec())]
    );
    // The directory vectors still join everything beneath them, or the
    // next merge takes a "dominating" directory that has not seen it all.
    check_dir_vectors("after a delete concurrent with an edit", &tree(&a));
}
