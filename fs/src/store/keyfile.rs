//! The node's private key in its own file, `STORE/node.key` (PKCS#8 v2
//! DER, 0600), not a value in the engine: losing or rebuilding the
//! database must never change who the node is (DESIGN.md, "The store's own
//! files are the truth").
//!
//! Stores made before this kept the key in the engine's metadata under
//! [`LEGACY_KEY`]; opening one moves the key out ([`resolve`] writes the
//! file, the caller then drops the engine's copy).

use std::path::{Path, PathBuf};

use super::kv::{Kv, Space};
use super::private;
use crate::error::{Error, Result};
use crate::identity::NodeKey;

/// The key file's name in the store folder.
pub const FILE: &str = "node.key";

/// Where earlier versions kept the key: a [`Space::Meta`] key.
pub const LEGACY_KEY: &[u8] = b"node_key";

/// The key file of the store at `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the key file: `Ok(None)` if there is none, an error naming the
/// file if it cannot be read or holds no valid key.
pub fn read(dir: &Path) -> Result<Option<NodeKey>> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => NodeKey::from_pkcs8(&bytes).map(Some).map_err(|_| {
            Error::NodeKey(format!(
                "{} is damaged (not an Ed25519 key); put back a copy of it: a new key \
                 would make this store a different node",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

/// Writes the key file atomically (0600, fsynced, folder fsynced).
pub fn write(dir: &Path, key: &NodeKey) -> Result<()> {
    private::write_atomic(dir, FILE, key.pkcs8())
}

/// This store's key, from its file; a key still in the engine (a store
/// made by an earlier version) is written to the file first. Returns the
/// key and whether the engine still holds a copy that the caller must
/// remove. A store with neither, or whose file and engine disagree, is an
/// error: never a silently new identity.
pub fn resolve(dir: &Path, kv: &dyn Kv) -> Result<(NodeKey, bool)> {
    let legacy = kv.get(Space::Meta, LEGACY_KEY)?;
    match (read(dir)?, legacy) {
        (Some(key), None) => Ok((key, false)),
        (Some(key), Some(old)) if old == key.pkcs8() => Ok((key, true)),
        (Some(_), Some(_)) => Err(Error::NodeKey(format!(
            "{} and the database hold different node keys; remove the one that is \
             not this node's",
            path(dir).display()
        ))),
        (None, Some(old)) => {
            let key = NodeKey::from_pkcs8(&old).map_err(|_| {
                Error::NodeKey("the node key in the database is damaged".to_string())
            })?;
            write(dir, &key)?;
            tracing::info!(
                file = %path(dir).display(),
                node = %key.node_id(),
                "moved the node key out of the database into its own file"
            );
            Ok((key, true))
        }
        (None, None) => Err(Error::NodeKey(format!(
            "{} is missing; put back a copy of it: a new key would make this store a \
             different node",
            path(dir).display()
        ))),
    }
}
