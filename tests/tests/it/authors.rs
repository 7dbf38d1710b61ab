//! `log` on a peer names the node that made each change, not the node
//! that merged it.

use std::fs;

use serde_json::Value;

use crate::mirror_util::*;

/// `log PATH --json` on `node`, parsed (empty if it fails: not there yet).
fn log_of(node: &dyn Node, path: &str) -> Vec<Value> {
    let run = backer(node.store(), &["log", path, "--json"]);
    if run.code != Some(0) {
        return Vec::new();
    }
    serde_json::from_str::<Value>(run.stdout.trim())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn log_on_a_peer_names_who_made_each_change() {
    let (a, b) = mounted_pair();
    let all: [&dyn Node; 2] = [&a, &b];
    wait_connected(&a, &b, &all);
    write_synced(&a.path("from-a.txt"), b"made on A");
    wait_every(
        "from-a.txt on B",
        POLL,
        &mut || fs::read(b.path("from-a.txt")).is_ok_and(|d| d == b"made on A"),
        &|| describe_all(&all),
    );
    wait_every(
        "B's log of from-a.txt",
        POLL,
        &mut || !log_of(&b, "from-a.txt").is_empty(),
        &|| describe_all(&all),
    );
    let log = log_of(&b, "from-a.txt");
    let change = &log[0]["changes"][0];
    assert_eq!(change["path"], "from-a.txt", "{log:#?}");
    assert_eq!(change["by"].as_str(), Some(a.id()), "{log:#?}");
    // The merge commit itself is B's.
    assert_eq!(log[0]["author"].as_str(), Some(b.id()), "{log:#?}");
    let text = backer(b.store(), &["log", "from-a.txt"]);
    text.assert_success();
    let header = text.stdout.lines().next().unwrap_or_default();
    assert!(
        header.ends_with(&format!("by {}", short(a.id()))),
        "{text:#?}"
    );
    // A deletion on A is A's too.
    fs::remove_file(a.path("from-a.txt")).unwrap();
    wait_every(
        "the deletion on B's log",
        POLL,
        &mut || log_of(&b, "from-a.txt").len() >= 2,
        &|| describe_all(&all),
    );
    let log = log_of(&b, "from-a.txt");
    assert_eq!(log[0]["changes"][0]["change"], "deleted", "{log:#?}");
    assert_eq!(
        log[0]["changes"][0]["by"].as_str(),
        Some(a.id()),
        "{log:#?}"
    );
}
