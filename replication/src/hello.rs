//! The hello: what each side says first, and whether two nodes can sync.

use backer_fs::NodeId;
use serde::{Deserialize, Serialize};

use crate::wire;

/// The version of the replication protocol this build speaks. Peers that
/// differ do not sync; bump it on any incompatible change to the messages
/// or to the reconciliation rules.
pub const PROTOCOL_VERSION: u32 = 1;

/// What each side announces first on a new connection, before any tree data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The sender's node id: the one its TLS key proves, or the
    /// connection is closed ([`Hello::check_sender`]).
    #[serde(with = "wire::node_id")]
    pub node: NodeId,
    /// Bytes that identify the sender's chunker parameters. Chunk
    /// boundaries are part of the format: peers that cut files differently
    /// would never share chunks, so they must not sync.
    #[serde(with = "serde_bytes")]
    pub chunker_fingerprint: Vec<u8>,
}

/// Why two nodes cannot sync, found when comparing hellos.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    /// The peers speak different protocol versions.
    #[error("protocol version {theirs} is not ours ({ours})")]
    ProtocolVersion {
        /// Our [`PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peers cut files into chunks with different parameters.
    #[error("the peer uses different chunker parameters")]
    Chunker,
    /// The peer is this node itself (e.g. a peer address that loops back).
    #[error("the peer is this node itself")]
    SameNode,
}

/// A hello that names another node than the one whose key the peer proved
/// in the transport's handshake ([`Hello::check_sender`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the hello names node {claimed}, but the handshake proved node {proven}")]
pub struct NotTheSender {
    /// The node the hello names.
    pub claimed: NodeId,
    /// The node whose key the peer holds.
    pub proven: NodeId,
}

impl Hello {
    /// Our hello for a node `node` whose chunker parameters hash to
    /// `chunker_fingerprint`.
    pub fn new(node: NodeId, chunker_fingerprint: impl Into<Vec<u8>>) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            node,
            chunker_fingerprint: chunker_fingerprint.into(),
        }
    }

    /// Checks that this hello, received from a peer whose key the
    /// transport proved to be `proven`'s, names that node: a peer may only
    /// speak for itself. [`check`](Hello::check) compares versions; this
    /// runs first, on the connection ([`crate::peers`] does it).
    pub fn check_sender(&self, proven: NodeId) -> Result<(), NotTheSender> {
        if self.node != proven {
            return Err(NotTheSender {
                claimed: self.node,
                proven,
            });
        }
        Ok(())
    }

    /// Decides whether we (`self`) can sync with the peer that sent
    /// `theirs`: same protocol version, same chunker parameters, and not
    /// ourselves. The version is checked first, since a peer of another
    /// version may describe its chunker differently.
    pub fn check(&self, theirs: &Hello) -> Result<(), Incompatible> {
        if self.protocol_version != theirs.protocol_version {
            return Err(Incompatible::ProtocolVersion {
                ours: self.protocol_version,
                theirs: theirs.protocol_version,
            });
        }
        if self.chunker_fingerprint != theirs.chunker_fingerprint {
            return Err(Incompatible::Chunker);
        }
        if self.node == theirs.node {
            return Err(Incompatible::SameNode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: u8, chunker: &[u8]) -> Hello {
        Hello::new(NodeId([node; 32]), chunker)
    }

    #[test]
    fn same_version_and_chunker_are_compatible_both_ways() {
        let a = hello(1, b"fastcdc-v2020 16k/64k/256k");
        let b = hello(2, b"fastcdc-v2020 16k/64k/256k");
        assert_eq!(a.check(&b), Ok(()));
        assert_eq!(b.check(&a), Ok(()));
    }

    #[test]
    fn a_different_protocol_version_is_refused_first() {
        let a = hello(1, b"x");
        let mut b = hello(2, b"y");
        b.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(
            a.check(&b),
            Err(Incompatible::ProtocolVersion {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1,
            })
        );
    }

    #[test]
    fn different_chunker_parameters_are_refused_both_ways() {
        let a = hello(1, b"fastcdc-v2020 16k/64k/256k");
        let b = hello(2, b"fastcdc-v2020 8k/32k/128k");
        assert_eq!(a.check(&b), Err(Incompatible::Chunker));
        assert_eq!(b.check(&a), Err(Incompatible::Chunker));
    }

    #[test]
    fn a_hello_must_name_the_node_the_handshake_proved() {
        let a = hello(1, b"x");
        assert_eq!(a.check_sender(NodeId([1; 32])), Ok(()));
        assert_eq!(
            a.check_sender(NodeId([2; 32])),
            Err(NotTheSender {
                claimed: NodeId([1; 32]),
                proven: NodeId([2; 32]),
            })
        );
    }

    #[test]
    fn talking_to_oneself_is_refused() {
        let a = hello(1, b"x");
        assert_eq!(a.check(&a.clone()), Err(Incompatible::SameNode));
    }
}
