//! `backer restore PATH --at TIME|COMMIT [--to DIR]`: bring a file or a
//! whole folder back as it was at TIME (the newest commit at or before it)
//! or in COMMIT, into the live tree or, with `--to`, into the plain folder
//! DIR (see [`backer_fs::history::restore`]).
//!
//! When a node runs, it does the work (it holds the store); else the
//! store is opened here.

use std::path::Path;

use anyhow::{Context, Result};
use backer_fs::history::{Outcome, RestoreRequest};

use super::backend::Backend;

/// `backer restore PATH --at TIME|COMMIT [--to DIR]`.
pub(crate) fn run(store_dir: &Path, path: &str, at: &str, to: Option<&Path>) -> Result<()> {
    let to = match to {
        // The node may run in another folder: it gets an absolute path.
        Some(t) => {
            Some(std::path::absolute(t).with_context(|| format!("bad folder {}", t.display()))?)
        }
        None => None,
    };
    let req = RestoreRequest {
        path: path.to_string(),
        at: at.to_string(),
        to,
    };
    let out = Backend::connect(store_dir)?.restore(req)?;
    let from = format!(
        "{} (commit {})",
        out.time,
        &out.commit[..out.commit.len().min(12)]
    );
    match out.outcome {
        Outcome::Written { to, files, bytes } => println!(
            "Restored {} as of {from} to {}: {files} files, {bytes} bytes",
            out.path,
            to.display()
        ),
        Outcome::Installed {
            new_commit: Some(_),
        } => println!("Restored {} as of {from} into the tree", out.path),
        Outcome::Installed { new_commit: None } => {
            println!("{} is already as of {from}: nothing to do", out.path)
        }
    }
    Ok(())
}
