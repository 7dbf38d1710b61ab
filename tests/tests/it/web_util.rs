//! A node serving its web page for the tests, and a small HTTP/1.1 client
//! (plain `TcpStream`, `Connection: close`): enough for the API, SSE and
//! chromedriver's WebDriver endpoints without a client crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mirror_util::{backer, MountNode, Node};

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The request's bytes: `Host` is `host`, `extra` are more header lines.
fn request_text(method: &str, host: &str, path: &str, extra: &[String], body: &str) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

/// Sends one request to `addr` (Host: `host`) and reads the whole answer.
pub(crate) fn http_as(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    extra: &[String],
    body: &str,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(request_text(method, host, path, extra, body).as_bytes())
        .unwrap();
    let raw = read_answer(&mut s);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Reads one answer: up to its Content-Length, the end of its chunks, or
/// the end of the stream (chromedriver keeps connections open whatever
/// `Connection: close` says).
fn read_answer(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).expect("read the answer");
        if n == 0 {
            return raw;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        match length {
            Some(len) if body.len() >= len => return raw,
            None if head.contains("chunked") && body.ends_with("0\r\n\r\n") => return raw,
            _ => {}
        }
    }
}

/// A chunked body, joined.
fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// [`http_as`] with the right Host.
pub(crate) fn http(addr: &str, method: &str, path: &str, extra: &[String], body: &str) -> Reply {
    http_as(addr, addr, method, path, extra, body)
}

/// `Authorization: Bearer T`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// Opens `GET /api/events` as Server-Sent Events (with `extra` headers)
/// and returns the `data:` of the first event, waiting up to 60 s.
pub(crate) fn first_sse_event(addr: &str, extra: &[String]) -> Value {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request_text("GET", addr, "/api/events", extra, "").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            return serde_json::from_str(data.trim()).unwrap_or_else(|e| {
                panic!("an SSE data line that is not an event ({e}): {line:?}")
            });
        }
    }
    panic!("no SSE event within 60 s (last line {line:?})");
}

/// A mounted node serving its page at a port of its choosing
/// (`--web 127.0.0.1:0`), and what it takes to log in.
pub(crate) struct WebNode {
    pub(crate) node: MountNode,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    /// `[web] api_key` of its config.toml.
    pub(crate) key: String,
}

impl WebNode {
    pub(crate) fn start() -> WebNode {
        let mut node = MountNode::init("W");
        let run = node.m.try_mount(&["--web", "127.0.0.1:0"]);
        assert_eq!(run.code, Some(0), "{run:#?}\n{}", node.m.log());
        node.m.adopt_running_node();
        let cfg = std::fs::read_to_string(node.store().dir().join("config.toml")).unwrap();
        let key = cfg
            .lines()
            .find_map(|l| l.strip_prefix("api_key = "))
            .map(|k| k.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no api_key in config.toml:\n{cfg}"));
        let url = login_url(&node);
        let addr = url
            .strip_prefix("http://")
            .and_then(|u| u.split('/').next())
            .expect("an http URL")
            .to_string();
        WebNode { node, addr, key }
    }
}

/// `backer web`'s last line.
pub(crate) fn login_url(node: &MountNode) -> String {
    let run = backer(node.store(), &["web"]);
    run.assert_success();
    run.last_line().to_string()
}
