//! `backer restore PATH --at TIME|COMMIT [--to DIR [--keep-setid]
//! [--keep-owners]]`: bring
//! a file or a whole folder back as it was at TIME (the newest commit at
//! or before it) or in COMMIT, into the live tree or, with `--to`, into
//! the plain folder DIR (see [`backer_fs::history::restore`] and
//! [`backer_fs::history::restore_to`]).
//!
//! Into the tree, a running node does the work (it holds the store); into
//! a folder, this process writes with the caller's permissions, the node
//! only streaming the old version. With no node, the store is opened here.

use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::history::{printable, Outcome, RestoreRequest, WriteOptions};

use super::backend::Backend;

/// `backer restore PATH --at TIME|COMMIT [--to DIR]`.
pub(crate) fn run(
    store_dir: &Path,
    path: &str,
    at: &str,
    to: Option<&Path>,
    opts: WriteOptions,
) -> Result<()> {
    opts.check().map_err(|e| anyhow!("{e}"))?;
    let backend = Backend::connect(store_dir)?;
    let out = match to {
        Some(folder) => backend
            .restore_to(path, at, folder, opts)
            .map_err(|e| anyhow!("{}", printable(&format!("{e:#}"))))?,
        None => backend.restore(RestoreRequest {
            path: path.to_string(),
            at: at.to_string(),
            to: None,
        })?,
    };
    let shown = printable(&out.path);
    let from = format!(
        "{} (commit {})",
        out.time,
        &out.commit[..out.commit.len().min(12)]
    );
    match out.outcome {
        Outcome::Written { to, files, bytes } => println!(
            "Restored {shown} as of {from} to {}: {files} files, {bytes} bytes",
            printable(&to.display().to_string())
        ),
        Outcome::Installed {
            new_commit: Some(_),
        } => println!("Restored {shown} as of {from} into the tree"),
        Outcome::Installed { new_commit: None } => {
            println!("{shown} is already as of {from}: nothing to do")
        }
    }
    Ok(())
}
