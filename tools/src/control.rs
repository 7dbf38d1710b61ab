//! The control socket: a running node serves `STORE/backer.sock`, and
//! `status` (later `peer`, `log`...) asks it instead of opening the store,
//! which the node holds locked. One request line, one JSON reply line.
//! A socket left by a killed node refuses connections: it is removed, not
//! trusted.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use backer_fs::vfs::Vfs;

use crate::net::Net;

/// Where a store's node listens.
pub(crate) fn socket_path(store: &Path) -> PathBuf {
    store.join("backer.sock")
}

/// What a node reports about itself: with `net`, the live peers; else
/// the peers of `config.toml`, none connected.
pub(crate) fn status_json(
    vfs: &Vfs,
    mount: Option<&Path>,
    net: Option<&Net>,
) -> Result<serde_json::Value> {
    let store = vfs.store();
    let log = backer_fs::vfs::read_log(store.kv(), 1)?;
    let peers = match net {
        Some(n) => n.status(),
        None => {
            let cfg = crate::config::Config::load(store.dir()).unwrap_or_default();
            serde_json::Value::Array(
                cfg.peers
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.id, "addr": p.addr, "connected": false, "last_sync": null,
                        })
                    })
                    .collect(),
            )
        }
    };
    Ok(serde_json::json!({
        "root": vfs.root_hash()?.to_hex(),
        "node": store.node_id().to_string(),
        "peers": peers,
        "listen": net.and_then(Net::local_addr).map(|a| a.to_string()),
        "mount": mount.map(|m| m.display().to_string()),
        "commits": log.first().map_or(0, |c| c.seq),
        "pid": std::process::id(),
    }))
}

/// Serves the socket on a thread until the process exits.
#[cfg_attr(not(feature = "fuse"), allow(dead_code))]
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
    std::thread::Builder::new()
        .name("backer-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                // One thread per request: a long one (gc, a big restore)
                // must not hold up `status`.
                let (vfs, mount, net) = (vfs.clone(), mount.clone(), net.clone());
                let spawned = std::thread::Builder::new()
                    .name("backer-control-req".into())
                    .spawn(move || {
                        if let Err(e) = answer(conn, &vfs, mount.as_deref(), net.as_deref()) {
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

#[cfg_attr(not(feature = "fuse"), allow(dead_code))]
fn answer(conn: UnixStream, vfs: &Vfs, mount: Option<&Path>, net: Option<&Net>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&conn).take(4096).read_line(&mut line)?;
    let line = line.trim();
    let reply = match line {
        "status" => status_json(vfs, mount, net)?,
        l if l.starts_with('{') => history_request(l, vfs, net),
        "reload" => match net.map(Net::reload).transpose() {
            Ok(_) => serde_json::json!({ "ok": true }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        other => serde_json::json!({ "error": format!("unknown request {other:?}") }),
    };
    let mut w = &conn;
    writeln!(w, "{reply}")?;
    Ok(())
}

/// Answers a JSON request of `log`, `restore` or `du` (`{"req": ...}`)
/// with `{"result": ...}` or `{"error": "one line"}`.
#[cfg_attr(not(feature = "fuse"), allow(dead_code))]
fn history_request(line: &str, vfs: &Vfs, net: Option<&Net>) -> serde_json::Value {
    use crate::commands::{du, history, restore};
    let run = || -> Result<serde_json::Value> {
        let req: serde_json::Value = serde_json::from_str(line).context("a bad request")?;
        let store = vfs.store();
        match req["req"].as_str() {
            Some("log") => history::log_json(&store, req["path"].as_str()),
            Some("du") => du::du_json(&store),
            Some("gc") => crate::commands::gc::gc_json(vfs),
            Some("restore") => {
                let r = restore::Request::from_json(&req)?;
                let hook = net.and_then(Net::install_hook);
                let hook_ref = hook.as_ref().map(|h| &**h as &dyn Fn(&_));
                restore::restore_json(&store, Some(vfs), hook_ref, &r)
            }
            other => anyhow::bail!("unknown request {other:?}"),
        }
    };
    match run() {
        Ok(v) => serde_json::json!({ "result": v }),
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    }
}

/// Asks a running node; `None` if no node answers (a stale socket is
/// removed).
pub(crate) fn ask(store: &Path, request: &str) -> Result<Option<serde_json::Value>> {
    ask_timeout(store, request, Duration::from_secs(10))
}

/// [`ask`], waiting up to `timeout` for the reply.
pub(crate) fn ask_timeout(
    store: &Path,
    request: &str,
    timeout: Duration,
) -> Result<Option<serde_json::Value>> {
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
    writeln!(w, "{request}")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok(Some(
        serde_json::from_str(&line).context("the node's reply is not JSON")?,
    ))
}
