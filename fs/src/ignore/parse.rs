//! From pattern files to rules: lines, comments, prefixes, `#include`,
//! `#escape`, and how Syncthing turns one line into the globs it tries.

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::glob::{self, Glob};
use super::{Loader, ParseError};

/// Where a rule's match may start and end in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ends {
    /// The glob matches the whole rest of the path.
    Exact,
    /// The glob matches the rest of the path, or the part of it up to a
    /// `/` (the pattern names a folder: everything below it matches).
    ExactOrBelow,
}

/// One pattern line, compiled.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// The globs of the line's `{…}` alternatives; any of them matching is
    /// the line matching.
    pub(super) globs: Vec<Glob>,
    /// False for a leading `/`: the match starts at the folder root. True:
    /// at the root or right after any `/`.
    pub(super) any_start: bool,
    pub(super) ends: Ends,
    /// `!`: a match includes instead of ignoring.
    pub(super) include: bool,
    /// `(?i)`: the glob is lowercased, and so is the path before matching.
    pub(super) fold_case: bool,
    /// `(?d)`.
    pub(super) deletable: bool,
    /// Syncthing's `allowsSkippingIgnoredDirs` for this line.
    pub(super) allows_skip: bool,
}

/// The result of parsing: rules in order and the pattern lines they came
/// from (after `#include` expansion and `#escape` rewriting), one per rule.
pub(super) struct Parsed {
    pub(super) rules: Vec<Rule>,
    pub(super) lines: Vec<String>,
}

/// Parses a top-level pattern file.
pub(super) fn parse(text: &[u8], source: &str, load: Loader<'_>) -> Result<Parsed, ParseError> {
    let mut st = State {
        parsed: Parsed {
            rules: Vec::new(),
            lines: Vec::new(),
        },
        seen_lines: HashSet::new(),
        loaded: HashSet::new(),
        load,
    };
    let root = normalize(Path::new(source));
    st.loaded.insert(root.clone());
    st.file(text, source, &root)?;
    Ok(st.parsed)
}

struct State<'a> {
    parsed: Parsed,
    /// Syncthing skips a pattern line identical to one seen before (in any
    /// file): it could never be the first match anyway.
    seen_lines: HashSet<String>,
    /// Every file read so far, the top-level one included, normalized:
    /// a second `#include` of any of them is an error.
    loaded: HashSet<PathBuf>,
    load: Loader<'a>,
}

impl State<'_> {
    fn file(&mut self, text: &[u8], name: &str, path: &Path) -> Result<(), ParseError> {
        let err = |line: usize, message: String| ParseError {
            file: name.to_string(),
            line,
            message,
        };
        let mut escape: Option<char> = None;
        let mut own_patterns = 0usize;
        for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
            let lineno = i + 1;
            let Ok(line) = std::str::from_utf8(raw) else {
                return Err(err(lineno, "not UTF-8".into()));
            };
            // Go's bufio.ScanLines drops a '\r' before '\n'; TrimSpace
            // then removes all surrounding white space, as here.
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("#escape") {
                // Followed from Syncthing's code: one `#escape=C` line, before
                // any pattern of this file, makes C the escape character.
                if escape.is_some() {
                    return Err(err(lineno, "a second #escape line".into()));
                }
                if own_patterns > 0 {
                    return Err(err(lineno, "#escape after patterns".into()));
                }
                let mut chars = rest.trim().strip_prefix('=').map(|c| c.trim().chars());
                match chars.as_mut().map(|c| (c.next(), c.next())) {
                    Some((Some(c), None)) => escape = Some(c),
                    _ => return Err(err(lineno, format!("bad #escape line {line:?}"))),
                }
                continue;
            }
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            // `#include` lines are not deduplicated here (Syncthing skips a
            // repeated one silently): including a file twice is an error.
            if !line.starts_with("#include") && !self.seen_lines.insert(line.into()) {
                continue;
            }
            let line = match escape {
                Some(c) if c != '\\' => rewrite_escape(line, c),
                _ => line.to_string(),
            };
            if let Some(rest) = line.strip_prefix("#include") {
                // Syncthing splits on the first space: `#includex` is an
                // error, not a pattern.
                let target = match rest.strip_prefix(' ').map(str::trim) {
                    Some(t) if !t.is_empty() => t,
                    _ => return Err(err(lineno, "#include without a file name".into())),
                };
                let dir = path.parent().unwrap_or(Path::new(""));
                let inc = normalize(&dir.join(target));
                if !self.loaded.insert(inc.clone()) {
                    return Err(err(
                        lineno,
                        format!(
                            "#include {target}: {} is included twice (a cycle?)",
                            inc.display()
                        ),
                    ));
                }
                let body = (self.load)(&inc).map_err(|e| {
                    let why = if e.kind() == io::ErrorKind::NotFound {
                        "file not found".to_string()
                    } else {
                        e.to_string()
                    };
                    err(
                        lineno,
                        format!("#include {target}: {why} ({})", inc.display()),
                    )
                })?;
                let inc_name = inc.display().to_string();
                self.file(&body, &inc_name, &inc)?;
                continue;
            }
            let rule = rule_of_line(&line).map_err(|m| err(lineno, format!("{m} in {line:?}")))?;
            own_patterns += 1;
            self.parsed.rules.push(rule);
            self.parsed.lines.push(line);
        }
        Ok(())
    }
}

