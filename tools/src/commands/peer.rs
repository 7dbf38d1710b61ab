//! `backer peer add ID [ADDR] | peer remove ID | peer list`: the peers this
//! node trusts, kept in `STORE/config.toml`.
//!
//! These edit the file whether a node runs or not (the store itself is not
//! opened, except to learn our own id when no node runs), then ask a
//! running node to re-read it. `peer list` adds, when a node runs, whether
//! each peer is connected and when it last synced.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use backer_fs::NodeId;

use super::backend::Remote;
use crate::config::{self, Config, Peer};

/// Trusts `id`, dialled at `addr` (none: it dials us); a known id gets the
/// new address.
pub(crate) fn add(store: &Path, id: &str, addr: Option<&str>) -> Result<()> {
    let store = super::require_store(store)?;
    let id = parse_id(id)?;
    let addr = addr.map(check_addr).transpose()?;
    if id == own_id(&store)? {
        bail!("{id} is this node's own id: add the other node's ('backer id' there)");
    }
    let mut cfg = Config::load(&store)?;
    let peer = Peer {
        id: id.to_string(),
        addr: addr.clone(),
    };
    let verb = match cfg.peers.iter_mut().find(|p| same_id(&p.id, &id)) {
        Some(known) => {
            *known = peer;
            "Updated"
        }
        None => {
            cfg.peers.push(peer);
            "Added"
        }
    };
    cfg.save(&store)?;
    reload(&store);
    match addr {
        Some(a) => println!("{verb} peer {id} at {a}"),
        None => println!("{verb} peer {id} (it dials us)"),
    }
    Ok(())
}

/// Stops trusting `id`; an id that is not a peer is an error.
pub(crate) fn remove(store: &Path, id: &str) -> Result<()> {
    let store = super::require_store(store)?;
    let id = parse_id(id)?;
    let mut cfg = Config::load(&store)?;
    let Some(i) = cfg.peers.iter().position(|p| same_id(&p.id, &id)) else {
        bail!(
            "{id} is not a peer (see 'backer peer list' or {})",
            config::path(&store).display()
        );
    };
    cfg.peers.remove(i);
    cfg.save(&store)?;
    reload(&store);
    println!("Removed peer {id}");
    Ok(())
}

/// Prints one line per peer: id, address ("-" when it dials us) and, when
/// a node runs, its connection state and last sync.
pub(crate) fn list(store: &Path) -> Result<()> {
    let store = super::require_store(store)?;
    let cfg = Config::load(&store)?;
    // A node that does not answer in time should not hide the list.
    let live = Remote::find(&store).unwrap_or(None);
    let live_peers = live.as_ref().map(|(_, s)| &s.peers);
    let width = cfg
        .peers
        .iter()
        .map(|p| p.addr.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(0);
    for p in &cfg.peers {
        let id = p.node_id().map_or_else(|_| p.id.clone(), |n| n.to_string());
        let addr = p.addr.as_deref().unwrap_or("-");
        match live_peers {
            Some(peers) => {
                let state = peers.iter().find(|p| same_str_id(&p.id, &id)).map_or_else(
                    || "unknown to the node".to_string(),
                    |p| live_state(p.connected, p.last_sync),
                );
                println!("{id}  {addr:<width$}  {state}");
            }
            None => println!("{id}  {addr}"),
        }
    }
    Ok(())
}

/// "connected|not connected, last sync TIME|never" for one peer.
pub(crate) fn live_state(connected: bool, last_sync: Option<u64>) -> String {
    let connected = if connected {
        "connected"
    } else {
        "not connected"
    };
    let last = last_sync.map_or_else(
        || "never".to_string(),
        |secs| utc_time(i64::try_from(secs).unwrap_or(i64::MAX)),
    );
    format!("{connected}, last sync {last}")
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_time(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = backer_fs::tree::civil::civil_utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Parses a node id as `backer id` prints it (case, `-` and spaces do not
/// matter).
fn parse_id(s: &str) -> Result<NodeId> {
    s.parse().map_err(|e| match e {
        backer_fs::Error::InvalidArgument(why) => anyhow!("not a node id: {s:?} ({why})"),
        other => anyhow!("not a node id: {s:?} ({other})"),
    })
}

/// Whether the id written `written` (in config.toml) is `id`.
fn same_id(written: &str, id: &NodeId) -> bool {
    written.parse::<NodeId>().is_ok_and(|n| n == *id)
}

/// Whether two written ids name the same node.
fn same_str_id(a: &str, b: &str) -> bool {
    match (a.parse::<NodeId>(), b.parse::<NodeId>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Checks a peer address: `ip:port`, or `host:port` that resolves now.
/// Returns the form to store (an ip:port normalised).
fn check_addr(s: &str) -> Result<String> {
    let bad = |why: &str| anyhow!("bad peer address {s:?}: {why}");
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(bad("port 0"));
        }
        return Ok(a.to_string());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("want host:port"))?;
    let port: u16 = port.parse().map_err(|_| bad("want host:port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("want host:port"));
    }
    match s.to_socket_addrs() {
        Ok(addrs) if addrs.len() > 0 => Ok(s.to_string()),
        Ok(_) => Err(anyhow!("cannot resolve {host:?}: no address")),
        Err(e) => Err(anyhow!("cannot resolve {host:?}: {e}")),
    }
}

/// This node's id: the running node's, else the store's.
fn own_id(store: &Path) -> Result<NodeId> {
    if let Some((_, status)) = Remote::find(store)? {
        return parse_id(&status.node);
    }
    Ok(super::open_store(store)?.node_id())
}

/// Asks a running node to re-read config.toml; warns (without failing:
/// the file is written) if one runs and does not take it.
fn reload(store: &Path) {
    let why = match Remote::find(store).and_then(|node| node.map(|(n, _)| n.reload()).transpose()) {
        Ok(_) => return,
        Err(e) => format!("{e:#}"),
    };
    eprintln!("backer: warning: the running node did not reload config.toml ({why}); restart it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(utc_time(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn addresses() {
        assert_eq!(check_addr("127.0.0.1:22000").unwrap(), "127.0.0.1:22000");
        assert_eq!(check_addr("[::1]:7").unwrap(), "[::1]:7");
        assert_eq!(check_addr("localhost:7").unwrap(), "localhost:7");
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            ":7",
            "host:port",
            "a b:7",
            "127.0.0.1:70000",
        ] {
            assert!(check_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_parse_in_any_case_and_compare_normalised() {
        let id = NodeId([9; 32]);
        let shown = id.to_string();
        assert_eq!(parse_id(&shown.to_lowercase()).unwrap(), id);
        assert!(same_id(&shown.replace('-', ""), &id));
        assert!(same_str_id(&shown, &shown.to_lowercase()));
        let e = parse_id("nope").unwrap_err().to_string();
        assert!(e.contains("not a node id") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn live_state_reads_connection_and_last_sync() {
        assert_eq!(
            live_state(true, Some(0)),
            "connected, last sync 1970-01-01T00:00:00Z"
        );
        assert_eq!(live_state(false, None), "not connected, last sync never");
    }
}
