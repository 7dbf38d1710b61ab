//! `backer id`: print this node's id alone on the last line.

use std::path::Path;

use anyhow::{anyhow, Result};

/// Prints the node id of the store at `dir`: asks the running node (which
/// holds the store locked) if there is one, else opens the store.
pub(crate) fn run(dir: &Path) -> Result<()> {
    if let Some(status) = crate::control::ask(dir, "status")? {
        let id = status["node"]
            .as_str()
            .ok_or_else(|| anyhow!("the running node did not say its id"))?;
        println!("{id}");
        return Ok(());
    }
    let store = super::open_store(dir)?;
    println!("{}", store.node_id());
    Ok(())
}
