//! `backer init`: create the store and this node's key; print the node id.

use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::store::Store;
use backer_fs::Error;

use crate::config::{Config, Web, DEFAULT_WEB_PORT};

/// Creates the store at `dir` and prints the new node id on the last line.
pub(crate) fn run(dir: &Path) -> Result<()> {
    let store = Store::create(dir).map_err(|err| match err {
        Error::Exists => anyhow!(
            "a store already exists at {} (its id: 'backer id')",
            dir.display()
        ),
        other => anyhow!("cannot create a store at {}: {other}", dir.display()),
    })?;
    write_web_config(dir)?;
    println!("Created a store at {}. This node's id:", dir.display());
    println!("{}", store.node_id());
    Ok(())
}

/// Writes the `[web]` table: the default port, or the next free one when
/// another store's node (another user) serves there, and a new API key.
fn write_web_config(dir: &Path) -> Result<()> {
    let mut cfg = Config::load(dir)?;
    let port = (DEFAULT_WEB_PORT..DEFAULT_WEB_PORT.saturating_add(100))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or(DEFAULT_WEB_PORT);
    cfg.web = Some(Web {
        listen: format!("127.0.0.1:{port}"),
        api_key: crate::web::new_secret()?,
    });
    cfg.save(dir)
}
