//! `.backerignore` patterns: every example of Syncthing's `.stignore`
//! documentation, the cases issue 20 names, and bad input.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use backer_fs::ignore::{Match, ParseError, Patterns, IGNORE_FILE};
use proptest::prelude::*;

/// Parses `text` as `.backerignore`, with `files` as the includable files.
pub(crate) fn parse_with(text: &str, files: &[(&str, &str)]) -> Result<Patterns, ParseError> {
    let files: HashMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let load = move |p: &Path| -> io::Result<Vec<u8>> {
        let key = p.to_string_lossy().into_owned();
        files
            .get(&key)
            .map(|s| s.clone().into_bytes())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    };
    Patterns::parse(text.as_bytes(), IGNORE_FILE, &load)
}

pub(crate) fn parse(text: &str) -> Patterns {
    match parse_with(text, &[]) {
        Ok(p) => p,
        Err(e) => panic!("{text:?} does not parse: {e}"),
    }
}

/// Asserts, for each (path, ignored?), what `pats` says.
pub(crate) fn check(pats: &Patterns, cases: &[(&str, bool)]) {
    for (path, want) in cases {
        assert_eq!(
            pats.matches(path).is_ignored(),
            *want,
            "{path:?} with {:?}",
            pats.lines()
        );
    }
}

#[test]
fn documentation_pattern_examples() {
    // Each bullet of the "Patterns" section, with its examples.
    let table: &[(&str, &[(&str, bool)])] = &[
        // Regular file names match themselves, at any depth, files or dirs.
        (
            "foo",
            &[
                ("foo", true),
                ("subdir/foo", true),
                ("foo/x", true),
                ("foox", false),
            ],
        ),
        // Spaces are regular characters.
        ("a b", &[("a b", true), ("ab", false)]),
        // `*` stays within one name.
        (
            "te*st",
            &[
                ("test", true),
                ("subdir/telerest", true),
                ("tele/rest", false),
            ],
        ),
        // `**` crosses folders.
        (
            "te**st",
            &[
                ("test", true),
                ("subdir/telerest", true),
                ("tele/sub/dir/rest", true),
            ],
        ),
        // `?` is one character but `/`.
        (
            "te??st",
            &[("tebest", true), ("teb/st", false), ("test", false)],
        ),
        // Character ranges.
        ("[a-z]x", &[("bx", true), ("Bx", false), ("d/qx", true)]),
        // A leading `/` matches in the root only.
        (
            "/foo",
            &[("foo", true), ("subdir/foo", false), ("foo/bar", true)],
        ),
        // `(?i)` is case-insensitive.
        (
            "(?i)test",
            &[
                ("test", true),
                ("TEST", true),
                ("tEsT", true),
                ("tost", false),
            ],
        ),
        // Prefixes combine: an included case-insensitive pattern.
        (
            "(?i)!picture*.png\n*.png",
            &[("Picture1.PNG", false), ("x.png", true)],
        ),
        // A trailing `/` matches the folder's content, not the folder.
        (
            "some/directory/",
            &[("some/directory", false), ("some/directory/x", true)],
        ),
        // A comment line has no effect.
        ("// foo", &[("// foo", false), ("foo", false)]),
        // Escapes (not on Windows).
        ("\\[foo - bar\\]", &[("[foo - bar]", true), ("f", false)]),
    ];
    for (text, cases) in table {
        check(&parse(text), cases);
    }
}

#[test]
fn documentation_example_layout() {
    let pats = parse("(?d).DS_Store\n!frobble\n!quuz\nfoo\n*2\nqu*\n(?i)my pictures\n");
    let d = |deletable: bool| Match::Ignored {
        deletable,
        can_skip_dir: false,
    };
    let table = [
        // The first line: no `!` before it, so a walker may skip it.
        (
            ".DS_Store",
            Match::Ignored {
                deletable: true,
                can_skip_dir: true,
            },
        ),
        ("foo", d(false)),
        ("foofoo", Match::NoMatch),
        ("bar", Match::NoMatch),
        ("bar/baz", Match::NoMatch),
        ("bar/quux", d(false)),
        ("bar/quuz", Match::Included),
        // "bar2/ synced, despite matching *2, due to child frobble": the
        // folder matches; the caller keeps it as the parent of frobble.
        ("bar2", d(false)),
        ("bar2/baz", d(false)),
        ("bar2/frobble", Match::Included),
        ("My Pictures", d(false)),
        ("My Pictures/Img15.PNG", d(false)),
    ];
    for (path, want) in table {
        assert_eq!(pats.matches(path), want, "{path}");
    }
}