/// `#escape=C` with C other than `\`: followed from Syncthing's code, which
/// rewrites the line textually: every C becomes `\`, then `\\` becomes
/// `\C` (so `CC` is a plain C).
fn rewrite_escape(line: &str, esc: char) -> String {
    line.replace(esc, "\\").replace("\\\\", &format!("\\{esc}"))
}

/// A path made of its normal components only: `.` dropped, `..` applied,
/// a leading `/` dropped (Syncthing joins an include to the including
/// file's folder, so `#include /x` is `x` there too). A `..` above the
/// root is kept for the loader to refuse or resolve.
fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    let mut ups = 0usize;
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if out.pop().is_none() {
                    ups += 1;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let mut buf = PathBuf::new();
    for _ in 0..ups {
        buf.push("..");
    }
    buf.extend(out);
    buf
}

/// One pattern line (not a comment or directive) to its rule, as
/// Syncthing's `parseIgnoreFile` + `parseLine` do, folded: a line `X`
/// there becomes the globs `X`, `**/X`, `X/**`, `**/X/**`; here one glob
/// with `any_start` and [`Ends::ExactOrBelow`], which match the same paths.
pub(super) fn rule_of_line(line: &str) -> Result<Rule, String> {
    // Syncthing decides the suffix forms on the line with its prefixes.
    let (body, ends) = if line.ends_with("/**") {
        (line.to_string(), Ends::Exact)
    } else if line.ends_with('/') {
        (format!("{line}**"), Ends::Exact)
    } else {
        (line.to_string(), Ends::ExactOrBelow)
    };
    let mut rest = body.as_str();
    let (mut include, mut fold_case, mut deletable) = (false, false, false);
    // Each prefix once, in any order; a repeated one is part of the pattern
    // (followed from Syncthing's code and its TestFlagOrder).
    loop {
        if !include && rest.starts_with('!') {
            include = true;
            rest = &rest[1..];
        } else if !fold_case && rest.starts_with("(?i)") {
            fold_case = true;
            rest = &rest[4..];
        } else if !deletable && rest.starts_with("(?d)") {
            deletable = true;
            rest = &rest[4..];
        } else {
            break;
        }
    }
    if rest.is_empty() {
        // "!", "(?i)", "(?d)" alone (Syncthing: "missing pattern").
        return Err("missing pattern".into());
    }
    let pattern = if fold_case {
        rest.to_lowercase()
    } else {
        rest.to_string()
    };
    let (glob_text, any_start) = if let Some(anchored) = pattern.strip_prefix('/') {
        (anchored.to_string(), false)
    } else if let Some(tail) = pattern.strip_prefix("**/").filter(|t| !t.is_empty()) {
        // `**/X` and `X` both, in Syncthing: X at any depth.
        (tail.to_string(), true)
    } else {
        (pattern.clone(), true)
    };
    let globs = glob::compile(&glob_text)?;
    let allows_skip = !include || (!any_start && skip_safe_anchored(&glob_text));
    Ok(Rule {
        globs,
        any_start,
        ends,
        include,
        fold_case,
        deletable,
        allows_skip,
    })
}

/// Syncthing's `allowsSkippingIgnoredDirs` for an anchored include whose
/// glob (without its `/`) is `g`: a top-level include cannot include
/// anything below another top-level folder.
fn skip_safe_anchored(g: &str) -> bool {
    let g = g
        .strip_suffix("/**")
        .unwrap_or(if g == "**" { "" } else { g });
    if g.is_empty() {
        return true;
    }
    if g.contains('/') {
        return false;
    }
    !g.strip_suffix("**").unwrap_or(g).contains("**")
}
