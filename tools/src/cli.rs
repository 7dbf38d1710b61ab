//! The command line grammar (clap derive). Only the commands that work in
//! this build are here; DESIGN.md lists the full contract.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// backer: a folder mirrored between all your machines.
#[derive(Debug, Parser)]
#[command(name = "backer", version, about)]
pub(crate) struct Cli {
    /// The store folder [default: $BACKER_STORE, else $XDG_DATA_HOME/backer,
    /// else ~/.local/share/backer].
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) store: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the store and this node's key; print the node id.
    Init,
    /// Print this node's id.
    Id,
    /// Mount the store at DIR and run the node (returns once the mount is up).
    #[cfg(feature = "fuse")]
    Mount {
        /// The mount point (an existing, empty folder).
        dir: std::path::PathBuf,
        /// Stay in the foreground until unmounted (logs on stderr).
        #[arg(long)]
        foreground: bool,
        /// Mount read-only.
        #[arg(long)]
        read_only: bool,
        /// Let every user in, the kernel checking mode bits (default when root).
        #[arg(long, conflicts_with = "no_allow_other")]
        allow_other: bool,
        /// Only the mounting user may enter (default when not root).
        #[arg(long)]
        no_allow_other: bool,
        /// Ask the kernel to unmount if the node dies (needs fusermount3).
        #[arg(long)]
        auto_unmount: bool,
    },
    /// Show the root hash, node id, peers and whether a node runs.
    Status {
        /// Print one JSON object: "root", "node", "peers", ...
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn store_flag_goes_before_the_command() {
        let cli = Cli::try_parse_from(["backer", "--store", "/s", "id"]).unwrap();
        assert_eq!(cli.store, Some(PathBuf::from("/s")));
        assert!(matches!(cli.command, Command::Id));
    }

    #[test]
    fn unknown_commands_are_usage_errors() {
        let err = Cli::try_parse_from(["backer", "frobnicate", "/mnt"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
