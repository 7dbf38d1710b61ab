//! One glob of a pattern line: its syntax (that of `gobwas/glob`, which
//! Syncthing uses, with `/` as the separator) and a matcher that is linear
//! in the path's length times the glob's length, whatever the glob.
//!
//! Syntax, as gobwas/glob's lexer has it (followed from its code):
//! - `*` any run of characters but `/`; `**` any run, `/` included; a third
//!   `*` is one more `*` (so `***` acts as `**`).
//! - `?` one character but `/`.
//! - `[abc]`, `[!abc]`, `[a-z]`, `[!a-z]`: ONE list or ONE range per class
//!   (`[a-z0-9]` is an error there and here); `!` negates, `^` is a plain
//!   character; a class may match `/` (gobwas does not exclude it).
//! - `{a,b,c}` alternatives, nestable, each may hold wildcards; `,` and `}`
//!   are plain outside braces, and `]` is plain outside a class.
//! - `\` makes the next character plain; a trailing `\` is dropped.
//!
//! Characters are UTF-8 characters; a byte of a path that is not valid
//! UTF-8 is one character that no literal or class names (Go decodes it as
//! U+FFFD; no real pattern names that either).

/// How many globs one line may expand to through `{…}` alternatives.
const MAX_ALTERNATIVES: usize = 1024;
/// How deeply `{…}` may nest (a bound on the parser's recursion).
const MAX_NESTING: usize = 16;

/// One element of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Bytes that must appear as they are.
    Lit(Vec<u8>),
    /// `*`
    Star,
    /// `**`
    Super,
    /// `?`
    One,
    /// `[...]`: a list of characters or one range, maybe negated.
    Class { neg: bool, set: ClassSet },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassSet {
    List(Vec<char>),
    Range(char, char),
}

impl ClassSet {
    fn contains(&self, c: char) -> bool {
        match self {
            ClassSet::List(l) => l.contains(&c),
            ClassSet::Range(lo, hi) => *lo <= c && c <= *hi,
        }
    }
}

/// The common shapes of a glob that stays within one name, matched without
/// the general algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// `name`
    Exact(Vec<u8>),
    /// `*`
    AnyName,
    /// `pre*`
    Prefix(Vec<u8>),
    /// `*suf`
    Suffix(Vec<u8>),
    /// `*mid*`
    Contains(Vec<u8>),
    /// `pre*suf`
    PrefixSuffix(Vec<u8>, Vec<u8>),
    /// Anything else: the general matcher.
    General,
}

/// How a simple one-name glob is found by hashing.
pub(super) enum Key<'a> {
    /// The name itself.
    Name(&'a [u8]),
    /// `*.ext`: what follows the name's last `.` (`*.o` matches a name
    /// exactly when its last `.` is followed by `o` and nothing more).
    Ext(&'a [u8]),
}

/// A compiled glob without alternatives.
#[derive(Debug, Clone)]
pub(super) struct Glob {
    toks: Vec<Tok>,
    /// True when no token can match `/`: a match is then one name.
    one_name: bool,
    shape: Shape,
    /// The longest literal: a path without it cannot match (a cheap
    /// rejection before the general matcher).
    required: Vec<u8>,
}

/// Compiles one pattern (prefixes and anchoring already removed) into the
/// globs its `{…}` alternatives expand to. Errors are one short phrase.
pub(super) fn compile(pattern: &str) -> Result<Vec<Glob>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let alts = parse_seq(&chars, &mut pos, 0)?;
    if pos != chars.len() {
        // parse_seq at depth 0 stops only at the end.
        return Err("unexpected '}'".into());
    }
    Ok(alts.into_iter().map(Glob::new).collect())
}

