//! `backer init`: create the store and this node's key; print the node id.

use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::store::Store;
use backer_fs::Error;

/// Creates the store at `dir` and prints the new node id on the last line.
pub(crate) fn run(dir: &Path) -> Result<()> {
    let store = Store::create(dir).map_err(|err| match err {
        Error::Exists => anyhow!(
            "a store already exists at {} (its id: 'backer id')",
            dir.display()
        ),
        other => anyhow!("cannot create a store at {}: {other}", dir.display()),
    })?;
    println!("Created a store at {}. This node's id:", dir.display());
    println!("{}", store.node_id());
    Ok(())
}
