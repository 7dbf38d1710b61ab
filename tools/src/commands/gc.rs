//! `backer gc [--json]`: drop the roots the retention policy of
//! `config.toml` does not keep and free what only they reached (see
//! [`backer_fs::vfs::Vfs::gc`]). Run by the node when one runs, else here.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use backer_fs::gc::Report;
use backer_fs::store::Store;
use backer_fs::vfs::{Vfs, VfsOptions};
use serde_json::{json, Value};

use super::du::human;
use crate::config::Config;

/// Collects the history of the store under `vfs` by its config's policy.
pub(crate) fn gc_json(vfs: &Vfs) -> Result<Value> {
    let store = vfs.store();
    let policy = Config::load(store.dir())?.retention.policy()?;
    let report = vfs
        .gc(&policy)
        .map_err(|e| anyhow!("history collection failed: {e}"))?;
    Ok(serde_json::to_value(report)?)
}

fn open_here(store: Store) -> Result<Value> {
    let vfs = Vfs::new(
        Arc::new(store),
        VfsOptions {
            owner: super::current_user(),
            ..VfsOptions::default()
        },
    )
    .map_err(|e| anyhow!("cannot open the tree: {e}"))?;
    let out = gc_json(&vfs)?;
    vfs.sync()
        .map_err(|e| anyhow!("cannot sync the store: {e}"))?;
    Ok(out)
}

/// `backer gc [--json]`.
pub(crate) fn run(store_dir: &Path, json_out: bool) -> Result<()> {
    let v = super::history::via_node_or_store(store_dir, &json!({ "req": "gc" }), open_here)?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let r: Report = serde_json::from_value(v).map_err(|e| anyhow!("a bad reply: {e}"))?;
    println!(
        "kept {} of {} roots; freed {} chunks ({}) and {} tree nodes; rewrote {} packs",
        r.roots_kept,
        r.roots_before,
        r.chunks_freed,
        human(r.chunk_bytes_freed),
        r.nodes_freed,
        r.packs_rewritten
    );
    println!(
        "store {} -> {}",
        human(r.store_before),
        human(r.store_after)
    );
    Ok(())
}
