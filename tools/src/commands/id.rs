//! `backer id`: print this node's id alone on the last line.

use std::path::Path;

use anyhow::Result;

/// Prints the node id of the store at `dir`.
pub(crate) fn run(dir: &Path) -> Result<()> {
    let store = super::open_store(dir)?;
    println!("{}", store.node_id());
    Ok(())
}
