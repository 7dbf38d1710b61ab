//! The payload of a commit record in a pack (`BKG1`): one entry of the
//! commit log with the local facts a rebuild needs beside it.
//!
//! ```text
//! version u8 (1) | edit clock u64 BE | the commit as the engine holds it
//! ```
//!
//! The commit log is local (peers sync trees, not logs), so the packs are
//! its only other copy. The edit clock is the node's version-vector
//! counter when the commit was made: a rebuilt store must never count
//! below it, or its next edits would look older than ones peers already
//! hold.

const VERSION: u8 = 1;

/// The record bytes for a commit (`commit`: its engine encoding) made
/// when the edit clock stood at `clock`.
pub fn encode(clock: u64, commit: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + commit.len());
    out.push(VERSION);
    out.extend_from_slice(&clock.to_be_bytes());
    out.extend_from_slice(commit);
    out
}

/// The clock and commit bytes of a record; `None` for a version this
/// build does not know or a record too short to be one.
pub fn decode(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION || rest.len() < 8 {
        return None;
    }
    let (clock, commit) = rest.split_at(8);
    Some((u64::from_be_bytes(clock.try_into().ok()?), commit))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        let b = super::encode(42, b"commit");
        assert_eq!(super::decode(&b), Some((42, &b"commit"[..])));
        assert_eq!(super::decode(&[]), None);
        assert_eq!(super::decode(&[1, 0, 0]), None);
        let mut newer = b.clone();
        newer[0] = 2;
        assert_eq!(super::decode(&newer), None);
    }
}
