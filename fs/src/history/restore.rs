//! `backer restore PATH --at TIME|COMMIT [--to DIR]`: a file or a whole
//! folder brought back as it was at TIME (the newest commit at or before
//! it) or in COMMIT.
//!
//! Without a folder to write to, the restore is a new change of the live
//! tree ([`Vfs::restore`]): it replicates like any edit and is itself in
//! the history, so it can be undone. With one, the old version is written
//! into that plain folder (created if missing) as `DIR/<last name of
//! PATH>`, and the tree is left alone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::export::export_entry;
use super::{commit_id, commits, resolve_at, split_path, time_name};
use crate::error::{Error, Result};
use crate::tree::Kind;
use crate::vfs::{entry_at, Installed, Vfs};
use crate::Hash;

/// What to restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The path in the tree.
    pub path: String,
    /// The time or commit id.
    pub at: String,
    /// The plain folder to write to, absolute; `None`: the live tree.
    pub to: Option<PathBuf>,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The path restored, as the tree names it.
    pub path: String,
    /// The commit it was taken from, in hex.
    pub commit: String,
    /// That commit's time.
    pub time: String,
    /// Whether it is a folder.
    pub dir: bool,
    /// Where it went.
    pub outcome: Outcome,
}

/// Where a restored version went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written into a plain folder.
    Written {
        /// The path written.
        to: PathBuf,
        /// Regular files written.
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// Made a new commit of the live tree (`None`: it was already so).
    Installed {
        /// The new commit's id, in hex.
        new_commit: Option<String>,
    },
}

/// Carries out `req` with `vfs` (the running node's, or one opened by the
/// command); `hook` tells a mount's kernel about the changed names. The
/// restore is durable before this returns.
///
/// Errors: [`Error::Request`] for a request that names nothing to restore
/// or a target that is in the way; the store's errors.
pub fn restore(
    vfs: &Vfs,
    hook: Option<&dyn Fn(&Installed)>,
    req: &RestoreRequest,
) -> Result<Restored> {
    let no = |why: String| Error::Request(why);
    let names = split_path(&req.path)?;
    let Some(last) = names.last() else {
        return Err(no(
            "restore needs a path inside the tree (a file or a folder), not the root".into(),
        ));
    };
    let last = String::from_utf8_lossy(last).into_owned();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let store = vfs.store();
    let log = commits(&store)?;
    let c = resolve_at(&log, &req.at)?;
    let root = Hash(c.root);
    let id = commit_id(c)?;
    let shown = String::from_utf8_lossy(&names.join(&b'/')).into_owned();
    let entry = entry_at(&*store, root, &names)?
        .filter(|e| !e.deleted)
        .ok_or_else(|| {
            no(format!(
                "{shown}: no such file or folder at {} (commit {})",
                time_name(c.time),
                &id[..id.len().min(12)]
            ))
        })?;
    let dir = entry.kind == Kind::Dir;
    let outcome = match &req.to {
        Some(folder) => {
            std::fs::create_dir_all(folder)
                .map_err(|e| Error::io(format!("cannot create {}", folder.display()), e))?;
            let target = folder.join(&last);
            if target.symlink_metadata().is_ok() {
                return Err(no(format!("{} already exists", target.display())));
            }
            let stats = export_entry(&store, entry, folder)?;
            Outcome::Written {
                to: target,
                files: stats.files,
                bytes: stats.bytes,
            }
        }
        None => {
            let installed = vfs.restore(&names, root).map_err(|e| match e {
                Error::NotFound => no(format!("{shown}: no such file or folder in that version")),
                other => no(format!("cannot restore {shown}: {other}")),
            })?;
            // Durable before it is reported done, like an fsync; peers
            // hear of it after the kernel was told (`Vfs::publish`).
            let durable = vfs.make_durable()?;
            if let (Some(i), Some(h)) = (&installed, hook) {
                h(i);
            }
            let new_commit = installed.map(|i| i.commit.id.to_hex());
            vfs.publish(durable);
            Outcome::Installed { new_commit }
        }
    };
    Ok(Restored {
        path: shown,
        commit: id,
        time: time_name(c.time),
        dir,
        outcome,
    })
}
