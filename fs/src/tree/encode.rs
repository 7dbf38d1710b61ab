//! The binary encoding of tree nodes, entries and version vectors.
//!
//! Hashes are taken over these bytes, so the encoding is ours, versioned and
//! **canonical**: one meaning has exactly one encoding, and the decoder
//! rejects every other byte string (non-minimal varints, unsorted or
//! duplicate keys, unknown tags, fields foreign to a kind, trailing bytes).
//! Never bincode or serde: their output is not pinned by us.
//!
//! # Primitives
//!
//! - `u8`: one byte. `u32`, `u64`: fixed width, little-endian.
//! - `varint`: an unsigned LEB128 integer of at most 64 bits, in its shortest
//!   form (no final `0x00` byte after the first).
//! - `zigzag`: an `i64` mapped to `u64` as `(n << 1) ^ (n >> 63)`, then as a
//!   varint.
//! - `bytes`: a varint length, then that many bytes.
//! - `hash`, `node id`: 32 raw bytes.
//!
//! # Entry
//!
//! In this order: `name` bytes (a valid name, 1..=255 bytes); `kind` u8
//! (0 file, 1 dir, 2 symlink, 3 fifo, 4 socket, 5 char device, 6 block
//! device); `mode` varint (at most `0o7777`); `mtime.secs` zigzag;
//! `mtime.nanos` varint (below 10^9); `size` varint; `hash`; `target` bytes
//! (at most 4095); `rdev` varint; `vv`; `modified_by` node id; `deleted` u8
//! (0 or 1). The fields must satisfy [`Entry::validate`] (a symlink's size is
//! its target's length, a fifo has a zero hash, ...).
//!
//! # Version vector
//!
//! A varint count, then per node: node id, counter varint. Ids strictly
//! increasing, counters non-zero.
//!
//! # Nodes
//!
//! Every node starts with the header: `FORMAT_VERSION` u8 (= 1), `height` u8
//! (0 for a leaf), item `count` varint, then the items, then nothing.
//!
//! - Directory leaf: `count` entries, names strictly increasing.
//! - Directory internal node (height >= 1, count >= 1): per child, the
//!   child's last name as bytes, then the child's hash; names strictly
//!   increasing.
//! - Content leaf: `count` extents, each a tag u8 then: tag 0 (data) chunk
//!   hash and length varint (1..=2^32-1); tag 1 (hole) length varint (>= 1).
//!   No two holes in a row.
//! - Content internal node (height >= 1, count >= 1): per child, its hash and
//!   its byte length varint (>= 1).
//!
//! [`crate::tree::dir`] and [`crate::tree::content`] add the shape rules
//! (where a node must end) and check what one node can show of them.
//! A node's hash is `Hash::of_domain("backer-dir-node", bytes)` or
//! `Hash::of_domain("backer-content-node", bytes)`.

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::identity::NodeId;
use crate::tree::entry::{Entry, Kind, Timestamp, MAX_NAME_LEN, MAX_TARGET_LEN};
use crate::tree::vv::VersionVector;

/// The version of the node encoding, the first byte of every node.
pub const FORMAT_VERSION: u8 = 1;

/// The fewest bytes one encoded entry takes (a one-byte name, every
/// varint one byte, empty target and vector). Used to bound allocations.
pub const MIN_ENTRY_LEN: usize = 75;

