//! Content addresses: a 32-byte blake3 digest, with domain separation per
//! kind of object so a chunk can never be mistaken for a tree node.

use std::fmt;

/// A blake3 digest naming an immutable object (chunk, tree node, content
/// list node, commit).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash, used as "nothing" where an `Option` would cost a tag.
    pub const ZERO: Hash = Hash([0; 32]);

    /// blake3 of `bytes` (used for chunks: a chunk's id is the plain blake3
    /// of its bytes, so any tool can verify it).
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// blake3 of `bytes` in the domain `domain` (tree nodes, content lists,
    /// commits): `blake3(domain || 0x00 || bytes)`.
    pub fn of_domain(domain: &str, bytes: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(domain.as_bytes());
        h.update(&[0]);
        h.update(bytes);
        Hash(*h.finalize().as_bytes())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }

    /// The first 8 bytes as a big-endian integer: used to derive tree levels.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_domains_differ() {
        let h = Hash::of(b"abc");
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex("zz"), None);
        assert_ne!(Hash::of_domain("a", b"x"), Hash::of_domain("b", b"x"));
        assert_ne!(Hash::of_domain("a", b"x"), Hash::of(b"x"));
    }
}
