//! Node identity: the node's key pair and the id derived from its public key.
//!
//! A node owns one Ed25519 key pair, made by `backer init` and kept in its
//! store as PKCS#8 v2 DER ([`NodeKey`]). The QUIC layer turns that key into
//! the node's TLS certificate, and peers pin each other by [`NodeId`]: the
//! blake3 hash of the 32-byte public key.
//!
//! A node id is written like a Syncthing device id, so people can read it
//! aloud and a typo is caught: the 32 bytes in RFC 4648 base32 without
//! padding (52 characters), cut into 4 groups of 13, each followed by a
//! Luhn mod 32 check character (Syncthing's variant), shown as 8 groups of 7
//! joined by `-`:
//!
//! ```text
//! P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2
//! ```
//!
//! The first 7 characters ([`NodeId::short`]) name a node in messages and in
//! conflict file names.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::error::{Error, Result};

/// A node's id: blake3 of its public key. Version vectors and commits name
/// nodes by this id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct NodeId(pub [u8; 32]);

/// The base32 alphabet of RFC 4648, which is also the Luhn alphabet.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Base32 characters of the 32 id bytes, without padding.
const PLAIN_LEN: usize = 52;
/// Base32 characters covered by one check character.
const LUHN_GROUP: usize = 13;
/// Characters of the checked form: 4 groups of 13, each plus its check.
const CHECKED_LEN: usize = PLAIN_LEN + PLAIN_LEN / LUHN_GROUP;
/// Characters per group in the displayed form.
const DISPLAY_GROUP: usize = 7;

impl NodeId {
    /// Length of the short form ([`NodeId::short`]).
    pub const SHORT_LEN: usize = 7;

    /// The id of the node whose Ed25519 public key is `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> NodeId {
        NodeId(*blake3::hash(public_key).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The short form: the first 7 characters of the displayed id, used
    /// where a full id is too long (messages, conflict file names).
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(Self::SHORT_LEN);
        s
    }

