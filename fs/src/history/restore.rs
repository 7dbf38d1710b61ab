//! `backer restore PATH --at TIME|COMMIT [--to DIR]`: a file or a whole
//! folder brought back as it was at TIME (the newest commit at or before
//! it) or in COMMIT.
//!
//! Without a folder to write to, the restore is a new change of the live
//! tree ([`crate::vfs::History::restore`]): it replicates like any edit and is itself in
//! the history, so it can be undone. With one, the old version is written
//! into that plain folder (created if missing) as `DIR/<last name of
//! PATH>`, and the tree is left alone: by the process that runs
//! [`restore_to`] (the command, with its caller's permissions), from a
//! [`Source`] (the store opened here, or a running node's socket).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::write::{exists_at, open_target, write_entries, Source, WriteOptions};
use super::{commit_id, commits, resolve_at, split_path, time_name};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::{Entry, Kind};
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

/// A commit as a restore takes it: what `at` named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The commit's id, in hex.
    pub commit: String,
    /// Its time.
    pub time: String,
    /// Its root folder tree, in hex.
    pub root: String,
}

impl Version {
    /// The root's hash.
    ///
    /// Errors: [`Error::Request`] if it is not 64 hex digits.
    pub fn root_hash(&self) -> Result<Hash> {
        Hash::from_hex(&self.root)
            .ok_or_else(|| Error::Request(format!("{:?} is not a tree hash", self.root)))
    }
}

/// The commit of `store` that `at` names (a time or a commit id).
///
/// Errors: [`Error::Request`] saying why `at` names no commit.
pub fn version_at(store: &Store, at: &str) -> Result<Version> {
    let log = commits(store)?;
    let c = resolve_at(&log, at)?;
    Ok(Version {
        commit: commit_id(c)?,
        time: time_name(c.time),
        root: Hash(c.root).to_hex(),
    })
}

/// Writes `path` as it was in the version `v` into the plain folder
/// `folder` (the caller's; made with the caller's umask if missing, see
/// [`super::write`]) as `folder/<last name of path>`, in this process,
/// nodes and chunks from `src`.
///
/// Errors: [`Error::Request`] for a path that names nothing, a target
/// that is in the way or options the caller may not use; the source's
/// and the target's errors.
pub fn restore_to(
    src: &impl Source,
    v: &Version,
    path: &str,
    folder: &Path,
    opts: WriteOptions,
) -> Result<Restored> {
    opts.check()?;
    let names = split_path(path)?;
    let (entry, shown, last) = entry_of(src, v, &names)?;
    let out = open_target(folder)?;
    let target = folder.join(OsStr::from_bytes(&last));
    if exists_at(&out, &last, &target)? {
        return Err(Error::Request(format!(
            "{} already exists",
            target.display()
        )));
    }
    let dir = entry.kind == Kind::Dir;
    let base = names
        .split_last()
        .map(|(_, up)| up.to_vec())
        .unwrap_or_default();
    let stats = write_entries(src, out, folder, base, vec![entry], opts, None)?;
    Ok(Restored {
        path: shown,
        commit: v.commit.clone(),
        time: v.time.clone(),
        dir,
        outcome: Outcome::Written {
            to: target,
            files: stats.files,
            bytes: stats.bytes,
        },
    })
}

/// The live entry at `names` in `v`, the path as shown and its last name.
fn entry_of(src: &impl Source, v: &Version, names: &[Vec<u8>]) -> Result<(Entry, String, Vec<u8>)> {
    let Some(last) = names.last() else {
        return Err(Error::Request(
            "restore needs a path inside the tree (a file or a folder), not the root".into(),
        ));
    };
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let shown = String::from_utf8_lossy(&names.join(&b'/')).into_owned();
    let entry = entry_at(src, v.root_hash()?, &names)?
        .filter(|e| !e.deleted)
        .ok_or_else(|| {
            Error::Request(format!(
                "{shown}: no such file or folder at {} (commit {})",
                v.time,
                &v.commit[..v.commit.len().min(12)]
            ))
        })?;
    Ok((entry, shown, last.clone()))
}

/// Carries out `req` with `vfs` (the running node's, or one opened by the
/// command); `hook` tells a mount's kernel about the changed names. A
/// restore into the tree is durable before this returns; one into a
/// folder is [`restore_to`] with the default options (no set-id bits).
///
/// Errors: [`Error::Request`] for a request that names nothing to restore
/// or a target that is in the way; the store's errors.
pub fn restore(
    vfs: &Vfs,
    hook: Option<&dyn Fn(&Installed)>,
    req: &RestoreRequest,
) -> Result<Restored> {
    let store = vfs.store();
    let v = version_at(&store, &req.at)?;
    if let Some(folder) = &req.to {
        return restore_to(&*store, &v, &req.path, folder, WriteOptions::default());
    }
    let names = split_path(&req.path)?;
    let (entry, shown, _) = entry_of(&*store, &v, &names)?;
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let no = |why: String| Error::Request(why);
    let installed = vfs
        .history()
        .restore(&names, v.root_hash()?)
        .map_err(|e| match e {
            Error::NotFound => no(format!("{shown}: no such file or folder in that version")),
            other => no(format!("cannot restore {shown}: {other}")),
        })?;
    // Durable before it is reported done, like an fsync; peers hear of it
    // after the kernel was told and the install's hold is dropped
    // (`Vfs::publish`).
    let durable = vfs.make_durable()?;
    if let (Some(i), Some(h)) = (&installed, hook) {
        h(i);
    }
    let new_commit = installed.map(|i| i.commit.id.to_hex());
    vfs.publish(durable);
    Ok(Restored {
        path: shown,
        commit: v.commit,
        time: v.time,
        dir: entry.kind == Kind::Dir,
        outcome: Outcome::Installed { new_commit },
    })
}