#[test]
fn prefixes_case_and_deletable() {
    let pats = parse("(?d)(?i)*.TMP\n(?i)(?d)!KEEP\n(?d)junk\n");
    assert_eq!(
        pats.matches("a/B.tmp"),
        Match::Ignored {
            deletable: true,
            can_skip_dir: true
        }
    );
    assert_eq!(pats.matches("keep"), Match::Included);
    assert_eq!(pats.matches("x/Keep/y"), Match::Included);
    assert!(pats.matches("junk").is_ignored());
    assert!(
        !pats.matches("JUNK").is_ignored(),
        "case matters without (?i)"
    );
    // Case folding is Unicode, on the path as on the pattern.
    check(&parse("(?i)ÄRGER"), &[("ärger", true), ("ÄrGeR/x", true)]);
}

#[test]
fn anchored_unanchored_and_double_star() {
    let pats = parse("/top\nany\na/**/z\n/b/**\n");
    check(
        &pats,
        &[
            ("top", true),
            ("top/x", true),
            ("sub/top", false),
            ("any", true),
            ("x/y/any", true),
            ("x/any/y", true),
            ("a/b/z", true),
            ("a/b/c/z", true),
            // `a/**/z` needs something between: Syncthing's glob has
            // `**` match characters, not "zero or more folders".
            ("a/z", false),
            ("q/a/b/z", true),
            ("b", false),
            ("b/c", true),
            ("x/b/c", false),
        ],
    );
}

#[test]
fn folder_pattern_matches_below() {
    let pats = parse("node_modules\nbuild/out\n");
    check(
        &pats,
        &[
            ("node_modules", true),
            ("web/node_modules/left-pad/index.js", true),
            ("build/out/a.o", true),
            ("x/build/out", true),
            ("build/outer", false),
            ("build", false),
        ],
    );
}

#[test]
fn first_match_wins_and_include() {
    let pats = parse("!important.log\n*.log\n");
    check(&pats, &[("important.log", false), ("a/x.log", true)]);
    assert_eq!(pats.matches("important.log"), Match::Included);
    // The same lines the other way round: the ignore comes first.
    let pats = parse("*.log\n!important.log\n");
    check(&pats, &[("important.log", true)]);
    // A re-include below an ignored folder must come before it.
    let pats = parse("!cache/keep\ncache\n");
    check(
        &pats,
        &[("cache/keep", false), ("cache/drop", true), ("cache", true)],
    );
    assert!(!pats.skip_dir("cache"), "cache/keep may be below");
}

#[test]
fn skip_dir_follows_syncthing() {
    let pats = parse("ign1\ni*2\n");
    assert!(pats.skip_dir("ign2"));
    let pats = parse("!iex2\n!ign1/ex\nign1\ni*2\n!ign2\n");
    assert!(!pats.skip_dir("ign2"));
    // Top-level includes cannot include below another top-level folder.
    assert!(parse("/foo/ign*\n!/f*\n!/bar\n*\n").skip_dir("whatever"));
    assert!(!parse("!/foo/ign*\n*\n").skip_dir("whatever"));
    // A later include cannot change an earlier ignore: still skippable.
    assert!(parse("x\n!x/y\n").skip_dir("x"));
    for (line, ok) in [
        ("!/test", true),
        ("!/t[eih]t", true),
        ("!/t*t", true),
        ("!/t?t", true),
        ("!/parent/test", false),
        ("!/parent/t*t", false),
        ("!/**.mp3", false),
        ("!/pa*nt/test", false),
        ("!/lo*st/parent/test", false),
        ("/pa*nt/test", true),
        ("test", true),
        ("*", true),
    ] {
        // Followed by an ignore-all: can "zzz" be skipped?
        let pats = parse(&format!("{line}\n*\n"));
        assert_eq!(pats.skip_dir("zzz"), ok, "{line}");
    }
}

#[test]
fn includes() {
    let files = [
        ("shared/common.txt", "*.o\n#include more.txt\n"),
        ("shared/more.txt", "/from-more\n"),
        ("loop-a", "#include loop-b\n"),
        ("loop-b", "#include loop-a\n"),
    ];
    // Relative to the including file: more.txt is shared/more.txt, and its
    // patterns stay relative to the folder root.
    let pats = parse_with("#include shared/common.txt\nkeep\n", &files).unwrap();
    check(
        &pats,
        &[
            ("x/a.o", true),
            ("from-more", true),
            ("shared/from-more", false),
            ("keep", true),
        ],
    );
    assert_eq!(pats.lines(), ["*.o", "/from-more", "keep"]);

    let missing = parse_with("a\n\n#include nope.txt\n", &files).unwrap_err();
    assert_eq!((missing.file.as_str(), missing.line), (IGNORE_FILE, 3));
    assert!(missing.to_string().contains("file not found"), "{missing}");

    let cycle = parse_with("#include loop-a\n", &files).unwrap_err();
    assert_eq!((cycle.file.as_str(), cycle.line), ("loop-b", 1), "{cycle}");
    let self_include = parse_with(&format!("#include {IGNORE_FILE}\n"), &files).unwrap_err();
    assert!(self_include.message.contains("twice"), "{self_include}");
    let twice = parse_with("#include loop-b\n#include ./loop-b\n", &[("loop-b", "x\n")]);
    assert!(twice.unwrap_err().message.contains("twice"));

    // An error inside an included file names that file and its line.
    let bad = parse_with("#include sub/p\n", &[("sub/p", "ok\n\n[oops\n")]).unwrap_err();
    assert_eq!((bad.file.as_str(), bad.line), ("sub/p", 3), "{bad}");

    for partial in ["#include", "#include ", "#include   \n\n", "#includex"] {
        assert!(parse_with(partial, &files).is_err(), "{partial:?}");
    }
}