/// Appends primitives to a byte buffer.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a little-endian `u32`.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends `v` as a minimal LEB128 varint.
    pub fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Appends a signed integer, zigzag-mapped, as a varint.
    pub fn put_zigzag(&mut self, v: i64) {
        self.put_varint(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Appends a varint length and the bytes.
    pub fn put_bytes(&mut self, b: &[u8]) {
        self.put_varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// Appends the 32 bytes of a hash.
    pub fn put_hash(&mut self, h: &Hash) {
        self.buf.extend_from_slice(h.as_bytes());
    }

    /// Appends a node header: format version, height, item count.
    pub fn put_header(&mut self, height: u8, count: usize) {
        self.put_u8(FORMAT_VERSION);
        self.put_u8(height);
        self.put_varint(count as u64);
    }

    /// Appends a version vector.
    pub fn put_vv(&mut self, vv: &VersionVector) {
        self.put_varint(vv.len() as u64);
        for (id, counter) in vv.iter() {
            self.buf.extend_from_slice(&id.0);
            self.put_varint(counter);
        }
    }

    /// Appends an entry. The entry should pass [`Entry::validate`]; one that
    /// does not encodes, but will not decode.
    pub fn put_entry(&mut self, e: &Entry) {
        self.put_bytes(&e.name);
        self.put_u8(kind_code(e.kind));
        self.put_varint(u64::from(e.mode));
        self.put_zigzag(e.mtime.secs);
        self.put_varint(u64::from(e.mtime.nanos));
        self.put_varint(e.size);
        self.put_hash(&e.hash);
        self.put_bytes(&e.target);
        self.put_varint(e.rdev);
        self.put_vv(&e.vv);
        self.buf.extend_from_slice(&e.modified_by.0);
        self.put_u8(u8::from(e.deleted));
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads primitives from a byte slice. Every read is fallible: running out
/// of input, an oversized length or a non-canonical form is
/// [`Error::Corrupt`], never a panic, and nothing is allocated beyond what
/// the remaining input could hold.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.rest.len() {
            return Err(Error::corrupt("truncated input"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a minimal LEB128 varint of at most 64 bits.
    pub fn read_varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.read_u8()?;
            if i == 9 && b > 1 {
                return Err(Error::corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(Error::corrupt("non-minimal varint"));
                }
                return Ok(v);
            }
        }
        Err(Error::corrupt("varint longer than 10 bytes"))
    }

    /// Reads a zigzag-mapped signed varint.
    pub fn read_zigzag(&mut self) -> Result<i64> {
        let v = self.read_varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Reads a varint that must fit a `u32`.
    pub fn read_varint_u32(&mut self) -> Result<u32> {
        u32::try_from(self.read_varint()?).map_err(|_| Error::corrupt("varint exceeds u32"))
    }

    /// Reads length-prefixed bytes of at most `max` bytes, without copying.
    pub fn read_bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.read_varint()?;
        if len > max as u64 {
            return Err(Error::corrupt("length over its limit"));
        }
        self.take(len as usize)
    }

    /// Reads a 32-byte hash.
    pub fn read_hash(&mut self) -> Result<Hash> {
        Ok(Hash(self.array()?))
    }

    /// Reads a 32-byte node id.
    pub fn read_node_id(&mut self) -> Result<NodeId> {
        Ok(NodeId(self.array()?))
    }

    /// Reads an item count of at most `max`, of items of at least
    /// `min_item_len` bytes each: a count the remaining input cannot hold is
    /// an error, so `Vec::with_capacity(count)` is safe.
    pub fn read_count(&mut self, max: usize, min_item_len: usize) -> Result<usize> {
        let n = self.read_varint()?;
        if n > max as u64 {
            return Err(Error::corrupt("item count over its limit"));
        }
        let n = n as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.rest.len() {
            return Err(Error::corrupt("item count exceeds the input"));
        }
        Ok(n)
    }

    /// Reads the start of a node header: checks the format version and
    /// returns the height. The item count follows (read it with
    /// [`Reader::read_count`], whose bounds depend on the height).
    pub fn read_header(&mut self) -> Result<u8> {
        let version = self.read_u8()?;
        if version != FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "unknown node format version {version}"
            )));
        }
        self.read_u8()
    }

    /// Reads a version vector.
    pub fn read_vv(&mut self) -> Result<VersionVector> {
        let n = self.read_count(usize::MAX, 33)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.read_node_id()?;
            let counter = self.read_varint()?;
            pairs.push((id, counter));
        }
        VersionVector::from_canonical(pairs).ok_or_else(|| {
            Error::corrupt("version vector unsorted, duplicated or with a zero counter")
        })
    }

    /// Reads an entry and checks it as [`Entry::validate`] does.
    pub fn read_entry(&mut self) -> Result<Entry> {
        let name = self.read_bytes(MAX_NAME_LEN)?.to_vec();
        let kind = kind_from_code(self.read_u8()?)?;
        let mode = self.read_varint_u32()?;
        let secs = self.read_zigzag()?;
        let nanos = self.read_varint_u32()?;
        let size = self.read_varint()?;
        let hash = self.read_hash()?;
        let target = self.read_bytes(MAX_TARGET_LEN)?.to_vec();
        let rdev = self.read_varint()?;
        let vv = self.read_vv()?;
        let modified_by = self.read_node_id()?;
        let deleted = match self.read_u8()? {
            0 => false,
            1 => true,
            _ => return Err(Error::corrupt("deleted flag is not 0 or 1")),
        };
        let e = Entry {
            name,
            kind,
            mode,
            mtime: Timestamp { secs, nanos },
            size,
            hash,
            target,
            rdev,
            vv,
            modified_by,
            deleted,
        };
        e.validate()
            .map_err(|err| Error::corrupt(format!("invalid entry: {err}")))?;
        Ok(e)
    }

    /// Succeeds only if all input was read.
    pub fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt("trailing bytes"))
        }
    }
}

/// One entry on its own (for storing outside a node): `FORMAT_VERSION`, then
/// the entry.
pub fn entry_to_bytes(e: &Entry) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_u8(FORMAT_VERSION);
    w.put_entry(e);
    w.into_bytes()
}

/// Decodes what [`entry_to_bytes`] wrote; anything else is an error.
pub fn entry_from_bytes(bytes: &[u8]) -> Result<Entry> {
    let mut r = Reader::new(bytes);
    let version = r.read_u8()?;
    if version != FORMAT_VERSION {
        return Err(Error::corrupt(format!(
            "unknown entry format version {version}"
        )));
    }
    let e = r.read_entry()?;
    r.finish()?;
    Ok(e)
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::Fifo => 3,
        Kind::Socket => 4,
        Kind::CharDev => 5,
        Kind::BlockDev => 6,
    }
}

