//! One module per subcommand; [`run`] dispatches. Commands that need the
//! store run against a [`backend::Backend`]: the running node, or the
//! store opened here.

mod backend;
mod check;
mod completions;
mod du;
mod events;
mod export;
mod gc;
mod history;
mod id;
#[cfg(feature = "fuse")]
mod import;
mod init;
#[cfg(feature = "fuse")]
pub(crate) mod mount;
mod peer;
mod replica;
mod restore;
mod status;
pub(crate) mod stop;
mod tree_path;
mod web;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use backer_fs::history::WriteOptions;
use backer_fs::store::Store;
use backer_fs::Error;

use crate::cli::{Cli, Command, PeerCommand};
use crate::store_dir;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let dir = match cli.command {
        // These need no store, nor even a home folder.
        Command::Completions { .. } | Command::Man { .. } => PathBuf::new(),
        _ => store_dir::resolve(cli.store.as_deref())?,
    };
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
            listen,
            web,
            import,
        } => mount::run_listening(
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
            listen,
            web,
            import,
        ),
        Command::Replica { listen, web } => replica::run(&dir, listen, web),
        Command::Stop => stop::run(&dir),
        Command::Peer { command } => match command {
            PeerCommand::Add { id, addr } => peer::add(&dir, &id, addr.as_deref()),
            PeerCommand::Remove { id } => peer::remove(&dir, &id),
            PeerCommand::List => peer::list(&dir),
        },
        Command::Export {
            dir: out,
            keep_setid,
            keep_owners,
        } => export::run(
            &dir,
            &out,
            WriteOptions {
                keep_setid,
                keep_owners,
            },
        ),
        Command::Status { json } => status::run(&dir, json),
        Command::Log { path, json } => history::run(&dir, path.as_deref(), json),
        Command::Restore {
            path,
            at,
            to,
            keep_setid,
            keep_owners,
        } => restore::run(
            &dir,
            &path,
            &at,
            to.as_deref(),
            WriteOptions {
                keep_setid,
                keep_owners,
            },
        ),
        Command::Du { json } => du::run(&dir, json),
        Command::Gc { json } => gc::run(&dir, json),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { dir: out } => completions::man_pages(&out),
        Command::Check { repair, json } => check::run(&dir, repair, json),
        Command::Events { json } => events::run(&dir, json),
        Command::Web => web::run(&dir),
    }
}

/// Checks that a store exists at `dir` (its `db` folder) without opening
/// it; returns `dir` canonicalised when it can be.
pub(crate) fn require_store(dir: &Path) -> Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // A store whose database was lost still has its key: it is a store
    // (opening it says so, and `check --repair` rebuilds it).
    if !dir.join("db").is_dir() && !dir.join("node.key").is_file() {
        bail!("no store at {} (run 'backer init')", dir.display());
    }
    Ok(dir)
}

/// Fails if a node runs on the store at `dir` (it answers on the socket).
pub(crate) fn require_no_node(dir: &Path) -> Result<()> {
    if backend::Remote::find(dir)?.is_some() {
        bail!(
            "the store at {} is already in use by a running node",
            dir.display()
        );
    }
    Ok(())
}

/// Opens the store at `dir`; a missing store becomes the advice to run
/// `backer init`.
///
/// backer-fs errors already name their cause in their `Display` (an I/O
/// error prints its source), so they are formatted once here rather than
/// chained, which would print the cause twice.
pub(crate) fn open_store(dir: &Path) -> Result<Store> {
    Store::open(dir).map_err(|err| open_store_error(dir, err))
}

/// The one-line error for a store at `dir` that does not open.
pub(crate) fn open_store_error(dir: &Path, err: Error) -> anyhow::Error {
    match err {
        Error::NotFound => anyhow!("no store at {} (run 'backer init')", dir.display()),
        other => anyhow!("cannot open the store at {}: {other}", dir.display()),
    }
}

/// `n` and `word`, with an "s" unless `n` is 1 ("1 file", "2 files").
pub(crate) fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn plural_words() {
        assert_eq!(super::plural(0, "file"), "0 files");
        assert_eq!(super::plural(1, "file"), "1 file");
        assert_eq!(super::plural(2, "byte"), "2 bytes");
    }
}
