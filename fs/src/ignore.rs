//! `.backerignore`: which paths stay on this machine. Pure: parsing and
//! matching do no I/O (an `#include` is read through a loader the caller
//! passes), so the vfs, the merge and `status` can all ask the same
//! [`Patterns`].
//!
//! # The language
//!
//! Syntax and meaning are those of Syncthing's `.stignore` (its
//! documentation is the reference; where it is silent, Syncthing's
//! `lib/ignore` code and tests decide, and the comments say so):
//!
//! - One pattern per line; surrounding white space is trimmed; `//` starts
//!   a comment line; an identical repeated line is skipped.
//! - The FIRST matching line decides. `!` makes a line include instead of
//!   ignore; `(?i)` makes it case-insensitive (pattern and path are both
//!   lowercased); `(?d)` marks the ignored path deletable (it may be removed
//!   when it stands in the way of deleting a folder a peer deleted). Each
//!   prefix once, in any order.
//! - A leading `/` anchors the pattern at the folder root; other patterns
//!   match at any depth (`foo` matches `foo` and `a/b/foo`).
//! - A pattern that matches a folder matches everything below it. A pattern
//!   ending in `/` matches only what is below (`foo/` matches `foo/x`, not
//!   `foo`).
//! - `*` and `?` stay within one name, `**` crosses `/`; `[…]`, `{a,b}` and
//!   `\` escapes as Syncthing's glob library has them (see `ignore/glob.rs`).
//! - `#include FILE` reads patterns from FILE, relative to the including
//!   file's folder; the patterns stay relative to the folder root. A missing
//!   file, or one included a second time (a cycle included), is an error.
//!   Syncthing misses a cycle through the top-level file and skips a repeated
//!   identical `#include` line silently; here both are errors, as issue 20
//!   asks.
//! - `#escape=C` (Syncthing's, meant for Windows) makes C the escape
//!   character for the rest of its file.
//! - Matching is on the bytes of the path as the kernel gave them. Syncthing
//!   NFC-normalizes patterns on Linux; backer does not (no normalization
//!   table in the dependencies): a pattern typed in NFD does not match an
//!   NFC name.
//!
//! `.backerignore` itself (at the root) always matches as ignored, whatever
//! the patterns (like Syncthing's internal files): it lives here so that no
//! caller can forget it. People share patterns with `#include` of a file
//! that is replicated.
//!
//! # Why a hand matcher and not `globset`
//!
//! globset cannot say Syncthing's semantics: its `**` is special only as a
//! whole path component (`te**st` could not cross folders, `a/**/b` would
//! match `a/b`, which Syncthing's does not), and its classes and escapes
//! differ. The matcher here is small: common shapes (`name`, `*.ext`,
//! `pre*`, `*mid*`, `pre*suf`) compare bytes per name; everything else runs
//! a dynamic program linear in path length × pattern length, so neither a
//! pattern nor a peer's path can make matching exponential or recurse.
//! `cargo bench -p backer-fs --bench ignore` measures it (about 0.7 µs per
//! path for 100 patterns on the 2-core dev machine; issue 20 allows ~2 µs).
//!
//! # Keeping the last good set
//!
//! [`Patterns`] serializes as the flat list of its pattern lines, includes
//! already expanded ([`Patterns::lines`]); deserializing re-parses them.
//! The caller persists that after each successful parse and reloads it when
//! a later edit does not parse, so a typo never widens what is replicated.

mod glob;
mod parse;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;

use glob::Key;
use parse::{Ends, Rule};

/// The name of the pattern file, at the folder root.
pub const IGNORE_FILE: &str = ".backerignore";

/// Reads an included file, given its path relative to the folder root
/// (normalized: no `.`, no leading `/`; a `..` above the root is kept for
/// the loader to refuse). A `NotFound` error reads "file not found".
pub type Loader<'a> = &'a dyn Fn(&Path) -> io::Result<Vec<u8>>;

