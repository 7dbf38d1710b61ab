use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn err(n: u64) -> EventKind {
    EventKind::Error {
        what: format!("e{n}"),
        place: "test".into(),
    }
}

#[test]
fn ids_rise_by_one_from_one() {
    let bus = Bus::new();
    assert_eq!(bus.last_id(), 0);
    assert!(bus.since(0).is_empty());
    for n in 1..=5 {
        assert_eq!(bus.publish(err(n)), n);
    }
    let ids: Vec<u64> = bus.since(0).iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let ids: Vec<u64> = bus.since(3).iter().map(|e| e.id).collect();
    assert_eq!(ids, [4, 5]);
    assert!(bus.since(5).is_empty());
    // An id from an earlier run of the node: all that is kept is new.
    assert_eq!(bus.since(99).len(), 5);
}

#[test]
fn the_ring_keeps_the_newest_and_a_late_reader_sees_the_gap() {
    let bus = Bus::new();
    for n in 1..=1500 {
        bus.publish(err(n));
    }
    let all = bus.since(0);
    assert_eq!(all.len(), RING);
    assert_eq!(all[0].id, 501, "the oldest 500 were dropped");
    assert_eq!(all.last().map(|e| e.id), Some(1500));
    // A reader that last saw 10 gets 501 next: the gap tells it.
    let next = bus.since(10);
    assert_eq!(next[0].id, 501);
    assert!(all.windows(2).all(|w| w[1].id == w[0].id + 1));
    assert_eq!(
        next[0].kind,
        EventKind::Error {
            what: "e501".into(),
            place: "test".into()
        }
    );
}

#[test]
fn a_waiter_wakes_on_publish_and_a_reader_that_never_reads_blocks_nobody() {
    let bus = Bus::with_capacity(4);
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    bus.on_publish(move || {
        w.fetch_add(1, Ordering::SeqCst);
    });
    let b = bus.clone();
    let waiter = std::thread::spawn(move || b.wait(0, Duration::from_secs(60)));
    // Whatever the waiter does, every publish returns.
    for n in 1..=100 {
        bus.publish(err(n));
    }
    let got = waiter.join().unwrap();
    assert!(!got.is_empty() && got.iter().all(|e| e.id >= 1));
    assert_eq!(woken.load(Ordering::SeqCst), 100);
    assert!(
        bus.wait(100, Duration::from_millis(1)).is_empty(),
        "none new"
    );
    assert_eq!(bus.since(0).len(), 4);
}

#[test]
fn events_serialise_with_type_and_data() {
    let e = Event {
        id: 7,
        time: "2026-12-03T12:00:00.000Z".into(),
        kind: EventKind::LocalChange {
            path: "a/b".into(),
            kind: ChangeKind::Added,
            from: None,
        },
    };
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"id":7,"time":"2026-12-03T12:00:00.000Z","type":"LocalChange","data":{"path":"a/b","kind":"added"}}"#
    );
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
}

#[test]
fn conflict_copies_name_their_original_and_author() {
    assert_eq!(
        conflict_original("a/report.sync-conflict-20261126-023045-ABCDEFG.txt"),
        Some(("a/report.txt".into(), "ABCDEFG".into()))
    );
    assert_eq!(
        conflict_original(".bashrc.sync-conflict-19700101-000000-ABCDEFG-3"),
        Some((".bashrc".into(), "ABCDEFG".into()))
    );
    assert_eq!(conflict_original("plain.txt"), None);
    assert_eq!(conflict_original("x.sync-conflict-nope"), None);
    assert_eq!(
        conflict_original("x.sync-conflict-20261126-023045-AB"),
        None
    );
}
