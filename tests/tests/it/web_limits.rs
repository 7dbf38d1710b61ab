//! The web server's limits: many idle connections from any local user
//! must not use up the node's descriptors or lock out its API and its
//! control socket, and a connection that never finishes its request head
//! is closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::mirror_util::{status, Node};
use crate::web_util::{bearer, http, WebNode};

/// More than the server's cap of 64 connections at once.
const IDLE: usize = 64 + 36;

/// Whether the server closes `s` (EOF or reset) within a minute; the
/// header timeout is 10 s, the minute is slack for a busy machine.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an error answer (408/400) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn idle_connections_past_the_cap_do_not_lock_out_the_api_or_status() {
    let w = WebNode::start();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(&w.addr).expect("connect"))
        .collect();
    // The control socket is not behind the web server's cap.
    let st = status(w.node.store()).expect("backer status answers");
    assert_eq!(st["node"], w.node.id.as_str(), "{st}");
    // The API answers (once idle connections have timed out and freed
    // their slots, if need be).
    let r = http(&w.addr, "GET", "/api/status", &[bearer(&w.key)], "");
    assert_eq!(r.status, 200, "{r:#?}");
    drop(idle);
    let r = http(&w.addr, "GET", "/api/status", &[bearer(&w.key)], "");
    assert_eq!(r.status, 200, "{r:#?}");
}

#[test]
fn a_connection_that_sends_half_a_header_is_closed() {
    let w = WebNode::start();
    let mut s = TcpStream::connect(&w.addr).unwrap();
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    assert!(closed_by_server(&mut s), "still open after a minute");
    // And one that sends nothing at all.
    let mut s = TcpStream::connect(&w.addr).unwrap();
    assert!(closed_by_server(&mut s), "an idle connection stayed open");
}