/// Parses until the end, or (inside braces, depth > 0) until an unescaped
/// `,` or `}`, which it leaves unread. Returns every expansion.
fn parse_seq(chars: &[char], pos: &mut usize, depth: usize) -> Result<Vec<Vec<Tok>>, String> {
    let mut alts: Vec<Vec<Tok>> = vec![Vec::new()];
    let mut text = String::new();
    let flush = |text: &mut String, alts: &mut Vec<Vec<Tok>>| {
        if !text.is_empty() {
            for a in alts.iter_mut() {
                push_lit(a, text.as_bytes());
            }
            text.clear();
        }
    };
    while let Some(&c) = chars.get(*pos) {
        match c {
            ',' | '}' if depth > 0 => break,
            '\\' => {
                *pos += 1;
                if let Some(&n) = chars.get(*pos) {
                    text.push(n);
                    *pos += 1;
                }
            }
            '*' => {
                flush(&mut text, &mut alts);
                *pos += 1;
                let tok = if chars.get(*pos) == Some(&'*') {
                    *pos += 1;
                    Tok::Super
                } else {
                    Tok::Star
                };
                alts.iter_mut().for_each(|a| a.push(tok.clone()));
            }
            '?' => {
                flush(&mut text, &mut alts);
                *pos += 1;
                alts.iter_mut().for_each(|a| a.push(Tok::One));
            }
            '[' => {
                flush(&mut text, &mut alts);
                *pos += 1;
                let tok = parse_class(chars, pos)?;
                alts.iter_mut().for_each(|a| a.push(tok.clone()));
            }
            '{' => {
                flush(&mut text, &mut alts);
                if depth >= MAX_NESTING {
                    return Err("'{' nested too deeply".into());
                }
                *pos += 1;
                let mut options: Vec<Vec<Tok>> = Vec::new();
                loop {
                    options.extend(parse_seq(chars, pos, depth + 1)?);
                    match chars.get(*pos) {
                        Some(',') => *pos += 1,
                        Some('}') => {
                            *pos += 1;
                            break;
                        }
                        _ => return Err("'{' without its '}'".into()),
                    }
                    if options.len() > MAX_ALTERNATIVES {
                        return Err("too many {…} alternatives".into());
                    }
                }
                if alts.len().saturating_mul(options.len()) > MAX_ALTERNATIVES {
                    return Err("too many {…} alternatives".into());
                }
                let mut next = Vec::with_capacity(alts.len() * options.len());
                for a in &alts {
                    for o in &options {
                        let mut n = a.clone();
                        for t in o {
                            match t {
                                Tok::Lit(l) => push_lit(&mut n, l),
                                t => n.push(t.clone()),
                            }
                        }
                        next.push(n);
                    }
                }
                alts = next;
            }
            c => {
                text.push(c);
                *pos += 1;
            }
        }
    }
    flush(&mut text, &mut alts);
    Ok(alts)
}

/// Appends bytes, merging with a literal just before them.
fn push_lit(toks: &mut Vec<Tok>, bytes: &[u8]) {
    if let Some(Tok::Lit(l)) = toks.last_mut() {
        l.extend_from_slice(bytes);
    } else {
        toks.push(Tok::Lit(bytes.to_vec()));
    }
}

/// Parses a class after its `[`, as gobwas's lexer does: an optional `!`,
/// then either `lo-hi` or a list (with `\` escapes), then `]`.
fn parse_class(chars: &[char], pos: &mut usize) -> Result<Tok, String> {
    let unclosed = || "'[' without its ']'".to_string();
    let mut neg = false;
    if chars.get(*pos) == Some(&'!') {
        neg = true;
        *pos += 1;
    }
    let first = *chars.get(*pos).ok_or_else(unclosed)?;
    let set = if first != ']' && chars.get(*pos + 1) == Some(&'-') {
        let hi = *chars.get(*pos + 2).ok_or_else(unclosed)?;
        *pos += 3;
        ClassSet::Range(first, hi)
    } else {
        let mut list = Vec::new();
        while let Some(&c) = chars.get(*pos) {
            match c {
                ']' => break,
                '\\' => {
                    *pos += 1;
                    if let Some(&n) = chars.get(*pos) {
                        list.push(n);
                        *pos += 1;
                    }
                }
                c => {
                    list.push(c);
                    *pos += 1;
                }
            }
        }
        ClassSet::List(list)
    };
    match chars.get(*pos) {
        Some(']') => {
            *pos += 1;
            Ok(Tok::Class { neg, set })
        }
        Some(_) => Err("a class holds one list or one range, then ']'".into()),
        None => Err(unclosed()),
    }
}

impl Glob {
    fn new(toks: Vec<Tok>) -> Glob {
        let one_name = toks.iter().all(|t| match t {
            Tok::Lit(l) => !l.contains(&b'/'),
            Tok::Star | Tok::One => true,
            Tok::Super | Tok::Class { .. } => false,
        });
        let shape = if !one_name {
            Shape::General
        } else {
            match toks.as_slice() {
                [] => Shape::Exact(Vec::new()),
                [Tok::Lit(l)] => Shape::Exact(l.clone()),
                [Tok::Star] => Shape::AnyName,
                [Tok::Lit(p), Tok::Star] => Shape::Prefix(p.clone()),
                [Tok::Star, Tok::Lit(s)] => Shape::Suffix(s.clone()),
                [Tok::Star, Tok::Lit(m), Tok::Star] => Shape::Contains(m.clone()),
                [Tok::Lit(p), Tok::Star, Tok::Lit(s)] => Shape::PrefixSuffix(p.clone(), s.clone()),
                _ => Shape::General,
            }
        };
        let required = toks
            .iter()
            .filter_map(|t| match t {
                Tok::Lit(l) => Some(l),
                _ => None,
            })
            .max_by_key(|l| l.len())
            .cloned()
            .unwrap_or_default();
        Glob {
            toks,
            one_name,
            shape,
            required,
        }
    }

