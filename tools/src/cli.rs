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
        let err = Cli::try_parse_from(["backer", "mount", "/mnt"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
