//! `backer web`: asks the running node for a one-time login URL to its web
//! page and prints it alone on the last line.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::control::client::ask;
use crate::control::{Request, Response};

/// Prints the login URL of the node on the store at `store`.
pub(crate) fn run(store: &Path) -> Result<()> {
    let store = super::require_store(store)?;
    match ask(&store, &Request::WebLogin, Duration::from_secs(30))? {
        Some(Response::WebLogin(url)) => {
            println!("Open this page (the link works once):");
            println!("{url}");
            Ok(())
        }
        Some(Response::Error(e)) => Err(anyhow!(e)),
        Some(other) => bail!("the node answered {other:?}"),
        None => bail!(
            "no node runs on {} (start 'backer mount' or 'backer replica')",
            store.display()
        ),
    }
}
