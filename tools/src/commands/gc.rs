//! `backer gc [--json]`: drop the roots the retention policy of
//! `config.toml` does not keep and free what only they reached (see
//! [`backer_fs::vfs::History::gc`]). Run by the node when one runs, else here.

use std::path::Path;

use anyhow::Result;

use super::backend::Backend;
use super::du::human;

/// `backer gc [--json]`.
pub(crate) fn run(store_dir: &Path, json_out: bool) -> Result<()> {
    let r = Backend::connect(store_dir)?.gc()?;
    if json_out {
        println!("{}", serde_json::to_value(&r)?);
        return Ok(());
    }
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