/// A pattern file that does not parse: the file, the 1-based line, why.
/// Displays as one line, `FILE:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    /// The file the bad line is in: the top-level name, or an included
    /// file's path relative to the root.
    pub file: String,
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// What the patterns say about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// No pattern matches: the path is replicated.
    NoMatch,
    /// A `!` pattern matched first: the path is replicated.
    Included,
    /// An ignore pattern matched first: the path stays on this machine.
    ///
    /// A folder that is ignored may still hold an [`Match::Included`] path
    /// (`!frobble` before `*2` keeps `bar2/frobble`): Syncthing then syncs
    /// the folder as that path's parent, and so should the caller. It need
    /// not look inside when `can_skip_dir` says no earlier `!` pattern could
    /// include anything below.
    Ignored {
        /// `(?d)`: may be deleted when it blocks removing a folder a peer
        /// deleted.
        deletable: bool,
        /// No pattern can include anything below this path (if it is a
        /// folder): a walker need not descend (Syncthing's `CanSkipDir`).
        can_skip_dir: bool,
    },
}

impl Match {
    /// True for [`Match::Ignored`].
    pub fn is_ignored(self) -> bool {
        matches!(self, Match::Ignored { .. })
    }
}

/// A parsed pattern set. The empty set (the [`Default`]) ignores nothing
/// but [`IGNORE_FILE`].
#[derive(Clone, Default)]
pub struct Patterns {
    rules: Vec<Rule>,
    lines: Vec<String>,
    /// `skip_ok[i]`: rules `0..=i` all allow skipping an ignored folder.
    skip_ok: Vec<bool>,
    any_fold: bool,
    /// The first rule whose glob is each plain name, at any depth.
    by_name: HashMap<Vec<u8>, usize>,
    /// The first rule whose glob is `*.EXT`, at any depth, by EXT.
    by_ext: HashMap<Vec<u8>, usize>,
    /// The indices of the other rules, tried in order.
    others: Vec<usize>,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Patterns").field(&self.lines).finish()
    }
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Self) -> bool {
        self.lines == other.lines
    }
}

impl Eq for Patterns {}

impl Patterns {
    /// Parses a pattern file. `source` names it in errors and is its path
    /// relative to the root, against which `#include` resolves (normally
    /// [`IGNORE_FILE`]). `load` reads included files.
    pub fn parse(text: &[u8], source: &str, load: Loader<'_>) -> Result<Patterns, ParseError> {
        let parsed = parse::parse(text, source, load)?;
        Ok(Patterns::from_rules(parsed.rules, parsed.lines))
    }

    /// Rebuilds a set from [`Patterns::lines`] of an earlier one (an
    /// `#include` in them is an error: they are already expanded).
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Result<Patterns, ParseError> {
        let mut text = Vec::new();
        for l in lines {
            text.extend_from_slice(l.as_ref().as_bytes());
            text.push(b'\n');
        }
        let no_include = |p: &Path| -> io::Result<Vec<u8>> {
            Err(io::Error::other(format!(
                "saved patterns cannot include {}",
                p.display()
            )))
        };
        Patterns::parse(&text, "<saved patterns>", &no_include)
    }

    fn from_rules(rules: Vec<Rule>, lines: Vec<String>) -> Patterns {
        let mut ok = true;
        let skip_ok = rules
            .iter()
            .map(|r| {
                ok &= r.allows_skip;
                ok
            })
            .collect();
        let any_fold = rules.iter().any(|r| r.fold_case);
        let (mut by_name, mut by_ext, mut others) = (HashMap::new(), HashMap::new(), Vec::new());
        for (i, r) in rules.iter().enumerate() {
            let keys: Option<Vec<Key<'_>>> = if r.fold_case
                || !r.any_start
                || r.ends != Ends::ExactOrBelow
                || !r.globs.iter().all(|g| g.one_name())
            {
                None
            } else {
                r.globs.iter().map(|g| g.key()).collect()
            };
            match keys {
                // The first rule with a key wins: later ones are shadowed.
                Some(keys) => {
                    for k in keys {
                        match k {
                            Key::Name(n) => by_name.entry(n.to_vec()).or_insert(i),
                            Key::Ext(e) => by_ext.entry(e.to_vec()).or_insert(i),
                        };
                    }
                }
                None => others.push(i),
            }
        }
        Patterns {
            rules,
            lines,
            skip_ok,
            any_fold,
            by_name,
            by_ext,
            others,
        }
    }

