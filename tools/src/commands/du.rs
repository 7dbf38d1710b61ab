//! `backer du [--json]`: how much the live tree and its history take.
//!
//! - live size: the sum of the sizes of the files in the current tree
//!   (what `du --apparent-size` of the mount would say, holes included);
//! - live unique bytes: the bytes of the distinct chunks the current tree
//!   references (what storing the live tree alone takes);
//! - dedup saving: live data bytes (file bytes that are not holes) minus
//!   live unique bytes: what storing identical chunks once saves in the
//!   live tree (copies, shared parts of files);
//! - stored bytes: the bytes of every chunk in the store;
//! - history size: stored bytes minus live unique bytes: what is kept only
//!   for past versions (until `gc` prunes it).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::store::kv::for_each;
use backer_fs::store::{Location, Space, Store};
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::{dir, Kind};
use backer_fs::Hash;
use serde_json::{json, Value};

/// Totals of the live tree.
#[derive(Default)]
struct Live {
    files: u64,
    size: u64,
    data: u64,
    unique: u64,
    chunks: HashSet<Hash>,
}

fn walk(nodes: &Store, tree: Hash, live: &mut Live) -> Result<()> {
    for e in dir::entries(nodes, tree)? {
        if e.deleted {
            continue;
        }
        match e.kind {
            Kind::Dir => walk(nodes, e.hash, live)?,
            Kind::File => {
                live.files += 1;
                live.size += e.size;
                if e.hash == Hash::ZERO {
                    continue;
                }
                for x in content::extents(nodes, e.hash)? {
                    if let Extent::Data { hash, len } = x {
                        live.data += u64::from(len);
                        if live.chunks.insert(hash) {
                            live.unique += u64::from(len);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The sizes, as `du --json` prints them.
pub(crate) fn du_json(store: &Store) -> Result<Value> {
    let log = super::history::commits(store)?;
    let mut live = Live::default();
    if let Some(head) = log.first() {
        walk(store, Hash(head.root), &mut live)
            .map_err(|e| anyhow!("cannot read the current tree: {e}"))?;
    }
    let (mut stored, mut chunks) = (0u64, 0u64);
    for_each(store.kv(), Space::Chunks, &[], None, |_, v| {
        stored += u64::from(Location::decode(v)?.len);
        chunks += 1;
        Ok(())
    })
    .map_err(|e| anyhow!("cannot read the chunk index: {e}"))?;
    Ok(json!({
        "commits": log.len(),
        "live_files": live.files,
        "live_bytes": live.size,
        "live_data_bytes": live.data,
        "live_unique_bytes": live.unique,
        "live_chunks": live.chunks.len(),
        "dedup_saving_bytes": live.data.saturating_sub(live.unique),
        "stored_bytes": stored,
        "stored_chunks": chunks,
        "history_bytes": stored.saturating_sub(live.unique),
    }))
}

/// Bytes for people: `1234567 (1.2 MiB)`.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS[u])
}

/// `backer du [--json]`.
pub(crate) fn run(store_dir: &Path, json_out: bool) -> Result<()> {
    let req = json!({ "req": "du" });
    let v = super::history::via_node_or_store(store_dir, &req, |store| du_json(&store))?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "live          {} in {} files",
        human(n("live_bytes")),
        n("live_files")
    );
    println!("history       {}", human(n("history_bytes")));
    println!(
        "dedup saving  {} (live data {}, stored once as {})",
        human(n("dedup_saving_bytes")),
        human(n("live_data_bytes")),
        human(n("live_unique_bytes"))
    );
    println!(
        "stored        {} in {} chunks, {} commits",
        human(n("stored_bytes")),
        n("stored_chunks"),
        n("commits")
    );
    Ok(())
}
