//! Conflict copy names: `name.sync-conflict-YYYYMMDD-HHMMSS-<node>.ext`.
//!
//! The time is the losing version's mtime (UTC) and `<node>` the short id
//! of its author, so every node derives the same name from the same two
//! versions, without reading a clock.

use crate::identity::NodeId;
use crate::tree::civil::civil_utc;
use crate::tree::entry::MAX_NAME_LEN;
use crate::tree::Timestamp;

/// The conflict copy name for `name` whose losing version was made by
/// `author` at `mtime`; `attempt` > 1 adds `-<attempt>` after the node id
/// (used when the first name is already taken by other content).
///
/// The extension is what follows the last `.` (none for a name whose only
/// dot leads it, like `.bashrc`). Names that would exceed 255 bytes lose
/// bytes from the end of the stem (at a UTF-8 boundary when the stem is
/// UTF-8), never the marker or the extension, unless the extension alone
/// is too long, in which case it is dropped.
pub fn conflict_name(name: &[u8], mtime: Timestamp, author: NodeId, attempt: u32) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = civil_utc(mtime.secs);
    let mut marker = format!(
        ".sync-conflict-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{}",
        author.short()
    );
    if attempt > 1 {
        marker.push_str(&format!("-{attempt}"));
    }
    let (mut stem, mut ext) = match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    if marker.len() + ext.len() >= MAX_NAME_LEN {
        // An absurdly long extension: keep the whole name as the stem.
        stem = name;
        ext = b"";
    }
    let room = MAX_NAME_LEN - marker.len() - ext.len();
    let stem = truncate(stem, room);
    let mut out = Vec::with_capacity(stem.len() + marker.len() + ext.len());
    out.extend_from_slice(stem);
    out.extend_from_slice(marker.as_bytes());
    out.extend_from_slice(ext);
    out
}

/// `b` cut to at most `max` bytes, at a character boundary if `b` is UTF-8.
fn truncate(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    match std::str::from_utf8(b) {
        Ok(s) => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &b[..end]
        }
        Err(_) => &b[..max],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    #[test]
    fn names_keep_the_extension_last() {
        let id = NodeId([0; 32]);
        let short = id.short();
        let n = conflict_name(b"report.txt", at(1_795_660_245), id, 1);
        assert_eq!(
            String::from_utf8(n).unwrap(),
            format!("report.sync-conflict-20261126-023045-{short}.txt")
        );
        let n = conflict_name(b"Makefile", at(0), id, 1);
        assert_eq!(
            String::from_utf8(n).unwrap(),
            format!("Makefile.sync-conflict-19700101-000000-{short}")
        );
        let n = conflict_name(b".bashrc", at(0), id, 3);
        assert_eq!(
            String::from_utf8(n).unwrap(),
            format!(".bashrc.sync-conflict-19700101-000000-{short}-3")
        );
        let n = conflict_name(b"a.tar.gz", at(0), id, 1);
        assert!(n.ends_with(b".gz") && n.starts_with(b"a.tar.sync-conflict-"));
    }

    #[test]
    fn long_names_stay_within_255_bytes() {
        let id = NodeId([9; 32]);
        let long = "é".repeat(127); // 254 bytes
        let n = conflict_name(long.as_bytes(), at(5), id, 1);
        assert!(n.len() <= MAX_NAME_LEN);
        assert!(std::str::from_utf8(&n).is_ok(), "cut at a char boundary");
        let mut ext_heavy = b"x.".to_vec();
        ext_heavy.extend(std::iter::repeat_n(b'e', 250));
        let n = conflict_name(&ext_heavy, at(5), id, 1);
        assert!(n.len() <= MAX_NAME_LEN && n.starts_with(b"x.eee"));
        crate::tree::entry::validate_name(&n).unwrap();
    }
}
