//! The wire messages and their encoding: serde + bincode 1.3, behind this
//! one module so the encoding could be swapped.
//!
//! A connection carries one stream of [`Message`]s each way. Both sides
//! start with [`Message::Hello`] and [`Message::Root`] without waiting for
//! the other, so two nodes already in sync are done in one round trip.
//!
//! Requests (`Get*`) name items by hash, many per message. Answers come
//! one item per message, in the order asked (`DirNode`, `ContentNode`,
//! `Chunk`, or `Missing` where the sender lacks the item), so the asker
//! matches each answer to its request without ids, and can keep many
//! requests in flight.
//!
//! Every frame is a 4-byte big-endian length and a bincode payload. A
//! length over [`MAX_FRAME`] is refused before anything is allocated, and
//! the payload is decoded with the same limit, so no length inside a
//! message can make the decoder allocate more either.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::hello::Hello;
use crate::wire;

/// The largest frame payload, in bytes. A chunk is at most 256 KiB; a tree
/// node of 1024 entries with long symlink targets fits well under this.
pub const MAX_FRAME: usize = 16 << 20;

/// The most hashes one request may name.
pub const MAX_BATCH: usize = 256;

/// The most items a peer may have asked for and not yet been answered.
/// A peer that asks for more is cut off (it would make us queue without
/// bound).
pub const MAX_OUTSTANDING: usize = 8192;

/// One message of the replication protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message each way: who we are and what we speak.
    Hello(Hello),
    /// "My committed root is now this": sent after the hello and after
    /// every new local root.
    Root(#[serde(with = "wire::hash")] backer_fs::Hash),
    /// Asks for directory tree nodes by hash.
    GetDirNodes(#[serde(with = "wire::hashes")] Vec<backer_fs::Hash>),
    /// One directory tree node, answering the next item asked for.
    DirNode(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Asks for file content-list nodes by hash.
    GetContentNodes(#[serde(with = "wire::hashes")] Vec<backer_fs::Hash>),
    /// One content-list node, answering the next item asked for.
    ContentNode(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Asks for chunks by hash.
    GetChunks(#[serde(with = "wire::hashes")] Vec<backer_fs::Hash>),
    /// One chunk's bytes, answering the next item asked for.
    Chunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The sender does not hold the next item asked for.
    Missing,
    /// One-shot sessions: "I hold this root and have seen you hold it";
    /// the session ends once both sides said it for the same root.
    Done(#[serde(with = "wire::hash")] backer_fs::Hash),
    /// The sender closes the session, and why.
    Abort(AbortReason),
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Root(_) => "root",
            Message::GetDirNodes(_) => "get-dir-nodes",
            Message::DirNode(_) => "dir-node",
            Message::GetContentNodes(_) => "get-content-nodes",
            Message::ContentNode(_) => "content-node",
            Message::GetChunks(_) => "get-chunks",
            Message::Chunk(_) => "chunk",
            Message::Missing => "missing",
            Message::Done(_) => "done",
            Message::Abort(_) => "abort",
        }
    }
}

/// All a peer ever learns of why we closed a session: a small, stable
/// reason. The details stay in our log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AbortReason {
    /// The hellos do not match (protocol version, chunker, same node).
    #[error("incompatible peer")]
    Incompatible,
    /// A frame or message broke the protocol (malformed, oversized,
    /// unexpected, too many requests).
    #[error("protocol violation")]
    Protocol,
    /// Data failed verification (hash mismatch, bad name, bad node).
    #[error("data failed verification")]
    BadData,
    /// Something failed on the sender's side (its store).
    #[error("internal error")]
    Internal,
    /// The sender is shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("a frame of {0} bytes is over the limit")]
    TooLarge(u64),
    /// The payload is not a message we know.
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// Encodes one message as a frame: length prefix and payload.
///
/// Errors: [`FrameError::TooLarge`] if the payload would exceed the limit.
pub fn encode(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let len = options()
        .serialized_size(msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if len > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    options()
        .serialize_into(&mut out, msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Decodes one frame payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<Message, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len() as u64));
    }
    options()
        .deserialize(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Checks a frame's length prefix: the payload length it announces.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len as u64));
    }
    Ok(len)
}

/// Splits the first whole frame off `buf`: `Ok(None)` if `buf` holds less
/// than one frame, else the message and the bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = frame_len(prefix.try_into().expect("four bytes"))?;
    match buf.get(4..4 + len) {
        Some(payload) => Ok(Some((decode(payload)?, 4 + len))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backer_fs::{Hash, NodeId};
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello::new(NodeId([7; 32]), b"fp".to_vec())),
            Message::Root(Hash([1; 32])),
            Message::GetDirNodes(vec![Hash([2; 32]), Hash([3; 32])]),
            Message::DirNode(vec![1, 2, 3]),
            Message::GetContentNodes(vec![Hash([4; 32])]),
            Message::ContentNode(vec![]),
            Message::GetChunks(vec![Hash([5; 32]); 3]),
            Message::Chunk(vec![9; 1000]),
            Message::Missing,
            Message::Done(Hash([6; 32])),
            Message::Abort(AbortReason::BadData),
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_frame() {
        for m in samples() {
            let frame = encode(&m).unwrap();
            let (back, used) = decode_frame(&frame).unwrap().unwrap();
            assert_eq!((back, used), (m, frame.len()));
            // Any strict prefix is "not yet a frame", never an error.
            for cut in 0..frame.len() {
                assert!(decode_frame(&frame[..cut]).unwrap().is_none(), "cut {cut}");
            }
        }
    }

    #[test]
    fn a_hash_costs_32_bytes_on_the_wire() {
        let one = encode(&Message::GetChunks(vec![Hash::ZERO])).unwrap().len();
        let two = encode(&Message::GetChunks(vec![Hash::ZERO; 2]))
            .unwrap()
            .len();
        assert_eq!(two - one, 32);
        assert!(encode(&Message::Root(Hash::ZERO)).unwrap().len() <= 4 + 1 + 32);
    }

    #[test]
    fn an_announced_4_gib_frame_is_refused_before_allocating() {
        let frame = [0xff, 0xff, 0xff, 0xff, 0, 0];
        assert!(matches!(decode_frame(&frame), Err(FrameError::TooLarge(_))));
        let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(frame_len(just_over), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn unknown_variants_and_trailing_bytes_are_malformed() {
        assert!(matches!(decode(&[200]), Err(FrameError::Malformed(_))));
        let mut f = encode(&Message::Missing).unwrap();
        f.push(0);
        assert!(matches!(decode(&f[4..]), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn a_length_inside_the_payload_cannot_force_a_huge_allocation() {
        // Chunk with a declared length of u64::MAX - 1 (varint) and no bytes.
        let mut payload = vec![7u8]; // variant index of Chunk
        payload.push(0xff);
        payload.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert!(matches!(decode(&payload), Err(FrameError::Malformed(_))));
        let mut payload = vec![2u8]; // GetDirNodes with 2^60 hashes
        payload.push(0xff);
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode(&payload), Err(FrameError::Malformed(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The frame decoder never panics on arbitrary bytes.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_frame(&bytes);
            let _ = decode(&bytes);
        }

        /// Flipping any byte of a valid frame gives an error or some
        /// message, never a panic.
        #[test]
        fn flipped_bytes_never_panic(i in 0usize..64, bit in 0u8..8, which in 0usize..11) {
            let mut frame = encode(&samples()[which]).unwrap();
            let i = i % frame.len();
            frame[i] ^= 1 << bit;
            let _ = decode_frame(&frame);
        }
    }
}