fn kind_from_code(code: u8) -> Result<Kind> {
    Ok(match code {
        0 => Kind::File,
        1 => Kind::Dir,
        2 => Kind::Symlink,
        3 => Kind::Fifo,
        4 => Kind::Socket,
        5 => Kind::CharDev,
        6 => Kind::BlockDev,
        _ => return Err(Error::corrupt(format!("unknown entry kind {code}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::entry::tests::{arb_entry, file};
    use crate::tree::vv::tests::arb_vv;
    use proptest::prelude::*;

    #[test]
    fn varints_are_minimal_and_bounded() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::new();
            w.put_varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.read_varint().unwrap(), v);
            r.finish().unwrap();
        }
        let bad: [&[u8]; 5] = [
            &[0x80, 0x00], // zero in two bytes
            &[0xff, 0x00], // 127 in two bytes
            &[0x80],       // truncated
            &[0xff; 10],   // overflows
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ];
        for b in bad {
            assert!(Reader::new(b).read_varint().is_err(), "{b:?}");
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -1_000_000] {
            let mut w = Writer::new();
            w.put_zigzag(v);
            assert_eq!(Reader::new(&w.into_bytes()).read_zigzag().unwrap(), v);
        }
    }

    #[test]
    fn fixed_width_and_limits() {
        let mut w = Writer::new();
        w.put_u32(0xdead_beef);
        w.put_u64(7);
        w.put_bytes(b"abc");
        let b = w.into_bytes();
        let mut r = Reader::new(&b);
        assert_eq!(r.read_u32().unwrap(), 0xdead_beef);
        assert_eq!(r.read_u64().unwrap(), 7);
        assert!(r.clone().read_bytes(2).is_err());
        assert_eq!(r.read_bytes(3).unwrap(), b"abc");
        assert!(r.read_u8().is_err());
        // A huge count with little input behind it is refused before any allocation.
        let mut w = Writer::new();
        w.put_varint(u64::MAX);
        assert!(Reader::new(&w.into_bytes())
            .read_count(usize::MAX, 1)
            .is_err());
    }

    #[test]
    fn minimal_entry_length() {
        let mut e = file(b"a", 0);
        (e.vv, e.mtime, e.mode) = (VersionVector::new(), Timestamp::default(), 0);
        let bytes = entry_to_bytes(&e);
        assert_eq!(bytes.len(), 1 + MIN_ENTRY_LEN);
    }

    #[test]
    fn entry_decoding_rejects_non_canonical_bytes() {
        let e = file(b"name", 42);
        let good = entry_to_bytes(&e);
        assert_eq!(entry_from_bytes(&good).unwrap(), e);
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(entry_from_bytes(&trailing).is_err());
        for n in 0..good.len() {
            assert!(entry_from_bytes(&good[..n]).is_err(), "truncated at {n}");
        }
        let mutate = |f: &dyn Fn(&mut Entry)| {
            let mut x = e.clone();
            f(&mut x);
            entry_from_bytes(&entry_to_bytes(&x)).is_err()
        };
        assert!(mutate(&|x| x.name = b"a/b".to_vec()));
        assert!(mutate(&|x| x.mode = 0o170000));
        assert!(mutate(&|x| x.rdev = 1));
        let mut bad_kind = good.clone();
        bad_kind[1 + 1 + 4] = 7; // version, name length, name, then the kind
        assert!(entry_from_bytes(&bad_kind).is_err());
        let mut bad_flag = good.clone();
        *bad_flag.last_mut().unwrap() = 2;
        assert!(entry_from_bytes(&bad_flag).is_err());
        let mut bad_version = good;
        bad_version[0] = 2;
        assert!(entry_from_bytes(&bad_version).is_err());
    }

    #[test]
    fn unsorted_version_vector_is_rejected() {
        let mut w = Writer::new();
        w.put_varint(2);
        w.put_hash(&Hash([2; 32]));
        w.put_varint(1);
        w.put_hash(&Hash([1; 32]));
        w.put_varint(1);
        assert!(Reader::new(&w.into_bytes()).read_vv().is_err());
    }

    proptest! {
        #[test]
        fn entry_round_trip(e in arb_entry()) {
            let bytes = entry_to_bytes(&e);
            prop_assert!(bytes.len() > MIN_ENTRY_LEN);
            prop_assert_eq!(entry_from_bytes(&bytes)?, e);
        }

        #[test]
        fn vv_round_trip(v in arb_vv()) {
            let mut w = Writer::new();
            w.put_vv(&v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.read_vv()?, v);
            r.finish()?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            // Accepted input must be canonical: it re-encodes to itself.
            if let Ok(e) = entry_from_bytes(&bytes) {
                prop_assert_eq!(entry_to_bytes(&e), bytes);
            }
        }

        #[test]
        fn mutated_entries_decode_canonically_or_fail(
            e in arb_entry(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>(),
        ) {
            let mut bytes = entry_to_bytes(&e);
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            match entry_from_bytes(&bytes) {
                Ok(d) => prop_assert_eq!(entry_to_bytes(&d), bytes),
                Err(err) => prop_assert!(matches!(err, Error::Corrupt(_))),
            }
        }
    }
}
