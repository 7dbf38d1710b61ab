//! How much the live tree and its history take (`backer du`):
//!
//! - live size: the sum of the sizes of the files in the current tree
//!   (what `du --apparent-size` of the mount would say, holes included);
//! - live unique bytes: the bytes of the distinct chunks the current tree
//!   references (what storing the live tree alone takes);
//! - dedup saving: live data bytes (file bytes that are not holes) minus
//!   live unique bytes: what storing identical chunks once saves in the
//!   live tree (copies, shared parts of files);
//! - stored bytes: the bytes of every chunk in the store;
//! - history size: stored bytes minus live unique bytes: what is kept only
//!   for past versions (until `gc` prunes it).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::commits;
use crate::error::Result;
use crate::store::kv::for_each;
use crate::store::{Location, Space, Store};
use crate::tree::content::{self, Extent};
use crate::tree::{dir, Kind};
use crate::Hash;

/// The sizes of a store, as `du --json` prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Du {
    /// Commits in the log.
    pub commits: u64,
    /// Files in the current tree.
    pub live_files: u64,
    /// Their sizes, holes included.
    pub live_bytes: u64,
    /// Their bytes that are not holes.
    pub live_data_bytes: u64,
    /// The bytes of the distinct chunks they reference.
    pub live_unique_bytes: u64,
    /// How many distinct chunks they reference.
    pub live_chunks: u64,
    /// `live_data_bytes - live_unique_bytes`.
    pub dedup_saving_bytes: u64,
    /// The bytes of every chunk stored.
    pub stored_bytes: u64,
    /// How many chunks are stored.
    pub stored_chunks: u64,
    /// `stored_bytes - live_unique_bytes`: kept only for past versions.
    pub history_bytes: u64,
}

/// Adds the files under the folder tree `tree` to `du`, their chunks to
/// `chunks`; folders are walked from a heap stack.
fn walk(nodes: &Store, tree: Hash, du: &mut Du, chunks: &mut HashSet<Hash>) -> Result<()> {
    let mut folders = vec![tree];
    while let Some(tree) = folders.pop() {
        for e in dir::entries(nodes, tree)? {
            if e.deleted {
                continue;
            }
            match e.kind {
                Kind::Dir => folders.push(e.hash),
                Kind::File => {
                    du.live_files += 1;
                    du.live_bytes += e.size;
                    if e.hash == Hash::ZERO {
                        continue;
                    }
                    for x in content::extents(nodes, e.hash)? {
                        if let Extent::Data { hash, len } = x {
                            du.live_data_bytes += u64::from(len);
                            if chunks.insert(hash) {
                                du.live_unique_bytes += u64::from(len);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The sizes of `store` (see the module documentation).
pub fn du(store: &Store) -> Result<Du> {
    let log = commits(store)?;
    let mut out = Du {
        commits: log.len() as u64,
        ..Du::default()
    };
    let mut chunks = HashSet::new();
    if let Some(head) = log.first() {
        walk(store, Hash(head.root), &mut out, &mut chunks)?;
    }
    out.live_chunks = chunks.len() as u64;
    for_each(store.kv(), Space::Chunks, &[], None, |_, v| {
        out.stored_bytes += u64::from(Location::decode(v)?.len);
        out.stored_chunks += 1;
        Ok(())
    })?;
    out.dedup_saving_bytes = out.live_data_bytes.saturating_sub(out.live_unique_bytes);
    out.history_bytes = out.stored_bytes.saturating_sub(out.live_unique_bytes);
    Ok(out)
}
