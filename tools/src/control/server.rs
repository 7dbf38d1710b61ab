//! The node's side of the socket: one thread per connection, one request
//! line, one [`Response`] line, answered by the node's [`Local`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use backer_fs::vfs::Vfs;

use super::{socket_path, Local, Request, Response};
use crate::net::Net;

/// The longest request line read (a restore's paths fit many times).
const MAX_REQUEST: u64 = 64 << 10;

/// Serves the socket of the node over `vfs` on a thread until the process
/// exits.
pub(crate) fn serve(
    store: &Path,
    vfs: Arc<Vfs>,
    mount: Option<PathBuf>,
    net: Option<Arc<Net>>,
) -> Result<()> {
    let path = socket_path(store);
    let _ = std::fs::remove_file(&path); // stale: we hold the store lock
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let local = Arc::new(Local::node(vfs, mount, net));
    std::thread::Builder::new()
        .name("backer-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                // One thread per request: a long one (gc, a big restore)
                // must not hold up `status`.
                let local = local.clone();
                let spawned = std::thread::Builder::new()
                    .name("backer-control-req".into())
                    .spawn(move || {
                        if let Err(e) = answer(conn, &local) {
                            tracing::warn!(error = %e, "control request failed");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot answer a control request");
                }
            }
        })?;
    Ok(())
}

/// Reads one request from `conn` and writes its response.
fn answer(conn: UnixStream, local: &Local) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&conn)
        .take(MAX_REQUEST)
        .read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => local.handle(req),
        Err(e) => Response::Error(format!("a bad request: {e}")),
    };
    let mut w = &conn;
    writeln!(w, "{}", serde_json::to_string(&reply)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backer_fs::store::Store;

    /// Sends `line` to a server answering with a fresh store's `Local`.
    fn exchange(line: &str) -> Response {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(Store::create(&dir.path().join("s")).unwrap()).unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        let mut w = &client;
        writeln!(w, "{line}").unwrap();
        answer(server, &local).unwrap();
        let mut reply = String::new();
        BufReader::new(&client).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }

    #[test]
    fn requests_are_json_tagged_by_req_and_nothing_else() {
        match exchange(r#"{"req":"status"}"#) {
            Response::Status(s) => assert_eq!((s.commits, s.pid), (0, None)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            exchange(r#"{"req":"log","path":null}"#),
            Response::Log(Vec::new())
        );
        for bad in ["status", "reload", r#"{"req":"nope"}"#, "{"] {
            match exchange(bad) {
                Response::Error(e) => assert!(e.starts_with("a bad request"), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
