//! backer-replication: everything between backer nodes (DESIGN.md,
//! "Replication").
//!
//! - [`proto`]: the wire messages (serde + bincode 1.3), length-prefixed
//!   frames with a hard size limit; [`hello`]: who may sync with whom.
//! - [`reconcile`]: the merkle descent as a state machine that touches no
//!   network and reads no clock ([`reconcile::pull`]); it reaches the store
//!   only through [`Local`] and hands the merge to its driver. [`merge`]:
//!   the version-vector merge rules and conflict copies, with the one
//!   classification of a name that both the merge and the pull use.
//! - [`local`]: what a sync needs of this node's store, as a trait, over a
//!   real store ([`local::VfsLocal`]) or in memory.
//! - [`session`]: one async driver loop that runs the state machine over
//!   any duplex byte stream (QUIC, TCP, in-memory pipes in tests), its
//!   store work on tokio's blocking pool.
//! - [`quic`]: the node's QUIC endpoint, with pinned mutual TLS between
//!   trusted node keys; its streams are what [`session`] runs over.
//! - [`peers`]: the peer manager: dialling, backoff, dial dedupe, trust
//!   reload, one session per peer, a shutdown that tells the peers.
//!
//! Every node is equal: a server replica is a node without a mount.

pub mod error;
pub mod hello;
pub mod local;
pub mod merge;
mod notify;
pub mod peers;
pub mod proto;
pub mod quic;
pub mod reconcile;
pub mod session;
mod wire;

pub use error::{Error, Result};
pub use hello::{Hello, Incompatible, PROTOCOL_VERSION};
pub use local::{Local, MemLocal, VfsLocal};
pub use peers::{PeerSpec, PeerStatus, Peers, RootFeed};
pub use reconcile::{Config, Event, Progress, Reconcile, Stats};
pub use session::{run, Channels, HealFeed, Outcome, Report, Traffic};
