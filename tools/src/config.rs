//! `config.toml` in the store folder: the settings a node runs with.
//!
//! ```toml
//! listen = "127.0.0.1:22000"       # optional: where to accept peers
//!
//! [[peer]]
//! id = "ABCDEFG-..."               # a node id, as `backer id` prints it
//! addr = "192.0.2.7:22000"         # optional: no address, it dials us
//! ```
//!
//! Flags override the file for one run. The file is rewritten whole by
//! `peer add`/`peer remove` (atomically: a temp file renamed over it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use backer_fs::NodeId;
use serde::{Deserialize, Serialize};

/// The settings in `config.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the node accepts peers (none: it only dials out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<SocketAddr>,
    /// The peers this node trusts, and where to dial them.
    #[serde(default, rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub(crate) peers: Vec<Peer>,
}

/// One trusted peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Peer {
    /// Its node id, in the displayed form.
    pub(crate) id: String,
    /// Where to dial it (`host:port`); none: it dials us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
}

impl Peer {
    /// The peer's id, parsed.
    pub(crate) fn node_id(&self) -> Result<NodeId> {
        self.id
            .parse()
            .map_err(|e| anyhow!("bad peer id {:?} in config.toml: {e}", self.id))
    }
}

/// The config file of the store at `store`.
pub(crate) fn path(store: &Path) -> PathBuf {
    store.join("config.toml")
}

impl Config {
    /// Reads the store's config; a missing file is the default config.
    pub(crate) fn load(store: &Path) -> Result<Config> {
        let p = path(store);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(anyhow!("cannot read {}: {e}", p.display())),
        };
        let cfg: Config =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {}", p.display(), e.message()))?;
        for peer in &cfg.peers {
            peer.node_id()?;
        }
        Ok(cfg)
    }

    /// Writes the config atomically (temp file, fsync, rename).
    pub(crate) fn save(&self, store: &Path) -> Result<()> {
        let p = path(store);
        let tmp = store.join(".config.toml.tmp");
        let text = toml::to_string(self).context("cannot encode the config")?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }

    /// The ids of every trusted peer.
    pub(crate) fn peer_ids(&self) -> Result<Vec<NodeId>> {
        self.peers.iter().map(Peer::node_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), Config::default());
        let id = NodeId([3; 32]).to_string();
        let cfg = Config {
            listen: Some("127.0.0.1:22000".parse().unwrap()),
            peers: vec![
                Peer {
                    id: id.clone(),
                    addr: Some("127.0.0.1:22001".into()),
                },
                Peer {
                    id: NodeId([4; 32]).to_string(),
                    addr: None,
                },
            ],
        };
        cfg.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), cfg);
        assert_eq!(cfg.peer_ids().unwrap()[0], NodeId([3; 32]));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "listen = 5\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml") && !e.contains('\n'), "{e}");
        std::fs::write(path(dir.path()), "[[peer]]\nid = \"nope\"\n").unwrap();
        assert!(Config::load(dir.path()).is_err());
    }
}
