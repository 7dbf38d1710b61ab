//! bincode 1.3 behind one module, for local records that are never hashed
//! (inode records, commits). Hashed and replicated structures use our own
//! encoding in `tree::encode`, whose byte order we define.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// No local record is anywhere near this; a larger length is corruption.
const LIMIT: u64 = 16 * 1024 * 1024;

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_limit(LIMIT)
        .reject_trailing_bytes()
}

/// Encodes a local record (fails only past the size limit).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    use bincode::Options;
    options()
        .serialize(value)
        .map_err(|_| Error::InvalidArgument("record over the size limit"))
}

/// Decodes a local record; bad bytes are [`Error::Corrupt`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    use bincode::Options;
    options()
        .deserialize(bytes)
        .map_err(|e| Error::corrupt(format!("{what}: {e}")))
}
