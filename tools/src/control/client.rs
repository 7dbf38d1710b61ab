//! A command's side of the socket: send requests to the running node and
//! read its responses, one at a time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use backer_fs::store::Store;

use super::{socket_path, Request, Response};

/// A connection to a running node: requests answered in turn.
pub(crate) struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    /// Connects to the node running on the store at `store`, waiting up
    /// to `timeout` for each reply; `None` if no node runs (a stale
    /// socket is removed, but only when no process holds the store: a
    /// node starting meanwhile keeps the socket it just made).
    ///
    /// Errors: a node holds the store but its socket refuses us.
    pub(crate) fn connect(store: &Path, timeout: Duration) -> Result<Option<Session>> {
        let path = socket_path(store);
        let conn = match UnixStream::connect(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let gone = Store::tidy_if_unheld(store, || {
                    let _ = std::fs::remove_file(&path);
                })
                .map_err(|e| anyhow!("cannot tell whether a node runs: {e}"))?;
                if gone {
                    return Ok(None);
                }
                bail!(
                    "the node running on {} refused the connection (starting or \
                     stopping?): {e}",
                    store.display()
                );
            }
            Err(_) => return Ok(None),
        };
        conn.set_read_timeout(Some(timeout))?;
        Ok(Some(Session {
            reader: BufReader::new(conn.try_clone()?),
            writer: conn,
        }))
    }

    /// The pid of the node at the other end, from the kernel (not from
    /// what the node says): see [`super::creds::peer_pid`].
    #[cfg(target_os = "linux")]
    pub(crate) fn peer_pid(&self) -> std::io::Result<libc::pid_t> {
        super::creds::peer_pid(&self.writer)
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
/// for the reply; `None` if no node runs (see [`Session::connect`]).
pub(crate) fn ask(store: &Path, request: &Request, timeout: Duration) -> Result<Option<Response>> {
    match Session::connect(store, timeout)? {
        Some(mut s) => s.call(request).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A store with a socket file that refuses connections (its listener
    /// is gone), as a node that died leaves it.
    fn store_with_dead_socket() -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("store");
        drop(Store::create(&dir).unwrap());
        drop(UnixListener::bind(socket_path(&dir)).unwrap());
        (t, dir)
    }

    #[test]
    fn a_stale_socket_is_removed_when_no_node_holds_the_store() {
        let (_t, dir) = store_with_dead_socket();
        assert!(Session::connect(&dir, Duration::from_secs(5))
            .unwrap()
            .is_none());
        assert!(!socket_path(&dir).exists());
    }

    #[test]
    fn a_socket_is_kept_while_a_node_holds_the_store() {
        let (_t, dir) = store_with_dead_socket();
        let held = Store::open(&dir).unwrap();
        let e = Session::connect(&dir, Duration::from_secs(5))
            .err()
            .expect("an error, not `no node`");
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(
            socket_path(&dir).exists(),
            "a live node's socket was removed"
        );
        drop(held);
    }
}
