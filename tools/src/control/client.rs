//! A command's side of the socket: send requests to the running node and
//! read its responses, one at a time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{socket_path, Request, Response};

/// A connection to a running node: requests answered in turn.
pub(crate) struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    /// Connects to the node running on the store at `store`, waiting up
    /// to `timeout` for each reply; `None` if no node answers (a stale
    /// socket is removed).
    pub(crate) fn connect(store: &Path, timeout: Duration) -> Result<Option<Session>> {
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
        Ok(Some(Session {
            reader: BufReader::new(conn.try_clone()?),
            writer: conn,
        }))
    }

    /// Sends `request` and reads the response.
    pub(crate) fn call(&mut self, request: &Request) -> Result<Response> {
        self.send(request)?;
        self.read()
    }

    /// Sends `request` (for a stream of answers, [`Request::Events`]).
    pub(crate) fn send(&mut self, request: &Request) -> Result<()> {
        writeln!(self.writer, "{}", serde_json::to_string(request)?)
            .context("the node closed the connection")
    }

    /// Reads the next response.
    pub(crate) fn read(&mut self) -> Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            anyhow::bail!("the node closed the connection before it answered");
        }
        serde_json::from_str(&line).context("the node's reply is not a response")
    }
}

/// Asks the node running on the store at `store`, waiting up to `timeout`
/// for the reply; `None` if no node answers (a stale socket is removed).
pub(crate) fn ask(store: &Path, request: &Request, timeout: Duration) -> Result<Option<Response>> {
    match Session::connect(store, timeout)? {
        Some(mut s) => s.call(request).map(Some),
        None => Ok(None),
    }
}
