//! How errors flow in this crate.
//!
//! Inside, errors are rich ([`Error`]) and are logged where the session
//! ends. A peer only ever learns the small [`AbortReason`] we send it
//! ([`Error::abort_reason`]); the details stay in our log. The local
//! store's errors ([`backer_fs::Error`]) pass through unchanged as
//! [`Error::Local`].

use crate::hello::Incompatible;
use crate::proto::{AbortReason, FrameError};

/// Why a sync session ended early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hellos do not match.
    #[error("incompatible peer: {0}")]
    Incompatible(#[from] Incompatible),
    /// The peer broke the protocol (unexpected or excessive messages).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent data that failed verification.
    #[error("bad data from the peer: {0}")]
    BadData(String),
    /// A frame could not be read or decoded.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The local store failed.
    #[error("local store: {0}")]
    Local(#[from] backer_fs::Error),
    /// The peer closed the session with this reason.
    #[error("the peer aborted: {0}")]
    PeerAborted(AbortReason),
    /// The stream closed before the session was finished.
    #[error("the connection closed")]
    Closed,
    /// The peer stopped reading: no write went through for this long.
    #[error("the peer stopped reading: no write went through in {0:?}")]
    Stalled(std::time::Duration),
    /// The session's driver could not go on (a step was cancelled, or
    /// the state it steps is gone): a fault on our side, not a shutdown
    /// (a shutdown ends the session cleanly and tells the peer itself).
    #[error("the session driver stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// What we tell the peer before closing, if anything.
    pub fn abort_reason(&self) -> Option<AbortReason> {
        match self {
            Error::Incompatible(_) => Some(AbortReason::Incompatible),
            Error::Protocol(_) => Some(AbortReason::Protocol),
            Error::Frame(FrameError::Io(_) | FrameError::Truncated) => None,
            Error::Frame(_) => Some(AbortReason::Protocol),
            Error::BadData(_) => Some(AbortReason::BadData),
            Error::Local(_) => Some(AbortReason::Internal),
            // A peer that does not read would not read it either.
            Error::PeerAborted(_) | Error::Closed | Error::Stalled(_) => None,
            Error::Stopped(_) => Some(AbortReason::Internal),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_that_stopped_is_an_internal_fault_not_a_shutdown() {
        let e = Error::Stopped("the session has ended".into());
        assert_eq!(e.abort_reason(), Some(AbortReason::Internal));
    }
}