    /// The pattern lines in force, in order, with their prefixes, includes
    /// expanded: what [`Patterns::from_lines`] and serde take back.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// True when no pattern is in force.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the patterns say about `path`: relative to the folder root,
    /// `/`-separated, no leading or trailing `/` (an empty path is the root
    /// and never matches). Whether it is a folder does not matter: the
    /// language is textual, as Syncthing's.
    pub fn matches(&self, path: impl AsRef<[u8]>) -> Match {
        let path = path.as_ref();
        if path == IGNORE_FILE.as_bytes() {
            return Match::Ignored {
                deletable: false,
                can_skip_dir: true,
            };
        }
        if path.is_empty() || self.rules.is_empty() {
            return Match::NoMatch;
        }
        let plain = View::new(path.into());
        // The first matching rule: the least index among the hashed rules
        // that match some name, then the other rules before it, in order.
        let mut first = usize::MAX;
        for &(s, e) in &plain.names {
            let name = &plain.path[s..e];
            if let Some(&i) = self.by_name.get(name) {
                first = first.min(i);
            }
            if let Some(dot) = name.iter().rposition(|b| *b == b'.') {
                if let Some(&i) = self.by_ext.get(&name[dot + 1..]) {
                    first = first.min(i);
                }
            }
        }
        let mut folded: Option<View<'_>> = None;
        for &i in &self.others {
            if i > first {
                break;
            }
            let Some(rule) = self.rules.get(i) else { break };
            let view = if rule.fold_case {
                folded.get_or_insert_with(|| View::new(lowercase(path)))
            } else {
                &plain
            };
            if view.matches(rule) {
                first = i;
                break;
            }
        }
        match self.rules.get(first) {
            None => Match::NoMatch,
            Some(rule) if rule.include => Match::Included,
            Some(rule) => Match::Ignored {
                deletable: rule.deletable,
                can_skip_dir: self.skip_ok.get(first).copied().unwrap_or(false),
            },
        }
    }

    /// True when `path` is ignored and a walker need not look below it.
    pub fn skip_dir(&self, path: impl AsRef<[u8]>) -> bool {
        matches!(
            self.matches(path),
            Match::Ignored {
                can_skip_dir: true,
                ..
            }
        )
    }

    /// Whether any rule folds case (for a caller that caches lowercased
    /// paths).
    pub fn folds_case(&self) -> bool {
        self.any_fold
    }
}

/// A path and where its names start and end.
struct View<'a> {
    path: std::borrow::Cow<'a, [u8]>,
    names: Vec<(usize, usize)>,
}

impl<'a> View<'a> {
    fn new(path: std::borrow::Cow<'a, [u8]>) -> View<'a> {
        let mut names = Vec::with_capacity(8);
        let mut start = 0;
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                names.push((start, i));
                start = i + 1;
            }
        }
        names.push((start, path.len()));
        View { path, names }
    }

    fn matches(&self, rule: &Rule) -> bool {
        let below = rule.ends == Ends::ExactOrBelow;
        rule.globs.iter().any(|g| {
            if g.one_name() && below {
                // A match is exactly one name: the first, or any.
                let names = if rule.any_start {
                    &self.names[..]
                } else {
                    &self.names[..1]
                };
                names.iter().any(|&(s, e)| g.matches_name(&self.path[s..e]))
            } else {
                g.matches_path(&self.path, rule.any_start, below)
            }
        })
    }
}

/// Go's `strings.ToLower` on a path that may not be UTF-8: valid runs are
/// lowercased, other bytes kept.
fn lowercase(path: &[u8]) -> std::borrow::Cow<'static, [u8]> {
    let mut out = Vec::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_lowercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out.into()
}

impl serde::Serialize for Patterns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.lines.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        Patterns::from_lines(&lines).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
