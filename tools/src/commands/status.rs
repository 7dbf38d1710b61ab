//! `backer status [--json]`: root hash, node id, peers, and whether a node
//! runs. Asks the running node over its socket, else opens the store.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use backer_fs::vfs::{Vfs, VfsOptions};

/// Prints the status, as one JSON object with `json`.
pub(crate) fn run(store_dir: &Path, json: bool) -> Result<()> {
    let status = match crate::control::ask(store_dir, "status")? {
        Some(s) => s,
        None => {
            let store = super::open_store(store_dir)?;
            let vfs = Vfs::new(Arc::new(store), VfsOptions::default())?;
            let mut s = crate::control::status_json(&vfs, None)?;
            s["pid"] = serde_json::Value::Null;
            s
        }
    };
    if json {
        println!("{status}");
        return Ok(());
    }
    let field = |k: &str| status[k].as_str().map(str::to_string);
    println!("node    {}", field("node").unwrap_or_default());
    println!("root    {}", field("root").unwrap_or_default());
    match (status["pid"].as_u64(), field("mount")) {
        (Some(pid), Some(m)) => println!("running pid {pid}, mounted at {m}"),
        (Some(pid), None) => println!("running pid {pid}"),
        (None, _) => println!("not running"),
    }
    println!("commits {}", status["commits"].as_u64().unwrap_or(0));
    let peers = status["peers"].as_array().map_or(0, Vec::len);
    println!(
        "peers   {}",
        if peers == 0 {
            "none".to_string()
        } else {
            peers.to_string()
        }
    );
    Ok(())
}
