//! The seal: proof that the database still holds what it made durable.
//!
//! sled 0.34 recovers a damaged log the way it recovers a torn write: it
//! stops at the first message that fails its checksum and opens what came
//! before, with no error. A flipped bit early in its file therefore opens
//! as an older, even empty, database: the mount would show an empty
//! folder, `check` would find nothing wrong, and the next commit would
//! make the loss permanent. So every flush of the engine first counts
//! itself in the engine (`Meta/seal`, flushed with everything else), then
//! writes that count to a small file beside the engine's own. At open, a
//! file that names a later flush than the engine holds means the engine
//! lost durable writes: the store is [`crate::error::Error::IndexDamaged`],
//! and `check --repair` rebuilds it from the packs.
//!
//! The file is written after the engine's flush returned, and never
//! synced: a crash can only leave it behind the engine (never ahead),
//! and a torn or missing file fails its checksum and means "no seal"
//! (the check is skipped, as for a store made before seals).
//!
//! It lives in the engine's folder (`db/backer.seal`), so a database
//! swapped in whole (an upgrade, a rebuild) carries its own seal or none.

use std::os::unix::fs::FileExt;
use std::path::Path;

/// The engine's count of its own flushes, in [`super::Space::Meta`].
pub(crate) const META_SEAL: &[u8] = b"seal";

const FILE: &str = "backer.seal";

/// The flush count the seal file in `db_dir` names, if it holds a whole one.
pub(crate) fn read(db_dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(db_dir.join(FILE)).ok()?;
    let (count, sum) = bytes.split_at_checked(8)?;
    let count: [u8; 8] = count.try_into().ok()?;
    (sum == checksum(count)).then(|| u64::from_le_bytes(count))
}

/// Writes `count` to the seal file in `db_dir` (in place, one small
/// write: not synced, see the module doc).
pub(crate) fn write(db_dir: &Path, count: u64) -> std::io::Result<()> {
    let count = count.to_le_bytes();
    let mut buf = count.to_vec();
    buf.extend_from_slice(&checksum(count));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(db_dir.join(FILE))?;
    f.write_all_at(&buf, 0)
}

fn checksum(count: [u8; 8]) -> [u8; 32] {
    *blake3::keyed_hash(b"backer database seal, version 1.", &count).as_bytes()
}

/// The engine's own flush count as stored (0 if it holds none).
pub(crate) fn decode(v: Option<&[u8]>) -> u64 {
    v.and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_seal_reads_back_and_a_torn_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), None);
        write(d.path(), 7).unwrap();
        assert_eq!(read(d.path()), Some(7));
        write(d.path(), 8).unwrap();
        assert_eq!(read(d.path()), Some(8));
        let mut bytes = std::fs::read(d.path().join(FILE)).unwrap();
        bytes[3] ^= 1;
        std::fs::write(d.path().join(FILE), &bytes).unwrap();
        assert_eq!(read(d.path()), None);
        std::fs::write(d.path().join(FILE), &bytes[..20]).unwrap();
        assert_eq!(read(d.path()), None);
    }
}
