//! What the peer manager tells the node's event bus
//! ([`backer_fs::events`]): a session's connect and end, its pulls'
//! progress, the common root, and each merge (whose changes the feed's
//! own thread lists, so a session never waits for a diff).
//!
//! The peer manager only calls in here (a small hook in `peers/link.rs`),
//! so the rules for which session event makes which bus event stay in one
//! file.

use std::time::{Duration, Instant};

use backer_fs::events::{EventKind, Feed};
use backer_fs::NodeId;

use crate::Event;

/// Progress is told at most this often per session: a pull of many small
/// files reports after each, and would push everything else out of the
/// ring.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// One session's notes to the bus (nothing when the node has no bus).
pub(crate) struct SessionNotes {
    feed: Option<Feed>,
    peer: String,
    address: String,
    connected: bool,
    last_progress: Option<Instant>,
}

impl SessionNotes {
    /// The notes of a session with `peer` at `address`.
    pub(crate) fn new(feed: Option<&Feed>, peer: NodeId, address: String) -> SessionNotes {
        SessionNotes {
            feed: feed.cloned(),
            peer: peer.to_string(),
            address,
            connected: false,
            last_progress: None,
        }
    }

    fn publish(&self, kind: EventKind) {
        if let Some(f) = &self.feed {
            f.bus().publish(kind);
        }
    }

    /// One event of the session's state machine.
    pub(crate) fn on(&mut self, ev: &Event) {
        let Some(feed) = &self.feed else { return };
        match ev {
            Event::Ready { .. } => {
                self.connected = true;
                self.publish(EventKind::PeerConnected {
                    peer: self.peer.clone(),
                    address: self.address.clone(),
                });
            }
            Event::Progress(p) => {
                let due = self
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                if due {
                    self.last_progress = Some(Instant::now());
                    self.publish(EventKind::SyncProgress {
                        peer: self.peer.clone(),
                        files_to_go: p.files_to_go(),
                        bytes_to_go: p.bytes_to_go(),
                    });
                }
            }
            Event::Merged { merged, .. } => feed.merged(self.peer.clone(), merged.root),
            Event::InSync { root } => self.publish(EventKind::SyncDone {
                peer: self.peer.clone(),
                root: root.to_hex(),
            }),
            Event::PullFailed { reason, .. } => self.publish(EventKind::Error {
                what: reason.clone(),
                place: format!("sync with {}", self.peer),
            }),
            Event::PullStarted { .. } | Event::Healed { .. } | Event::HealRefused { .. } => {}
        }
    }

    /// The session ended, for `reason` (told only if it was connected).
    pub(crate) fn ended(&self, reason: &str) {
        if self.connected {
            self.publish(EventKind::PeerDisconnected {
                peer: self.peer.clone(),
                address: self.address.clone(),
                reason: reason.to_string(),
            });
        }
    }
}
