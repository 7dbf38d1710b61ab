//! The web API of a real mounted node: the Host check (403), credentials
//! (401), the one-time login, the long poll, Server-Sent Events with
//! `Last-Event-ID` replay, and `backer web` with no node.

use std::time::Instant;

use crate::events::Follower;
use crate::mirror_util::{backer, write_synced, MountNode, Node};
use crate::web_util::{bearer, first_sse_event, http, http_as, login_url, WebNode};
use backer_tests::TempStore;

#[test]
fn the_api_wants_our_host_and_credentials() {
    let w = WebNode::start();
    let a = w.addr.as_str();
    let key = bearer(&w.key);

    let r = http(a, "GET", "/api/status", &[], "");
    assert_eq!(r.status, 401, "{r:#?}");
    let r = http(a, "GET", "/api/status", &[bearer("not-the-key")], "");
    assert_eq!(r.status, 401, "{r:#?}");
    let r = http_as(
        a,
        "evil.example",
        "GET",
        "/api/status",
        std::slice::from_ref(&key),
        "",
    );
    assert_eq!(r.status, 403, "{r:#?}");
    let port = a.rsplit_once(':').unwrap().1;
    let r = http_as(a, &format!("evil.example:{port}"), "GET", "/", &[], "");
    assert_eq!(r.status, 403, "the page too: {r:#?}");

    let r = http(a, "GET", "/api/status", std::slice::from_ref(&key), "");
    assert_eq!(r.status, 200, "{r:#?}");
    let st = r.json();
    assert_eq!(st["node"], w.node.id.as_str(), "{st}");
    assert!(st["root"].as_str().is_some_and(|h| h.len() == 64), "{st}");
    let r = http_as(
        a,
        &format!("localhost:{port}"),
        "GET",
        "/api/peers",
        &[key],
        "",
    );
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.json().is_array(), "{r:#?}");

    // The page needs no credentials (it asks for a login itself).
    let r = http(a, "GET", "/", &[], "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<title>backer</title>"), "{r:#?}");
    assert!(r.header("content-security-policy").is_some(), "{r:#?}");
}

#[test]
fn a_login_token_works_once_and_its_session_reads_the_api() {
    let w = WebNode::start();
    let a = w.addr.as_str();
    let url = login_url(&w.node);
    let token = url.rsplit_once("#login=").expect("a login token").1;
    let body = format!(r#"{{"token":"{token}"}}"#);
    let r = http(a, "POST", "/api/login", &[], &body);
    assert_eq!(r.status, 200, "{r:#?}");
    let session = r.json()["session"].as_str().expect("a session").to_string();
    let r = http(a, "POST", "/api/login", &[], &body);
    assert_eq!(r.status, 401, "a token works once: {r:#?}");
    let r = http(a, "GET", "/api/status", &[bearer(&session)], "");
    assert_eq!(r.status, 200, "{r:#?}");
    // A cookie is no credential.
    let r = http(
        a,
        "GET",
        "/api/status",
        &[format!("Cookie: session={session}")],
        "",
    );
    assert_eq!(r.status, 401, "{r:#?}");
}

#[test]
fn events_by_long_poll_and_by_sse_with_replay() {
    let w = WebNode::start();
    let a = w.addr.as_str();
    let key = bearer(&w.key);
    let r = http(
        a,
        "GET",
        "/api/events?since=0&timeout=0",
        std::slice::from_ref(&key),
        "",
    );
    assert_eq!(r.status, 200, "{r:#?}");
    let before = r.json().as_array().map_or(0, |v| {
        v.iter().filter_map(|e| e["id"].as_u64()).max().unwrap_or(0)
    });

    let start = Instant::now();
    write_synced(&w.node.path("polled.txt"), b"x");
    let mut found = None;
    let mut since = before;
    while found.is_none() && start.elapsed().as_secs() < 60 {
        let r = http(
            a,
            "GET",
            &format!("/api/events?since={since}&timeout=10"),
            std::slice::from_ref(&key),
            "",
        );
        assert_eq!(r.status, 200, "{r:#?}");
        for e in r.json().as_array().cloned().unwrap_or_default() {
            let id = e["id"].as_u64().expect("an id");
            assert_eq!(id, since + 1, "ids rise by 1: {e}");
            since = id;
            if e["type"] == "LocalChange" && e["data"]["path"] == "polled.txt" {
                found = Some(e);
            }
        }
    }
    let e = found.expect("a LocalChange of polled.txt in the long poll");
    println!("long poll: LocalChange after {:?}", start.elapsed());
    let id = e["id"].as_u64().unwrap();

    // A browser reconnecting with Last-Event-ID gets what came after it,
    // from the ring, whatever the Accept header.
    let replay = first_sse_event(a, &[key.clone(), format!("Last-Event-ID: {}", id - 1)]);
    assert_eq!(replay, e, "the replay is the same event");
    let replay = first_sse_event(
        a,
        &[
            key.clone(),
            "Last-Event-ID: 0".into(),
            "Accept: application/json".into(),
        ],
    );
    assert_eq!(replay["id"], 1, "{replay}");

    // Without Last-Event-ID: from now on.
    let live = std::thread::spawn({
        let (a, key) = (a.to_string(), key.clone());
        move || first_sse_event(&a, &[key])
    });
    // The stream must be open before the write; writing until it shows
    // one keeps the test free of timing guesses.
    let mut n = 0;
    while !live.is_finished() && n < 600 {
        n += 1;
        write_synced(&w.node.path(&format!("live-{n}.txt")), b"y");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let got = live.join().expect("the SSE reader");
    assert_eq!(got["type"], "LocalChange", "{got}");
    assert!(got["id"].as_u64() > Some(id), "only new events: {got}");
}

#[test]
fn gc_through_the_api_is_an_event() {
    let w = WebNode::start();
    let a = w.addr.as_str();
    let key = bearer(&w.key);
    let r = http(a, "POST", "/api/gc", std::slice::from_ref(&key), "");
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.json()["roots_kept"].is_u64(), "{r:#?}");
    let r = http(a, "GET", "/api/events?since=0&timeout=10", &[key], "");
    let events = r.json();
    assert!(
        events
            .as_array()
            .is_some_and(|v| v.iter().any(|e| e["type"] == "HistoryCollected")),
        "{events}"
    );
}

#[test]
fn a_web_address_off_loopback_is_refused_and_said_on_the_bus() {
    let mut node = MountNode::init("R");
    let run = node.m.try_mount(&["--web", "0.0.0.0:8386"]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", node.m.log());
    node.m.adopt_running_node();
    let line = backer(node.store(), &["web"])
        .assert_one_line_failure()
        .to_string();
    assert!(line.contains("serves no web page"), "{line}");
    let log = node.m.log();
    assert!(log.contains("SSH tunnel"), "one log line says why:\n{log}");
    let ev = Follower::start(node.store().backer());
    let (e, _) = ev.wait_for("the Error event", |e| e["type"] == "Error");
    assert!(
        e["data"]["what"]
            .as_str()
            .is_some_and(|w| w.contains("SSH tunnel")),
        "{e}"
    );
}

#[test]
fn backer_web_without_a_node_is_one_line_and_exit_1() {
    let store = TempStore::new();
    backer(&store, &["init"]).assert_success();
    let run = backer(&store, &["web"]);
    let line = run.assert_one_line_failure();
    assert!(line.contains("no node runs"), "{line}");
}
