//! The node's network, as the binary sees it: the peer manager of
//! backer-replication ([`Peers`]) fed from `config.toml` and the vfs.
//! Only translation lives here: config entries to [`PeerSpec`]s, the
//! vfs's new roots to the manager's [`RootFeed`], its typed status to the
//! JSON `status` prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use backer_fs::events::Feed;
use backer_fs::vfs::Vfs;
use backer_replication::local::InstallHook;
use backer_replication::peers::Options;
use backer_replication::{PeerSpec, Peers, RootFeed};

use crate::config::Config;
use crate::services::{PeerInfo, PeerNet};

/// The running network side of a node.
pub(crate) struct Net {
    peers: Peers,
    store_dir: PathBuf,
}

impl Net {
    /// Starts the peer manager, listening at `listen`, else at the
    /// config's address, else nowhere (the node only dials out).
    pub(crate) fn start(
        store_dir: &Path,
        vfs: Arc<Vfs>,
        listen: Option<SocketAddr>,
        hook: Option<InstallHook>,
        events: Feed,
    ) -> Result<Net> {
        let cfg = Config::load(store_dir)?;
        let listen = listen.or(cfg.listen);
        // Fed before the manager starts: a root committed meanwhile still
        // reaches the sessions.
        let roots = RootFeed::default();
        feed_roots(&vfs, roots.clone(), events.clone());
        let opts = Options {
            listen,
            peers: peer_specs(&cfg)?,
            install_hook: hook,
            roots,
            events: Some(events),
        };
        let peers = Peers::start(vfs, opts).map_err(|e| match listen {
            Some(addr) => anyhow!("cannot listen on {addr}: {e}"),
            None => anyhow!("cannot start the network: {e}"),
        })?;
        Ok(Net {
            peers,
            store_dir: store_dir.to_path_buf(),
        })
    }

    /// Tells every peer we stop, waits until they have heard it, and
    /// closes the endpoint (a few seconds at most).
    pub(crate) fn shutdown(&self) {
        self.peers.shutdown();
    }
}

impl PeerNet for Net {
    fn reload(&self) -> Result<usize> {
        let cfg = Config::load(&self.store_dir)?;
        let specs = peer_specs(&cfg)?;
        let n = specs.len();
        self.peers.reload(specs);
        Ok(n)
    }

    fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .status()
            .into_iter()
            .map(|p| PeerInfo {
                id: p.id.to_string(),
                addr: p.addr,
                connected: p.connected,
                last_sync: p.last_sync,
                files_to_go: p.files_to_go,
                bytes_to_go: p.bytes_to_go,
                refused_us: p.refused_us,
            })
            .collect()
    }

    fn install_hook(&self) -> Option<InstallHook> {
        self.peers.install_hook()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.peers.listen_addr()
    }
}

/// The one place new local roots reach the peers and the event bus:
/// every root the vfs commits (committer, fsync, installed merge).
fn feed_roots(vfs: &Vfs, feed: RootFeed, events: Feed) {
    vfs.observe_roots(move |c| {
        feed.publish(c.root);
        events.root_published(c);
    });
}

/// The config's peers as the peer manager takes them.
fn peer_specs(cfg: &Config) -> Result<Vec<PeerSpec>> {
    let ids = cfg.peer_ids()?;
    Ok(ids
        .into_iter()
        .zip(&cfg.peers)
        .map(|(id, p)| PeerSpec {
            id,
            addr: p.addr.clone(),
        })
        .collect())
}