    /// The 56-character checked form, without separators.
    fn checked(&self) -> String {
        let plain = BASE32_NOPAD.encode(&self.0);
        debug_assert_eq!(plain.len(), PLAIN_LEN);
        let mut out = String::with_capacity(CHECKED_LEN);
        for group in plain.as_bytes().chunks(LUHN_GROUP) {
            out.extend(group.iter().map(|&c| char::from(c)));
            let check = luhn32(group).expect("base32 output is in the Luhn alphabet");
            out.push(char::from(check));
        }
        out
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.checked().chars().enumerate() {
            if i > 0 && i % DISPLAY_GROUP == 0 {
                f.write_str("-")?;
            }
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl FromStr for NodeId {
    type Err = Error;

    /// Parses the displayed form. Case does not matter, and `-` and
    /// whitespace anywhere are ignored; every check character must match.
    fn from_str(s: &str) -> Result<NodeId> {
        let checked: Vec<u8> = s
            .bytes()
            .filter(|b| *b != b'-' && !b.is_ascii_whitespace())
            .map(|b| b.to_ascii_uppercase())
            .collect();
        if checked.len() != CHECKED_LEN {
            return Err(Error::InvalidArgument(
                "a node id has 56 characters (8 groups of 7)",
            ));
        }
        let mut plain = Vec::with_capacity(PLAIN_LEN);
        for group in checked.chunks(LUHN_GROUP + 1) {
            let (data, check) = group.split_at(LUHN_GROUP);
            let expected = luhn32(data).ok_or(Error::InvalidArgument(
                "a node id has only the characters A-Z and 2-7",
            ))?;
            if check[0] != expected {
                return Err(Error::InvalidArgument(
                    "node id check character does not match (a typo?)",
                ));
            }
            plain.extend_from_slice(data);
        }
        // BASE32_NOPAD also refuses non-zero trailing bits, so each id has
        // exactly one written form.
        let bytes = BASE32_NOPAD
            .decode(&plain)
            .map_err(|_| Error::InvalidArgument("not a valid node id"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidArgument("not a valid node id"))?;
        Ok(NodeId(bytes))
    }
}

/// Syncthing's Luhn mod 32 check character for `group` (characters of
/// [`ALPHABET`]), or `None` if a character is not in the alphabet.
///
/// Unlike textbook Luhn, the factor starts at 1 on the first character and
/// alternates 1, 2, 1, ...; Syncthing ids depend on exactly this.
fn luhn32(group: &[u8]) -> Option<u8> {
    const N: usize = ALPHABET.len();
    let mut factor = 1;
    let mut sum = 0;
    for &c in group {
        let codepoint = ALPHABET.iter().position(|&a| a == c)?;
        let addend = factor * codepoint;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / N + addend % N;
    }
    Some(ALPHABET[(N - sum % N) % N])
}

/// This node's Ed25519 key pair, kept as PKCS#8 v2 DER (the form the store
/// saves and rcgen reads to make the TLS certificate).
///
/// `Debug` shows only the node id, never the private key.
pub struct NodeKey {
    /// The PKCS#8 v2 document, private and public key.
    pkcs8: Vec<u8>,
    /// The same key parsed by ring.
    pair: Ed25519KeyPair,
}

impl NodeKey {
    /// Makes a new random key pair from the system's random number generator.
    pub fn generate() -> Result<NodeKey> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
            Error::io(
                "generating the node key",
                std::io::Error::other("the system random number generator failed"),
            )
        })?;
        NodeKey::from_pkcs8(doc.as_ref())
    }

    /// Loads a key pair from PKCS#8 v2 DER, checking that it is a well-formed
    /// Ed25519 key whose public half matches its private half.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<NodeKey> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| Error::InvalidArgument("not an Ed25519 PKCS#8 v2 key"))?;
        Ok(NodeKey {
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// The key pair as PKCS#8 v2 DER: what the store saves. Secret.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // An Ed25519 public key is always 32 bytes.
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// This node's id: blake3 of the public key.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("node_id", &self.node_id().to_string())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syncthing's own test vector (lib/protocol/deviceid_test.go): the same
    /// bytes must give the same checked form, so our Luhn is theirs.
    #[test]
    fn matches_syncthing_format() {
        let bytes = BASE32_NOPAD
            .decode(b"P56IOI7MZJNU2IQGDREYDM2MGTMGL3BXNPQ6W5BTBBZ4TJXZWICQ")
            .unwrap();
        let id = NodeId(bytes.try_into().unwrap());
        let shown = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2";
        assert_eq!(id.to_string(), shown);
        assert_eq!(shown.parse::<NodeId>().unwrap(), id);
    }

    fn sample_ids() -> Vec<NodeId> {
        let mut ids = vec![NodeId([0; 32]), NodeId([0xff; 32])];
        for seed in 0u8..16 {
            ids.push(NodeId(*blake3::hash(&[seed]).as_bytes()));
        }
        ids
    }

    #[test]
    fn round_trip_in_every_accepted_spelling() {
        for id in sample_ids() {
            let shown = id.to_string();
            assert_eq!(shown.len(), 63);
            let groups: Vec<&str> = shown.split('-').collect();
            assert_eq!(groups.len(), 8);
            assert!(groups.iter().all(|g| g.len() == 7));
            let bare = shown.replace('-', "");
            let spaced = shown.replace('-', " ");
            for s in [
                shown.clone(),
                shown.to_lowercase(),
                bare.clone(),
                bare.to_lowercase(),
                spaced,
                format!("  {shown}\n"),
            ] {
                assert_eq!(s.parse::<NodeId>().unwrap(), id, "{s:?}");
            }
        }
    }

    #[test]
    fn any_changed_character_is_rejected() {
        for id in sample_ids().into_iter().take(4) {
            let shown = id.to_string();
            for (i, c) in shown.bytes().enumerate() {
                if c == b'-' {
                    continue;
                }
                for &other in ALPHABET.iter().filter(|&&a| a != c) {
                    let mut typo = shown.clone().into_bytes();
                    typo[i] = other;
                    let typo = String::from_utf8(typo).unwrap();
                    assert!(typo.parse::<NodeId>().is_err(), "{typo} accepted");
                }
            }
        }
    }

    #[test]
    fn bad_lengths_and_characters_are_rejected() {
        let shown = NodeId([7; 32]).to_string();
        for bad in [
            String::new(),
            shown[..shown.len() - 1].to_string(),
            format!("{shown}A"),
            shown.replacen(|c: char| c.is_ascii_alphabetic(), "0", 1),
            shown.replacen(|c: char| c.is_ascii_alphabetic(), "é", 1),
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    /// The last base32 character carries 4 unused bits; a form with them set
    /// (even with a matching check character) is not an id.
    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        let plain = BASE32_NOPAD.encode(&[0u8; 32]);
        let mut plain = plain.into_bytes();
        plain[PLAIN_LEN - 1] = b'B'; // value 1: a trailing bit set
        let mut checked = Vec::new();
        for group in plain.chunks(LUHN_GROUP) {
            checked.extend_from_slice(group);
            checked.push(luhn32(group).unwrap());
        }
        let s = String::from_utf8(checked).unwrap();
        assert!(s.parse::<NodeId>().is_err());
    }

    #[test]
    fn short_form_is_the_first_seven_characters() {
        for id in sample_ids() {
            let short = id.short();
            assert_eq!(short.len(), NodeId::SHORT_LEN);
            assert!(id.to_string().starts_with(&short));
        }
    }

    #[test]
    fn node_key_round_trips_and_derives_its_id() {
        let key = NodeKey::generate().unwrap();
        let public = key.public_key();
        assert_eq!(key.node_id(), NodeId(*blake3::hash(&public).as_bytes()));

        let again = NodeKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key(), public);
        assert_eq!(again.node_id(), key.node_id());

        let other = NodeKey::generate().unwrap();
        assert_ne!(other.node_id(), key.node_id());

        let debug = format!("{key:?}");
        assert!(debug.contains(&key.node_id().to_string()));
    }

    #[test]
    fn bad_pkcs8_is_rejected() {
        let key = NodeKey::generate().unwrap();
        let mut bytes = key.pkcs8().to_vec();
        assert!(NodeKey::from_pkcs8(&[]).is_err());
        assert!(NodeKey::from_pkcs8(&bytes[..bytes.len() - 1]).is_err());
        // Flip a bit of the embedded public key: it no longer matches.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            NodeKey::from_pkcs8(&bytes),
            Err(Error::InvalidArgument(_))
        ));
    }
}
