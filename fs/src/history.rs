//! The history of a store, typed: what `backer log`, `restore`, `export`
//! and `du` show, computed here so that the command line only parses its
//! arguments and prints, and so that a running node and a command with the
//! store opened answer alike.
//!
//! Every walk over a tree keeps its own stack on the heap: trees come from
//! peers and may be 2,048 folders deep (a name's path length bounds it),
//! while the threads that answer a control request have small stacks.
//!
//! Times are commit times as snapshot folders name them
//! ([`crate::vfs::snapshot_name`]); a time given by a user is parsed by
//! [`crate::tree::civil::parse_time`].

mod du;
mod export;
mod log;
mod restore;
mod write;

pub use du::{du, Du};
pub use export::{check_target, export, export_tree, Exported};
pub use log::{kind_name::name as kind_name, log, Change, ChangeKind, LogEntry};
pub use restore::{restore, restore_to, version_at, Outcome, RestoreRequest, Restored, Version};
pub use write::{LiveFile, LiveTree, Source, WriteOptions};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::civil::parse_time;
use crate::tree::{dir, MemNodes, Timestamp};
use crate::vfs::{read_log, snapshot_name, Commit};
use crate::Hash;

/// The commits of the store, newest first.
pub fn commits(store: &Store) -> Result<Vec<Commit>> {
    read_log(store.kv(), usize::MAX)
}

/// The newest commit, if any.
pub fn head(store: &Store) -> Result<Option<Commit>> {
    Ok(read_log(store.kv(), 1)?.into_iter().next())
}

/// The names of a path in the tree: `a/b/c`, `/a/b/c` and `./a//b/` alike.
/// The root is the empty path.
///
/// Errors: [`Error::Request`] for a `..`.
pub fn split_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::Request(format!(
                    "{path:?}: '..' is not allowed in a path"
                )))
            }
            p => out.push(p.as_bytes().to_vec()),
        }
    }
    Ok(out)
}

/// `name` safe to print on a terminal: control characters (ESC, CR,
/// newline, DEL, the C1 set) and the bidirectional overrides that reorder
/// what a terminal shows are escaped (`\x1b`, `\u{202e}`), so a name
/// written by a peer or another user cannot drive the reader's terminal
/// or fake a line. Everything that prints a name goes through here.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !name.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if u32::from(c) < 0x100 => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A commit time in nanoseconds since the epoch.
fn nanos(t: (i64, u32)) -> i128 {
    i128::from(t.0) * 1_000_000_000 + i128::from(t.1)
}

/// A commit time as snapshot folders name it.
pub fn time_name(t: (i64, u32)) -> String {
    snapshot_name(Timestamp {
        secs: t.0,
        nanos: t.1,
    })
}

/// A commit's id in hex.
pub fn commit_id(c: &Commit) -> Result<String> {
    Ok(c.id()?.to_hex())
}

/// The commit `at` names among `commits` (newest first): a time (the
/// newest commit at or before it) or a commit id (hex, at least 8 digits
/// of it).
///
/// Errors: [`Error::Request`] saying why `at` names no commit.
pub fn resolve_at<'c>(commits: &'c [Commit], at: &str) -> Result<&'c Commit> {
    let at = at.trim();
    let no = |why: String| Err(Error::Request(why));
    if at.contains('-') || at.contains(':') {
        let Some(end) = parse_time(at) else {
            return no(format!(
                "{at:?} is not a time like 2026-11-26T04:30:12.345Z (UTC) or a prefix of one"
            ));
        };
        return match commits.iter().find(|c| nanos(c.time) < end) {
            Some(c) => Ok(c),
            None => match commits.last() {
                Some(first) => no(format!(
                    "no version at {at}: the first commit is at {}",
                    time_name(first.time)
                )),
                None => no(format!("no version at {at}: the store has no commits")),
            },
        };
    }
    if at.len() < 8 || at.len() > 64 || !at.bytes().all(|c| c.is_ascii_hexdigit()) {
        return no(format!(
            "{at:?} is not a commit id (at least 8 hex digits) or a time"
        ));
    }
    let want = at.to_ascii_lowercase();
    let mut found = None;
    for c in commits {
        if commit_id(c)?.starts_with(&want) {
            if found.is_some() {
                return no(format!(
                    "the commit id prefix {at} is ambiguous: give more digits"
                ));
            }
            found = Some(c);
        }
    }
    match found {
        Some(c) => Ok(c),
        None => no(format!("no commit with id {at}")),
    }
}

/// The hash of the empty folder tree: what the oldest commit is compared
/// with.
fn empty_dir_hash() -> Hash {
    let mut m = MemNodes::new();
    dir::empty(&mut m).unwrap_or(Hash::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_names_round_trip() {
        let t = (1_795_667_412i64, 345_678_901u32);
        let name = time_name(t);
        assert_eq!(name, "2026-11-26T04:30:12.345Z");
        let end = parse_time(&name).unwrap();
        assert!(nanos(t) < end && end - nanos(t) <= 1_000_000);
    }

    #[test]
    fn names_print_without_control_characters() {
        assert_eq!(printable("plain/name é.txt"), "plain/name é.txt");
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("l1\nl2\r\x7f\u{9b}"), "l1\\x0al2\\x0d\\x7f\\x9b");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }

    #[test]
    fn paths_split_into_names() {
        assert_eq!(
            split_path("/a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(split_path("/").unwrap().is_empty());
        assert!(matches!(split_path("a/../b"), Err(Error::Request(_))));
    }
}
