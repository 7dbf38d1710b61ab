//! The event feed over a real store: every published root becomes one
//! `LocalChange` per changed name, in commit order, from a thread of its
//! own; merges are left to the peer manager.

use std::sync::Arc;
use std::time::Duration;

use backer_fs::events::{Bus, EventKind, Feed};
use backer_fs::history::ChangeKind;
use backer_fs::vfs::{RenameMode, Vfs, ROOT};

use crate::util::{TestFs, ME};

fn put(vfs: &Vfs, name: &[u8], bytes: &[u8]) {
    let (_, fh) = vfs.names().create(ME, ROOT, name, 0o644, false).unwrap();
    vfs.files().write(fh, 0, bytes).unwrap();
    vfs.files().release(fh).unwrap();
}

/// Waits (up to 10 s) until the bus holds `n` events after `since`.
fn collect(bus: &Bus, since: u64, n: usize) -> Vec<(String, ChangeKind, Option<String>)> {
    let mut out = Vec::new();
    let mut last = since;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n && std::time::Instant::now() < deadline {
        for e in bus.wait(last, Duration::from_millis(200)) {
            last = e.id;
            if let EventKind::LocalChange { path, kind, from } = e.kind {
                out.push((path, kind, from));
            }
        }
    }
    out
}

#[test]
fn published_roots_become_local_changes() {
    let t = TestFs::new();
    let vfs: Arc<Vfs> = t.vfs.clone().unwrap();
    let bus = Bus::new();
    let feed = Feed::start(vfs.store(), bus.clone()).unwrap();
    let f = feed.clone();
    vfs.observe_roots(move |c| f.root_published(c));

    put(&vfs, b"a.txt", b"one");
    put(&vfs, b"b.txt", b"two");
    vfs.commit_durable().unwrap();
    let got = collect(&bus, 0, 2);
    assert_eq!(
        got,
        [
            ("a.txt".to_string(), ChangeKind::Added, None),
            ("b.txt".to_string(), ChangeKind::Added, None),
        ]
    );

    let seen = bus.last_id();
    vfs.names()
        .rename(ROOT, b"a.txt", ROOT, b"c.txt", RenameMode::default())
        .unwrap();
    vfs.names().unlink(ROOT, b"b.txt").unwrap();
    vfs.commit_durable().unwrap();
    let got = collect(&bus, seen, 2);
    assert!(
        got.contains(&("c.txt".into(), ChangeKind::Renamed, Some("a.txt".into()))),
        "{got:?}"
    );
    assert!(
        got.contains(&("b.txt".into(), ChangeKind::Deleted, None)),
        "{got:?}"
    );
    // Nothing more than what changed.
    assert!(bus
        .wait(bus.last_id(), Duration::from_millis(100))
        .is_empty());
    assert_eq!(bus.since(0).len(), 4);
}
