//! What the control protocol asks of the node's other parts, the peer
//! network (`net`) and the web page (`web`): traits they implement and
//! the types they report in. A leaf: it uses no other module of this
//! crate, so `control` can reach those parts without using them (they
//! use `control`, and a module circle would otherwise close).

use std::net::SocketAddr;

use anyhow::Result;
use backer_replication::local::InstallHook;
use serde::{Deserialize, Serialize};

/// One peer as `status --json` prints it (DESIGN.md: "id", "addr",
/// "connected" as a JSON boolean, "last_sync"), and what is left to
/// fetch from it. A node that does not run reports every peer of
/// config.toml in this shape too, none connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerInfo {
    /// Its node id, in the displayed form.
    pub(crate) id: String,
    /// Where the node dials it (`None`: it dials us).
    pub(crate) addr: Option<String>,
    /// Whether a session runs and both sides accepted each other.
    pub(crate) connected: bool,
    /// When both sides last held the same root (Unix seconds).
    pub(crate) last_sync: Option<u64>,
    /// Files the current pull still has to fetch.
    pub(crate) files_to_go: u64,
    /// Chunk bytes the current pull still has to fetch.
    pub(crate) bytes_to_go: u64,
    /// The peer refused our key when the node last dialled it (absent
    /// from older nodes: false).
    #[serde(default)]
    pub(crate) refused_us: bool,
}

/// The node's peer network, as the control protocol's requests reach it
/// (implemented by `net::Net`).
pub(crate) trait PeerNet: Send + Sync {
    /// The peers as `status --json` shows them.
    fn peers(&self) -> Vec<PeerInfo>;

    /// Re-reads `config.toml` and applies its peers (`reload`, after
    /// `peer add`/`peer remove`); returns how many peers are trusted now.
    fn reload(&self) -> Result<usize>;

    /// What tells the kernel about a tree installed outside a sync (a
    /// restore), if a mount runs.
    fn install_hook(&self) -> Option<InstallHook>;

    /// Where the node accepts peers; `None` when it only dials out.
    fn local_addr(&self) -> Option<SocketAddr>;
}

/// The web page's logins, as `backer web` asks for one (implemented by
/// `web::Access`).
pub(crate) trait WebLogins: Send + Sync {
    /// A new one-time login URL.
    fn login_url(&self) -> String;
}