    /// For a one-name glob that is a plain name or `*.ext` (`ext` without
    /// a `.`): the key to find it by in a hash map, instead of trying it.
    pub(super) fn key(&self) -> Option<Key<'_>> {
        match &self.shape {
            Shape::Exact(l) => Some(Key::Name(l)),
            Shape::Suffix(s) => match s.split_first() {
                Some((b'.', ext)) if !ext.contains(&b'.') => Some(Key::Ext(ext)),
                _ => None,
            },
            _ => None,
        }
    }

    /// True when every match of this glob is exactly one name.
    pub(super) fn one_name(&self) -> bool {
        self.one_name
    }

    /// Whether this one-name glob matches `name` (which holds no `/`).
    pub(super) fn matches_name(&self, name: &[u8]) -> bool {
        match &self.shape {
            Shape::Exact(l) => name == l.as_slice(),
            Shape::AnyName => true,
            Shape::Prefix(p) => name.starts_with(p),
            Shape::Suffix(s) => name.ends_with(s),
            Shape::Contains(m) => contains(name, m),
            Shape::PrefixSuffix(p, s) => {
                name.len() >= p.len() + s.len() && name.starts_with(p) && name.ends_with(s)
            }
            Shape::General => {
                let mut found = false;
                self.run(name, false, |start| found |= start == 0);
                found
            }
        }
    }

    /// Whether the glob matches `path[s..e]` for some `s` allowed by
    /// `starts` and an `e` that is the end of `path` or (with `below`) the
    /// position of a `/`.
    pub(super) fn matches_path(&self, path: &[u8], any_start: bool, below: bool) -> bool {
        // Cheap rejections first: an anchored glob's leading literal, then
        // the longest literal anywhere.
        if let (false, Some(Tok::Lit(first))) = (any_start, self.toks.first()) {
            if !path.starts_with(first) {
                return false;
            }
        }
        if !contains(path, &self.required) {
            return false;
        }
        let mut found = false;
        self.run(path, below, |s| {
            found |= s == 0 || (any_start && path[s - 1] == b'/');
        });
        found
    }

    /// The general matcher, by dynamic programming from the last token
    /// back: `row[p]` says whether the tokens from `t` on match a prefix of
    /// `text[p..]` that ends where a match may end. Time O(tokens × len),
    /// memory O(len), no recursion: no pattern or path can make it slow or
    /// deep. Calls `hit` with every start position that matches.
    fn run(&self, text: &[u8], below: bool, mut hit: impl FnMut(usize)) {
        let n = text.len();
        let mut next: Vec<bool> = (0..=n)
            .map(|p| p == n || (below && text[p] == b'/'))
            .collect();
        let mut row = vec![false; n + 1];
        for tok in self.toks.iter().rev() {
            for p in (0..=n).rev() {
                row[p] = match tok {
                    Tok::Lit(l) => text[p..].starts_with(l) && next[p + l.len()],
                    Tok::One => p < n && text[p] != b'/' && next[p + char_len(&text[p..])],
                    Tok::Class { neg, set } => match decode(&text[p..]) {
                        Some((c, len)) => set.contains(c) != *neg && next[p + len],
                        // An invalid byte is no character a class names.
                        None => p < n && *neg && next[p + 1],
                    },
                    Tok::Star => {
                        next[p] || (p < n && text[p] != b'/' && row[p + char_len(&text[p..])])
                    }
                    Tok::Super => next[p] || (p < n && row[p + char_len(&text[p..])]),
                };
            }
            std::mem::swap(&mut row, &mut next);
        }
        for (p, ok) in next.iter().enumerate() {
            if *ok && p < n || (*ok && p == n && n == 0) {
                hit(p);
            }
        }
    }
}

/// The length of the character at the start of `s` (1 for an invalid byte;
/// `s` is not empty).
fn char_len(s: &[u8]) -> usize {
    decode(s).map_or(1, |(_, len)| len)
}

