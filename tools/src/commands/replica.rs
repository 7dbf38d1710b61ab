//! `backer replica [--listen ADDR] [--web ADDR]`: run the node with no mount, in the
//! foreground, until SIGINT or SIGTERM (servers, containers). Works in a
//! build without FUSE.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

/// Checks that the store exists and is free, then runs the node over it,
/// accepting peers at `listen` (else the config's address) and serving
/// the web page at `web` (else the config's).
pub(crate) fn run(store: &Path, listen: Option<SocketAddr>, web: Option<String>) -> Result<()> {
    let store = super::require_store(store)?;
    super::require_no_node(&store)?;
    crate::node::run(&store, None, listen, web)
}
