//! The control protocol of `STORE/backer.sock`: a running node serves it,
//! and every command that needs the store asks it instead of opening the
//! store, which the node holds locked.
//!
//! One request per connection: one JSON object on one line, tagged by
//! `"req"` (`{"req":"status"}`, `{"req":"log","path":"a/b"}`), answered by
//! one JSON line, a [`Response`]. There is no other syntax.
//!
//! Modules depend one way: commands use a backend, which is either the
//! [`client`] of a running node or a [`Local`] store opened by the
//! command; the node's [`server`] answers with a [`Local`] of its own.
//! [`Local`] does the work through the typed API of backer-fs
//! ([`backer_fs::history`]) and never calls a command.
//!
//! A socket left by a killed node refuses connections: it is removed, not
//! trusted.

pub(crate) mod client;
mod local;
mod server;

use std::path::{Path, PathBuf};

use backer_fs::gc::Report;
use backer_fs::history::{Du, Exported, LogEntry, RestoreRequest, Restored};
use serde::{Deserialize, Serialize};

pub(crate) use local::Local;
pub(crate) use server::serve;

/// Where a store's node listens.
pub(crate) fn socket_path(store: &Path) -> PathBuf {
    store.join("backer.sock")
}

/// What a command asks a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Who and where the node is, and its peers.
    Status,
    /// Re-read config.toml (its peers changed).
    Reload,
    /// The log, of everything or of one path.
    Log {
        /// Only changes at or under this path.
        path: Option<String>,
    },
    /// How much the live tree and its history take.
    Du,
    /// Collect history by the config's retention policy.
    Gc,
    /// Bring a path back as it was.
    Restore(RestoreRequest),
    /// Write the newest committed tree to a plain folder.
    Export {
        /// The folder, absolute.
        to: PathBuf,
    },
}

/// A node's answer: the reply to the request, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    /// To [`Request::Status`].
    Status(Status),
    /// To [`Request::Reload`].
    Reloaded,
    /// To [`Request::Log`], newest first.
    Log(Vec<LogEntry>),
    /// To [`Request::Du`].
    Du(Du),
    /// To [`Request::Gc`].
    Gc(Report),
    /// To [`Request::Restore`].
    Restored(Restored),
    /// To [`Request::Export`].
    Exported(Exported),
    /// The request failed: one line for the user.
    Error(String),
}

/// What a node reports about itself, as `status --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The root hash of the live tree, in hex.
    pub(crate) root: String,
    /// The node's id.
    pub(crate) node: String,
    /// The peers: id, address, connected, last sync...
    pub(crate) peers: serde_json::Value,
    /// Where it accepts peers.
    pub(crate) listen: Option<String>,
    /// Where it is mounted.
    pub(crate) mount: Option<String>,
    /// The number of the newest commit (0: none).
    pub(crate) commits: u64,
    /// The running node's process (`None`: no node runs).
    pub(crate) pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_one_line_form() {
        let restore = Request::Restore(RestoreRequest {
            path: "a/b".into(),
            at: "2026-11-26".into(),
            to: None,
        });
        assert_eq!(
            serde_json::to_string(&restore).unwrap(),
            r#"{"req":"restore","path":"a/b","at":"2026-11-26","to":null}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"req":"status"}"#
        );
        for req in [
            Request::Status,
            Request::Reload,
            Request::Log {
                path: Some("x".into()),
            },
            Request::Du,
            Request::Gc,
            restore,
            Request::Export { to: "/out".into() },
        ] {
            let line = serde_json::to_string(&req).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        }
    }
}