/// Decodes the UTF-8 character at the start of `s`.
fn decode(s: &[u8]) -> Option<(char, usize)> {
    let want = match *s.first()? {
        b if b < 0x80 => return Some((char::from(b), 1)),
        b if b & 0xE0 == 0xC0 => 2,
        b if b & 0xF0 == 0xE0 => 3,
        b if b & 0xF8 == 0xF0 => 4,
        _ => return None,
    };
    let head = s.get(..want)?;
    let c = std::str::from_utf8(head).ok()?.chars().next()?;
    Some((c, want))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return false,
            Some(off) => {
                i += off;
                if hay[i + 1..i + needle.len()] == *rest {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The glob's meaning, spelled out by backtracking (exponential in the
    /// worst case: fine on the short strings of the proptest below).
    fn naive(toks: &[Tok], t: &[u8], below: bool) -> bool {
        let Some((tok, rest)) = toks.split_first() else {
            return t.is_empty() || (below && t[0] == b'/');
        };
        match tok {
            Tok::Lit(l) => t.starts_with(l) && naive(rest, &t[l.len()..], below),
            Tok::One => !t.is_empty() && t[0] != b'/' && naive(rest, &t[char_len(t)..], below),
            Tok::Class { neg, set } => match decode(t) {
                Some((c, len)) => set.contains(c) != *neg && naive(rest, &t[len..], below),
                None => !t.is_empty() && *neg && naive(rest, &t[1..], below),
            },
            Tok::Star | Tok::Super => {
                let mut i = 0;
                loop {
                    if naive(rest, &t[i..], below) {
                        return true;
                    }
                    if i >= t.len() || (*tok == Tok::Star && t[i] == b'/') {
                        return false;
                    }
                    i += char_len(&t[i..]);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_backtracking(
            pattern in "[ab/*?\\[\\]{},!é-]{0,10}",
            text in "[ab/é]{0,10}",
            any_start: bool,
            below: bool,
        ) {
            let Ok(globs) = compile(&pattern) else { return Ok(()) };
            let t = text.as_bytes();
            for g in globs {
                let want = (0..=t.len())
                    .filter(|&s| (s == 0 || (any_start && t[s - 1] == b'/')) && (s < t.len() || t.is_empty()))
                    .any(|s| naive(&g.toks, &t[s..], below));
                prop_assert_eq!(g.matches_path(t, any_start, below), want, "{:?} on {:?}", pattern, text);
                if g.one_name() && !t.contains(&b'/') {
                    prop_assert_eq!(g.matches_name(t), naive(&g.toks, t, false), "{:?} on {:?}", pattern, text);
                }
            }
        }
    }

    fn m(pattern: &str, path: &str) -> bool {
        compile(pattern)
            .unwrap()
            .iter()
            .any(|g| g.matches_path(path.as_bytes(), false, false))
    }

    #[test]
    fn shapes_and_general_agree() {
        for (pat, name) in [
            ("abc", "abc"),
            ("abc", "abd"),
            ("*", "x"),
            ("a*", "abc"),
            ("a*", "ba"),
            ("*c", "abc"),
            ("*c", "cb"),
            ("*b*", "abc"),
            ("*b*", "acd"),
            ("a*c", "ac"),
            ("a*c", "abbc"),
            ("ab*bc", "abc"),
        ] {
            let g = compile(pat).unwrap().remove(0);
            assert!(g.one_name());
            let general = Glob {
                shape: Shape::General,
                ..g.clone()
            };
            assert_eq!(
                g.matches_name(name.as_bytes()),
                general.matches_name(name.as_bytes()),
                "{pat} on {name}"
            );
        }
    }

    #[test]
    fn gobwas_syntax() {
        assert!(m("a[!b]c", "a/c"), "a class may match '/'");
        assert!(m("[^a]", "^"), "'^' is plain in a class");
        assert!(m("a\\", "a"), "a trailing backslash is dropped");
        assert!(m("{a,{b,c}d}", "cd"));
        assert!(m("{,x}y", "y"));
        assert!(m("a]b}", "a]b}"));
        assert!(m("***", "a/b"));
        assert!(!m("a?b", "a/b"));
        assert!(m("[\\]]", "]"));
        assert!(m("[!]", "x"), "an empty negated list matches any character");
        for bad in ["[", "[a-z0-9]", "{a,b", "a}{", "[a-"] {
            assert!(compile(bad).is_err(), "{bad}");
        }
        assert!(compile("}").is_ok());
        let deep = "{".repeat(100);
        assert!(compile(&deep).is_err());
        let wide = "{a,b}".repeat(20);
        assert!(compile(&wide).is_err());
    }

    #[test]
    fn invalid_utf8_is_one_character() {
        let g = compile("a?b").unwrap().remove(0);
        assert!(g.matches_path(b"a\xffb", false, false));
        let g = compile("a[!x]b").unwrap().remove(0);
        assert!(g.matches_path(b"a\xffb", false, false));
        let g = compile("a[x]b").unwrap().remove(0);
        assert!(!g.matches_path(b"a\xffb", false, false));
    }
}
