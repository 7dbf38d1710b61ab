//! One module per subcommand; [`run`] dispatches.

mod id;
mod init;
#[cfg(feature = "fuse")]
pub(crate) mod mount;
mod status;

use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::store::Store;
use backer_fs::Error;

use crate::cli::{Cli, Command};
use crate::store_dir;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let dir = store_dir::resolve(cli.store.as_deref())?;
    match cli.command {
        Command::Init => init::run(&dir),
        Command::Id => id::run(&dir),
        #[cfg(feature = "fuse")]
        Command::Mount {
            dir: mount_dir,
            foreground,
            read_only,
            allow_other,
            no_allow_other,
            auto_unmount,
        } => mount::run(
            &dir,
            &crate::node::MountArgs {
                dir: mount_dir,
                foreground,
                read_only,
                allow_other: match (allow_other, no_allow_other) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                auto_unmount,
            },
        ),
        Command::Status { json } => status::run(&dir, json),
    }
}

/// Opens the store at `dir`; a missing store becomes the advice to run
/// `backer init`.
///
/// backer-fs errors already name their cause in their `Display` (an I/O
/// error prints its source), so they are formatted once here rather than
/// chained, which would print the cause twice.
pub(crate) fn open_store(dir: &Path) -> Result<Store> {
    Store::open(dir).map_err(|err| match err {
        Error::NotFound => anyhow!("no store at {} (run 'backer init')", dir.display()),
        other => anyhow!("cannot open the store at {}: {other}", dir.display()),
    })
}
