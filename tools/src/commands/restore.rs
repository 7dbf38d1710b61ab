//! `backer restore PATH --at TIME|COMMIT [--to DIR]`: bring a file or a
//! whole folder back as it was at TIME (the newest commit at or before it)
//! or in COMMIT.
//!
//! Without `--to`, the restore is a new change of the live tree
//! ([`Vfs::restore`]): it replicates like any edit and is itself in the
//! history, so it can be undone. With `--to DIR`, the old version is
//! written into the plain folder DIR (created if missing) as
//! `DIR/<last name of PATH>`, and the tree is left alone.
//!
//! When a node runs, it does the work (it holds the store); else the
//! store is opened here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use backer_fs::store::Store;
use backer_fs::vfs::{entry_at, Installed, Vfs, VfsOptions};
use backer_fs::{Error, Hash};
use serde_json::{json, Value};

use super::export::write_entry;
use super::history::{commit_id, commits, resolve_at, split_path, time_name};

/// A restore request, as the CLI sends it to a node.
pub(crate) struct Request {
    /// The path in the tree.
    pub(crate) path: String,
    /// The time or commit id.
    pub(crate) at: String,
    /// The plain folder to write to, absolute; `None`: the live tree.
    pub(crate) to: Option<PathBuf>,
}

impl Request {
    /// The request from its JSON form.
    pub(crate) fn from_json(v: &Value) -> Result<Request> {
        Ok(Request {
            path: v["path"]
                .as_str()
                .ok_or_else(|| anyhow!("restore: no path"))?
                .to_string(),
            at: v["at"]
                .as_str()
                .ok_or_else(|| anyhow!("restore: no --at"))?
                .to_string(),
            to: v["to"].as_str().map(PathBuf::from),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "req": "restore",
            "path": self.path,
            "at": self.at,
            "to": self.to.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// Carries out `req` on `store`, with `vfs` (the node's, or one opened
/// here) for a restore into the live tree; `hook` tells a mount's kernel
/// about the changed names. Returns what `restore` prints, as JSON.
pub(crate) fn restore_json(
    store: &Store,
    vfs: Option<&Vfs>,
    hook: Option<&dyn Fn(&Installed)>,
    req: &Request,
) -> Result<Value> {
    let names = split_path(&req.path)?;
    if names.is_empty() {
        bail!("restore needs a path inside the tree (a file or a folder), not the root");
    }
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let log = commits(store)?;
    let c = resolve_at(&log, &req.at)?;
    let root = Hash(c.root);
    let shown = String::from_utf8_lossy(&names.join(&b'/')).into_owned();
    let entry = entry_at(store, root, &names)
        .map_err(|e| anyhow!("cannot read the tree of commit {}: {e}", c.seq))?
        .filter(|e| !e.deleted)
        .ok_or_else(|| {
            anyhow!(
                "{shown}: no such file or folder at {} (commit {})",
                time_name(c.time),
                &commit_id(c).unwrap_or_default()[..12]
            )
        })?;
    let mut out = json!({
        "path": shown,
        "commit": commit_id(c)?,
        "time": time_name(c.time),
        "kind": if entry.kind == backer_fs::tree::Kind::Dir { "dir" } else { "file" },
    });
    match &req.to {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let target = dir.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(
                names[names.len() - 1],
            )));
            if target.symlink_metadata().is_ok() {
                bail!("{} already exists", target.display());
            }
            let stats = write_entry(store, entry, dir)?;
            out["to"] = json!(target.display().to_string());
            out["files"] = json!(stats.files);
            out["bytes"] = json!(stats.bytes);
        }
        None => {
            let vfs = vfs.ok_or_else(|| anyhow!("restore: no live tree"))?;
            let installed = vfs.restore(&names, root).map_err(|e| match e {
                Error::NotFound => anyhow!("{shown}: no such file or folder in that version"),
                other => anyhow!("cannot restore {shown}: {other}"),
            })?;
            // Durable before it is reported done, like an fsync; peers
            // hear of it after the kernel was told (`Vfs::publish`).
            let durable = vfs
                .make_durable()
                .map_err(|e| anyhow!("cannot save the restore: {e}"))?;
            if let (Some(i), Some(h)) = (&installed, hook) {
                h(i);
            }
            out["changed"] = json!(installed.is_some());
            if let Some(i) = installed {
                out["new_commit"] = json!(i.commit.id.to_hex());
                out["root"] = json!(i.commit.root.to_hex());
            }
            vfs.publish(durable);
        }
    }
    Ok(out)
}

/// `backer restore PATH --at TIME|COMMIT [--to DIR]`.
pub(crate) fn run(store_dir: &Path, path: &str, at: &str, to: Option<&Path>) -> Result<()> {
    let to = match to {
        Some(t) => {
            Some(std::path::absolute(t).with_context(|| format!("bad folder {}", t.display()))?)
        }
        None => None,
    };
    let req = Request {
        path: path.to_string(),
        at: at.to_string(),
        to,
    };
    let out = super::history::via_node_or_store(store_dir, &req.to_json(), |store| {
        let store = Arc::new(store);
        let vfs = match req.to {
            Some(_) => None,
            None => Some(Vfs::new(
                store.clone(),
                VfsOptions {
                    owner: super::current_user(),
                    ..VfsOptions::default()
                },
            )?),
        };
        let out = restore_json(&store, vfs.as_ref(), None, &req)?;
        if let Some(v) = vfs {
            v.sync()
                .map_err(|e| anyhow!("cannot save the restore: {e}"))?;
        }
        Ok(out)
    })?;
    let s = |k: &str| out[k].as_str().unwrap_or("").to_string();
    let commit = s("commit");
    let from = format!("{} (commit {})", s("time"), &commit[..commit.len().min(12)]);
    match out["to"].as_str() {
        Some(to) => println!(
            "Restored {} as of {from} to {to}: {} files, {} bytes",
            s("path"),
            out["files"].as_u64().unwrap_or(0),
            out["bytes"].as_u64().unwrap_or(0)
        ),
        None if out["changed"].as_bool() == Some(true) => {
            println!("Restored {} as of {from} into the tree", s("path"))
        }
        None => println!("{} is already as of {from}: nothing to do", s("path")),
    }
    Ok(())
}
