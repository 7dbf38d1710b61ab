//! The control protocol of `STORE/backer.sock`: a running node serves it,
//! and every command that needs the store asks it instead of opening the
//! store, which the node holds locked.
//!
//! A request is one JSON object on one line, tagged by `"req"`
//! (`{"req":"status"}`, `{"req":"log","path":"a/b"}`), answered by one
//! JSON line, a [`Response`]; a connection may send several in turn.
//! There is no other syntax.
//!
//! Only the node's own user and root are served: every connection's peer
//! credentials are checked, anyone else gets one refusal line. The node
//! never writes outside its store for a caller: `export` and `restore
//! --to` are written by the command, in the caller's process and with
//! its permissions, from the nodes and chunks the node streams ([`Request::Node`],
//! [`Request::Chunk`]), each checked against its hash there.
//!
//! Modules depend one way: commands use a backend, which is either the
//! [`client`] of a running node or a [`Local`] store opened by the
//! command; the node's [`server`] answers with a [`Local`] of its own.
//! [`Local`] does the work through the typed API of backer-fs
//! ([`backer_fs::history`]) and never calls a command. It reaches the
//! node's peers and web page only through the traits of
//! [`crate::services`], so this module uses neither `net` nor `web`
//! (they use it).
//!
//! A socket left by a killed node refuses connections: it is removed, not
//! trusted.

pub(crate) mod client;
pub(crate) mod creds;
mod local;
mod server;
mod source;

use std::path::{Path, PathBuf};

use backer_fs::gc::Report;
use backer_fs::history::{Du, LiveFile, LogEntry, RestoreRequest, Restored, Version};
use serde::{Deserialize, Serialize};

use crate::services::PeerInfo;
pub(crate) use local::Local;
pub(crate) use server::serve;
pub(crate) use source::RemoteSource;

/// Where a store's node listens.
pub(crate) fn socket_path(store: &Path) -> PathBuf {
    store.join("backer.sock")
}

/// `bytes` in lowercase hex, as [`Response::Bytes`] carries them.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The bytes of the hex `s`; `None` if it is not hex.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
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
    /// Verify the store; with `repair`, fix what its own files allow.
    Check {
        /// Re-index, rewrite and quarantine as `backer check --repair`.
        repair: bool,
    },
    /// Bring a path back as it was, into the live tree (a request with a
    /// folder `to` is refused: the command writes folders itself).
    Restore(RestoreRequest),
    /// The commit a time or commit id names; `None`: the newest, after
    /// committing what is pending (what `export` writes).
    Version {
        /// A time or commit id.
        at: Option<String>,
    },
    /// A tree node by hash (hex).
    Node {
        /// The node's hash.
        hash: String,
    },
    /// What the live tree has at a path: owners and the local facts that
    /// vouch for set-id bits and devices (for root's `--keep-owners` and
    /// `--keep-setid`).
    Owner {
        /// The path's names joined by `/`, in hex (names are bytes).
        path: String,
    },
    /// A chunk's bytes by hash (hex).
    Chunk {
        /// The chunk's hash.
        hash: String,
    },
    /// Follow the node's event bus: the node answers with
    /// [`Response::Events`] batches, first the kept events after `since`
    /// (0: all kept), then each as it comes, until the connection closes
    /// (an empty batch now and then says the node still runs). Nothing
    /// else is asked on that connection.
    Events {
        /// The last event id already seen.
        #[serde(default)]
        since: u64,
    },
    /// A one-time login URL for the web page (`backer web`).
    WebLogin,
}

/// A node's answer: the reply to the request, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    /// To [`Request::Status`].
    Status(Status),
    /// To [`Request::Reload`].
    Reloaded(Reloaded),
    /// To [`Request::Log`], newest first.
    Log(Vec<LogEntry>),
    /// To [`Request::Du`].
    Du(Du),
    /// To [`Request::Gc`].
    Gc(Report),
    /// To [`Request::Check`].
    Check(Box<backer_fs::check::Report>),
    /// To [`Request::Restore`].
    Restored(Restored),
    /// To [`Request::Version`] (`None`: the store has no commits).
    Version(Option<Version>),
    /// To [`Request::Node`] and [`Request::Chunk`]: the bytes, in hex.
    Bytes(String),
    /// To [`Request::Owner`] (`None`: the live tree lacks the path).
    Owner(Option<LiveFile>),
    /// To [`Request::Events`]: events in id order.
    Events(Vec<backer_fs::events::Event>),
    /// To [`Request::WebLogin`]: the URL, with its one-time token.
    WebLogin(String),
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
    /// The peers, in one shape whether a node runs or not.
    pub(crate) peers: Vec<PeerInfo>,
    /// Where it accepts peers.
    pub(crate) listen: Option<String>,
    /// Where it is mounted.
    pub(crate) mount: Option<String>,
    /// The number of the newest commit (0: none).
    pub(crate) commits: u64,
    /// The running node's process (`None`: no node runs).
    pub(crate) pid: Option<u32>,
    /// Chunks the tree names that this node does not hold (damaged and
    /// quarantined, or no peer could supply them), in hex.
    pub(crate) missing_chunks: Vec<String>,
    /// The background scrub: when it last ran, when it runs next, and
    /// where it stands if it runs now.
    #[serde(default)]
    pub(crate) scrub: backer_fs::scrub::Status,
    /// What the ignore patterns keep apart (`local`, `remote`) and whether
    /// the pattern file parses (`error`, `held_back`).
    #[serde(default)]
    pub(crate) ignored: backer_fs::vfs::IgnoreStatus,
}

/// What a node did on [`Request::Reload`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reloaded {
    /// The peers it trusts now.
    pub(crate) peers: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)).unwrap(), all);
        assert_eq!(to_hex(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

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
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"req":"events","since":3}"#).unwrap(),
            Request::Events { since: 3 }
        );
        for req in [
            Request::Status,
            Request::Reload,
            Request::Log {
                path: Some("x".into()),
            },
            Request::Du,
            Request::Gc,
            Request::Check { repair: true },
            restore,
            Request::Version { at: None },
            Request::Node {
                hash: "00".repeat(32),
            },
            Request::Events { since: 7 },
            Request::WebLogin,
        ] {
            let line = serde_json::to_string(&req).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        }
    }
}
