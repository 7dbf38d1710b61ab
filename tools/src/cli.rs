//! The command line grammar (clap derive). Only the commands that work in
//! this build are here; DESIGN.md lists the full contract.
//!
//! Values the commands check themselves (node ids, peer addresses) are
//! plain strings here, so a bad one is a one-line error of the command,
//! not a clap usage message.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// backer: a folder mirrored between all your machines.
#[derive(Debug, Parser)]
#[command(name = "backer", version)]
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
        /// Accept peers at ADDR (ip:port) [default: `listen` in config.toml,
        /// else only dial out].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Run the node with no mount, in the foreground (servers, containers).
    Replica {
        /// Accept peers at ADDR (ip:port) [default: `listen` in config.toml,
        /// else only dial out].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Add, remove or list the peers this node trusts (config.toml).
    Peer {
        /// What to do with the peers.
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Write the current tree of the store to a plain folder, with your
    /// own permissions (from a running node's newest commit). Set-id bits
    /// are dropped and devices skipped unless root asks with --keep-setid
    /// (and then only those the live tree has the same, owned alike).
    Export {
        /// Where to write it (created if missing; must be empty if not).
        dir: PathBuf,
        /// Keep setuid/setgid bits the live tree vouches for, and (with
        /// --keep-owners) its root-made device nodes (root only).
        #[arg(long)]
        keep_setid: bool,
        /// Give each file the owner the live tree gives its path (root
        /// only; else everything written is yours).
        #[arg(long)]
        keep_owners: bool,
    },
    /// Show the root hash, node id, peers and whether a node runs.
    Status {
        /// Print one JSON object: "root", "node", "peers", ...
        #[arg(long)]
        json: bool,
    },
    /// The commits that changed PATH (or anything), newest first: time,
    /// author, what changed and sizes.
    Log {
        /// A file or folder in the tree (e.g. docs/notes.txt).
        path: Option<String>,
        /// Print one JSON array of objects.
        #[arg(long)]
        json: bool,
    },
    /// Bring a file or folder back as it was at TIME or in COMMIT: as a
    /// new change of the tree, or with --to into a plain folder.
    Restore {
        /// A file or folder in the tree (e.g. docs/notes.txt).
        path: String,
        /// A time as snapshot folders name it (2026-11-26T04:30:12.345Z,
        /// UTC; a prefix such as 2026-11-26T04:30 works), or a commit id
        /// (at least 8 hex digits).
        #[arg(long, value_name = "TIME|COMMIT")]
        at: String,
        /// Write it into this plain folder (as DIR/<name>) instead of the
        /// tree, with your own permissions.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// With --to: keep setuid/setgid bits the live tree vouches for,
        /// and (with --keep-owners) its root-made device nodes (root only).
        #[arg(long, requires = "to")]
        keep_setid: bool,
        /// With --to: give each file the owner the live tree gives its
        /// path (root only).
        #[arg(long, requires = "to")]
        keep_owners: bool,
    },
    /// Live size, history size and what deduplication saves.
    Du {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Prune history by the retention policy in config.toml, and free what
    /// only the dropped versions held (a running node also does this
    /// every `retention.gc_every`, 1h by default).
    Gc {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify every pack record, tree node and index entry; exit 1 if
    /// anything is still bad. Through the running node, else on the
    /// store itself.
    Check {
        /// Rebuild index entries the packs prove, write records with a
        /// damaged header again, and quarantine bad chunks.
        #[arg(long)]
        repair: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The `peer` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PeerCommand {
    /// Trust the node ID; dial it at ADDR (host:port), or, without ADDR,
    /// wait for it to dial us. Adding a known id changes its address.
    Add {
        /// The peer's node id, as its `backer id` prints it.
        id: String,
        /// Where to reach it (host:port); none: it dials us.
        addr: Option<String>,
    },
    /// Stop trusting the node ID.
    Remove {
        /// The peer's node id.
        id: String,
    },
    /// One line per peer: id, address ("-": it dials us) and, when a node
    /// runs, whether it is connected and when it last synced.
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

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

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["backer"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn peer_add_with_and_without_an_address() {
        match parse(&["peer", "add", "ID", "host:1"]) {
            Command::Peer {
                command: PeerCommand::Add { id, addr },
            } => assert_eq!((id.as_str(), addr.as_deref()), ("ID", Some("host:1"))),
            other => panic!("{other:?}"),
        }
        match parse(&["peer", "add", "ID"]) {
            Command::Peer {
                command: PeerCommand::Add { id, addr: None },
            } => assert_eq!(id, "ID"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peer_remove_and_list() {
        assert!(matches!(
            parse(&["peer", "remove", "X"]),
            Command::Peer { command: PeerCommand::Remove { id } } if id == "X"
        ));
        assert!(matches!(
            parse(&["peer", "list"]),
            Command::Peer {
                command: PeerCommand::List
            }
        ));
    }

    #[test]
    fn peer_needs_its_arguments() {
        for args in [
            &["backer", "peer"][..],
            &["backer", "peer", "add"],
            &["backer", "peer", "remove"],
            &["backer", "peer", "add", "a", "b", "c"],
            &["backer", "peer", "list", "x"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn replica_listen_is_a_socket_address() {
        assert!(matches!(
            parse(&["replica"]),
            Command::Replica { listen: None }
        ));
        let want: SocketAddr = "127.0.0.1:22000".parse().unwrap();
        assert!(matches!(
            parse(&["replica", "--listen", "127.0.0.1:22000"]),
            Command::Replica { listen: Some(a) } if a == want
        ));
        let err = Cli::try_parse_from(["backer", "replica", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn store_flag_may_follow_the_command() {
        let cli = Cli::try_parse_from(["backer", "export", "/out", "--store", "/s"]).unwrap();
        assert_eq!(cli.store, Some(PathBuf::from("/s")));
        assert!(
            matches!(cli.command, Command::Export { dir, keep_setid: false, keep_owners: false } if dir == Path::new("/out"))
        );
    }

    #[cfg(feature = "fuse")]
    #[test]
    fn mount_takes_listen() {
        match parse(&["mount", "/m", "--foreground", "--listen", "[::1]:7"]) {
            Command::Mount {
                dir,
                foreground: true,
                listen: Some(a),
                ..
            } => {
                assert_eq!(dir, Path::new("/m"));
                assert_eq!(a, "[::1]:7".parse::<SocketAddr>().unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["mount", "/m"]),
            Command::Mount {
                listen: None,
                foreground: false,
                ..
            }
        ));
    }

    #[test]
    fn history_commands() {
        assert!(matches!(
            parse(&["log"]),
            Command::Log {
                path: None,
                json: false
            }
        ));
        assert!(matches!(
            parse(&["log", "a/b", "--json"]),
            Command::Log { path: Some(p), json: true } if p == "a/b"
        ));
        match parse(&["restore", "a", "--at", "2026-11-26T04:30", "--to", "/o"]) {
            Command::Restore {
                path,
                at,
                to,
                keep_setid: false,
                keep_owners: false,
            } => {
                assert_eq!((path.as_str(), at.as_str()), ("a", "2026-11-26T04:30"));
                assert_eq!(to.as_deref(), Some(Path::new("/o")));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["restore", "a", "--at", "x", "--to", "/o", "--keep-setid"]),
            Command::Restore {
                keep_setid: true,
                ..
            }
        ));
        assert!(matches!(
            parse(&["export", "/o", "--keep-setid"]),
            Command::Export {
                keep_setid: true,
                ..
            }
        ));
        assert!(matches!(
            parse(&["restore", "a", "--at", "x", "--to", "/o", "--keep-owners"]),
            Command::Restore {
                keep_owners: true,
                keep_setid: false,
                ..
            }
        ));
        // --keep-setid means nothing for a restore into the tree.
        let err = Cli::try_parse_from(["backer", "restore", "a", "--at", "x", "--keep-setid"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["backer", "restore", "a"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(matches!(
            parse(&["du", "--json"]),
            Command::Du { json: true }
        ));
    }

    #[test]
    fn unknown_commands_are_usage_errors() {
        let err = Cli::try_parse_from(["backer", "frobnicate", "/mnt"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
