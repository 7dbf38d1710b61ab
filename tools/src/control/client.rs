//! A command's side of the socket: send one request to the running node,
//! read its response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{socket_path, Request, Response};

/// Asks the node running on the store at `store`, waiting up to `timeout`
/// for the reply; `None` if no node answers (a stale socket is removed).
pub(crate) fn ask(store: &Path, request: &Request, timeout: Duration) -> Result<Option<Response>> {
    let path = socket_path(store);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Err(_) => return Ok(None),
    };
    conn.set_read_timeout(Some(timeout))?;
    let mut w = &conn;
    writeln!(w, "{}", serde_json::to_string(request)?)?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok(Some(
        serde_json::from_str(&line).context("the node's reply is not a response")?,
    ))
}
