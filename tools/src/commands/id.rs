//! `backer id`: print this node's id alone on the last line.

use std::path::Path;

use anyhow::Result;

use super::backend::Remote;

/// Prints the node id of the store at `dir`: asks the running node (which
/// holds the store locked) if there is one, else opens the store.
pub(crate) fn run(dir: &Path) -> Result<()> {
    if let Some((_, status)) = Remote::find(dir)? {
        println!("{}", status.node);
        return Ok(());
    }
    let store = super::open_store(dir)?;
    println!("{}", store.node_id());
    Ok(())
}