#[test]
fn syntax_error_names_the_line() {
    let err = parse_with("*.o\n// fine\n\nfoo[a-z0-9]\nbar\n", &[]).unwrap_err();
    assert_eq!(err.line, 4);
    let shown = err.to_string();
    assert!(shown.starts_with(".backerignore:4: "), "{shown}");
    assert!(shown.contains("foo[a-z0-9]"), "{shown}");
    assert!(!shown.contains('\n'), "one line: {shown}");
    for bad in ["!", "(?d)", "(?i)", "[", "/[", "**/[", "{a,b", "#escape=xx"] {
        let e = parse_with(bad, &[]).unwrap_err();
        assert_eq!(e.line, 1, "{bad}: {e}");
    }
    let e = Patterns::parse(b"ok\nbad\xff\n", IGNORE_FILE, &|_| Ok(Vec::new())).unwrap_err();
    assert_eq!(e.line, 2);
}

#[test]
fn the_pattern_file_itself_is_always_ignored() {
    let empty = Patterns::default();
    assert!(empty.is_empty());
    assert!(empty.matches(IGNORE_FILE).is_ignored());
    assert!(!empty.matches("sub/.backerignore").is_ignored());
    assert!(!empty.matches("anything").is_ignored());
    assert!(!empty.matches("").is_ignored());
    let pats = parse("!/.backerignore\n!*\n");
    assert!(pats.matches(IGNORE_FILE).is_ignored());
}

#[test]
fn serialized_set_comes_back_equal() {
    let pats = parse_with(
        "#include p\n(?d)(?i)*.Part\n!/keep/**\nbuild/\n\\*lit\n",
        &[("p", "a{b,c}d\n")],
    )
    .unwrap();
    let bytes = bincode::serialize(&pats).unwrap();
    let back: Patterns = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, pats);
    for path in [
        "abd", "x/acd", "y.PART", "keep/a", "build/x", "build", "*lit", "xlit",
    ] {
        assert_eq!(back.matches(path), pats.matches(path), "{path}");
    }
    // An `#escape` file's lines come back in the default escape.
    let esc = parse("#escape=|\na|*b\n");
    let back = Patterns::from_lines(esc.lines()).unwrap();
    check(&back, &[("a*b", true), ("axb", false)]);
    assert!(Patterns::from_lines(&["#include x"]).is_err());
}

#[test]
fn non_utf8_paths_and_long_paths() {
    let pats = parse("a?c\n(?i)X*\n*.o\n");
    assert!(pats.matches(b"a\xffc").is_ignored());
    assert!(pats.matches(b"d/x\xfe").is_ignored());
    assert!(!pats.matches(b"\xfe\xff").is_ignored());
    let deep = "d/".repeat(5000) + "f.o";
    assert!(pats.matches(&deep).is_ignored());
    // A pattern that backtracks exponentially in a naive matcher.
    let slow = parse("*a*a*a*a*a*a*a*a*a*a*b\n**a**a**a**a**a**a**b\n");
    let path = "a".repeat(4000);
    assert!(!slow.matches(&path).is_ignored());
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(text in proptest::collection::vec(any::<u8>(), 0..200)) {
        let load = |_: &Path| -> io::Result<Vec<u8>> { Ok(b"x\n".to_vec()) };
        if let Ok(p) = Patterns::parse(&text, IGNORE_FILE, &load) {
            let _ = p.matches(&text);
            let _ = p.matches("a/b/c");
        }
    }

    #[test]
    fn pattern_like_text_never_panics(
        text in "[!/*?\\[\\]{},\\\\a-c(?id)#\n ]{0,40}",
        path in "[a-c/*?\\[]{0,20}",
    ) {
        if let Ok(p) = parse_with(&text, &[]) {
            let _ = p.matches(&path);
            let back = Patterns::from_lines(p.lines());
            prop_assert!(back.is_ok(), "{:?}", p.lines());
        }
    }
}
