//! Syncthing's own `lib/ignore/ignore_test.go` cases that apply on Linux,
//! ported (names kept). Left out: the Windows and macOS ones
//! (TestWindowsPatterns, TestAutomaticCaseInsensitivity,
//! TestWindowsLineEndings, TestEscapePipe), those about its file cache and
//! hashing (TestCacheReload, TestHash, TestHashOfEmpty, TestIssue4689,
//! TestLines: backer reloads at its integration, not here), the symlink
//! one (no I/O here), TestIssue3164 as written (it compares Syncthing's
//! internal expansion strings; its meaning is checked on paths instead),
//! and TestBadPatterns, which Syncthing itself skips (its "#include
//! .stignore" case is checked in ignore::includes).

use backer_fs::ignore::Match;

use super::ignore::{check, parse, parse_with};

#[test]
fn test_ignore_with_includes() {
    let files = [
        ("excludes", "dir2/dfile\n#include further-excludes\n"),
        ("further-excludes", "dir3\n"),
    ];
    let text = "#include excludes\nbfile\ndir1/cfile\n**/efile\n/ffile\nlost+found\n";
    let pats = parse_with(text, &files).unwrap();
    check(
        &pats,
        &[
            ("afile", false),
            ("bfile", true),
            ("cfile", false),
            ("dfile", false),
            ("efile", true),
            ("ffile", true),
            ("dir1", false),
            ("dir1/cfile", true),
            ("dir1/dfile", false),
            ("dir1/efile", true),
            ("dir1/ffile", false),
            ("dir2", false),
            ("dir2/cfile", false),
            ("dir2/dfile", true),
            ("dir2/efile", true),
            ("dir2/ffile", false),
            ("dir3", true),
            ("dir3/afile", true),
            ("lost+found", true),
        ],
    );
}

#[test]
fn test_excludes() {
    let pats = parse("\n\t!iex2\n\t!ign1/ex\n\tign1\n\ti*2\n\t!ign2\n\t");
    check(
        &pats,
        &[
            ("ign1", true),
            ("ign2", true),
            ("ibla2", true),
            ("iex2", false),
            ("ign1/ign", true),
            ("ign1/ex", false),
            ("ign1/iex2", false),
            ("iex2/ign", false),
            ("foo/bar/ign1", true),
            ("foo/bar/ign2", true),
            ("foo/bar/iex2", false),
        ],
    );
}

#[test]
fn test_flag_order() {
    let pats = parse(
        "(?i)(?d)!ign1\n(?d)(?i)!ign2\n(?i)!(?d)ign3\n(?d)!(?i)ign4\n!(?i)(?d)ign5\n\
         !(?d)(?i)ign6\n!!(?i)(?d)ign7\n(?i)(?i)(?d)ign8\n(?i)(?d)(?d)!ign9\n(?d)(?d)!ign10\n",
    );
    for i in 1..7 {
        assert_eq!(pats.matches(format!("ign{i}")), Match::Included, "ign{i}");
    }
    for i in 7..10 {
        let m = pats.matches(format!("ign{i}"));
        assert!(
            !matches!(
                m,
                Match::Ignored {
                    deletable: true,
                    ..
                }
            ),
            "ign{i}"
        );
    }
    // The second (?d) is part of the pattern, its `?` a wildcard.
    assert!(pats.matches("(?d)!ign10").is_ignored());
}

#[test]
fn test_deletables() {
    let pats = parse(
        "(?d)ign1\n(?d)(?i)ign2\n(?i)(?d)ign3\n!(?d)ign4\n!ign5\n!(?i)(?d)ign6\nign7\n(?i)ign8\n",
    );
    for (path, ignored, deletable) in [
        ("ign1", true, true),
        ("ign2", true, true),
        ("ign3", true, true),
        ("ign4", false, false),
        ("ign5", false, false),
        ("ign6", false, false),
        ("ign7", true, false),
        ("ign8", true, false),
    ] {
        let m = pats.matches(path);
        assert_eq!(m.is_ignored(), ignored, "{path}");
        assert_eq!(
            matches!(
                m,
                Match::Ignored {
                    deletable: true,
                    ..
                }
            ),
            deletable,
            "{path}"
        );
    }
}

#[test]
fn test_case_sensitivity() {
    check(
        &parse("test"),
        &[
            ("test", true),
            ("foo", false),
            ("TEST", false),
            ("Test", false),
            ("tESt", false),
        ],
    );
}

#[test]
fn test_comments_and_blank_lines() {
    let pats = parse(
        "\n\t// foo\n\t//bar\n\n\t//!baz\n\t//#dex\n\n\t//                        ips\n\n\n\t",
    );
    assert!(pats.is_empty());
}

#[test]
fn test_negated_globstar_only() {
    // Must not panic on an empty pattern component.
    let pats = parse("!**/\n");
    assert_eq!(pats.matches("foo"), Match::Included);
}

#[test]
fn test_commas() {
    let pats = parse("\n\tfoo,bar.txt\n\t{baz,quux}.txt\n\t");
    check(
        &pats,
        &[
            ("foo.txt", false),
            ("bar.txt", false),
            ("foo,bar.txt", true),
            ("baz.txt", true),
            ("quux.txt", true),
            ("baz,quux.txt", false),
        ],
    );
}

#[test]
fn test_issue3164_meaning() {
    // Syncthing expands these to `*.part`, `**/*.part`, `*.part/**`, … ;
    // check what those expansions match.
    let pats = parse("(?d)(?i)*.part\n(?d)(?i)/foo\n(?d)(?i)**/bar\n");
    let deletable = |p: &str| {
        matches!(
            pats.matches(p),
            Match::Ignored {
                deletable: true,
                ..
            }
        )
    };
    for p in [
        "a.PART", "x/a.part", "a.part/y", "FOO", "foo/x", "bar", "x/BAR", "x/bar/y",
    ] {
        assert!(deletable(p), "{p}");
    }
    assert!(!pats.matches("x/foo").is_ignored());
}

#[test]
fn test_issue3174() {
    check(&parse("*ä*"), &[("åäö", true), ("åö", false)]);
}

#[test]
fn test_issue3639() {
    check(&parse("foo/"), &[("foo/bar", true), ("foo", false)]);
}

#[test]
fn test_issue3674() {
    check(
        &parse("a*b\na**c\n"),
        &[
            ("ab", true),
            ("asdfb", true),
            ("ac", true),
            ("asdfc", true),
            ("as/db", false),
            ("as/dc", true),
        ],
    );
}

#[test]
fn test_gobwas_glob_issue18() {
    check(
        &parse("a?b\nbb?\n"),
        &[
            ("ab", false),
            ("acb", true),
            ("asdb", false),
            ("bb", false),
            ("bba", true),
            ("bbaa", false),
        ],
    );
}

#[test]
fn test_root() {
    check(
        &parse("!/a\n/*\n"),
        &[("", false), ("a", false), ("b", true)],
    );
}

#[test]
fn test_duplicate_lines() {
    let with = parse("!/a\n/*\n!/a\n");
    let without = parse("!/a\n/*\n");
    assert_eq!(with.lines(), without.lines());
    assert_eq!(with, without);
}

#[test]
fn test_issue4680() {
    check(
        &parse("#snapshot\n"),
        &[("#snapshot", true), ("#snapshot/foo", true)],
    );
}

#[test]
fn test_issue4901() {
    let text = "\n#include unicorn-lazor-death\npuppy\n";
    let err = parse_with(text, &[]).unwrap_err();
    assert_eq!(err.line, 2);
    let pats = parse_with(text, &[("unicorn-lazor-death", " ")]).unwrap();
    check(&pats, &[("puppy", true)]);
}

#[test]
fn test_issue5009() {
    assert!(parse("ign1\ni*2\n").skip_dir("ign2"));
    assert!(!parse("!iex2\n!ign1/ex\nign1\ni*2\n!ign2\n").skip_dir("ign2"));
}

#[test]
fn test_special_chars() {
    let pats = parse(
        "(?i)/#recycle\n(?i)/#nosync\n(?i)/$Recycle.bin\n(?i)/$RECYCLE.BIN\n(?i)/System Volume Information",
    );
    check(
        &pats,
        &[
            ("#nosync", true),
            ("$RECYCLE.BIN", true),
            ("$RECYCLE.BIN/S-1-5-18/desktop.ini", true),
        ],
    );
}

#[test]
fn test_intl_wildcards() {
    let pats = parse("1000春\n200?春\n300[0-9]春\n400[0-9]?");
    check(
        &pats,
        &[
            ("1000春", true),
            ("2002春", true),
            ("3003春", true),
            ("4004春", true),
        ],
    );
}

#[test]
fn test_empty_patterns() {
    for bad in ["!", "(?d)", "(?i)"] {
        assert!(parse_with(bad, &[]).is_err(), "{bad}");
    }
}

/// `backslashTests` (the rows for a `/` separator): (pattern, path, match).
const BACKSLASH: &[(&str, &str, bool)] = &[
    ("a", "a", true),
    ("a*", "a", true),
    ("a*b", "ab", true),
    ("*a", "a", true),
    ("*a*", "a", true),
    ("a?", "ab", true),
    ("a?b", "acb", true),
    ("?a", "ba", true),
    ("?a?", "bac", true),
    ("a[bc]", "ab", true),
    ("a[bc]d", "abd", true),
    ("[ab]c", "ac", true),
    ("[ab]c[de]", "acd", true),
    ("a{b,c}", "ab", true),
    ("a{b,c}d", "abd", true),
    ("{a,b}c", "ac", true),
    ("{a,b}c{d,e}", "acd", true),
    ("a/**", "a/b/c", true),
    ("a**c", "a/b/c", true),
    ("**/c", "a/b/c", true),
    ("a**b**c", "a/b/c", true),
    ("**/c/**", "a/b/c/d/e", true),
    ("a]b", "a]b", true),
    ("a}b", "a}b", true),
    ("a\\*", "a*", true),
    ("a\\*b", "a*b", true),
    ("\\*a", "*a", true),
    ("\\*a\\*", "*a*", true),
    ("a\\?", "a?", true),
    ("a\\?b", "a?b", true),
    ("\\?a", "?a", true),
    ("\\?a\\?", "?a?", true),
    ("a\\[bc\\]", "a[bc]", true),
    ("a\\[bc\\]d", "a[bc]d", true),
    ("\\[ab\\]c", "[ab]c", true),
    ("\\[ab\\]c\\[de\\]", "[ab]c[de]", true),
    ("a\\{b,c\\}", "a{b,c}", true),
    ("a\\{b,c\\}d", "a{b,c}d", true),
    ("\\{a,b\\}c", "{a,b}c", true),
    ("\\{a,b\\}c\\{d,e\\}", "{a,b}c{d,e}", true),
    ("a/\\*\\*", "a/**", true),
    ("a\\*\\*c", "a**c", true),
    ("\\*\\*/c", "**/c", true),
    ("a\\*\\*b\\*\\*c", "a**b**c", true),
    ("\\*\\*/c/\\*\\*", "**/c/**", true),
    ("\\a", "a", true),
    ("\\a\\b", "ab", true),
    ("a\\r\\n", "arn", true),
    ("\\a\\r\\n", "arn", true),
    ("\\a\\r\\n", "/a/r/n", false),
];

#[test]
fn test_escape_backslash() {
    for (pattern, path, want) in BACKSLASH {
        assert_eq!(
            parse(pattern).matches(path).is_ignored(),
            *want,
            "{pattern} on {path}"
        );
    }
}

/// `pipeTests`, with `|` standing for the escape character.
const PIPE: &[(&str, &str, bool)] = &[
    ("a|*", "a*", true),
    ("a|*b", "a*b", true),
    ("|*a", "*a", true),
    ("|*a|*", "*a*", true),
    ("a|?", "a?", true),
    ("a|?b", "a?b", true),
    ("|?a", "?a", true),
    ("|?a|?", "?a?", true),
    ("a|[bc|]", "a[bc]", true),
    ("a|[bc|]d", "a[bc]d", true),
    ("|[ab|]c", "[ab]c", true),
    ("|[ab|]c|[de|]", "[ab]c[de]", true),
    ("a|{b,c|}", "a{b,c}", true),
    ("a|{b,c|}d", "a{b,c}d", true),
    ("|{a,b|}c", "{a,b}c", true),
    ("|{a,b|}c|{d,e|}", "{a,b}c{d,e}", true),
    ("a/|*|*", "a/**", true),
    ("a|*|*c", "a**c", true),
    ("|*|*/c", "**/c", true),
    ("a|*|*b|*|*c", "a**b**c", true),
    ("|*|*/c/|*|*", "**/c/**", true),
    ("a]b", "a]b", true),
    ("a}b", "a}b", true),
    ("|a", "a", true),
    ("|a|b", "ab", true),
    ("|a|b", "a/b", false),
    ("a|r|n", "arn", true),
    ("a|r|n", "a/r/n", false),
    ("|a|r|n", "arn", true),
    ("|a|r|n", "a/r/n", false),
    ("|a|r|n", "/a/r/n", false),
];

#[test]
fn test_escape_override() {
    // TestEscapeOverridePipe, and TestEscapeOverrideBackslash (the same rows
    // with `#escape=\`).
    for esc in ["|", ">", "\u{241B}", "\\"] {
        for (pattern, path, want) in PIPE {
            let text = format!("#escape={esc}\n{}", pattern.replace('|', esc));
            assert_eq!(
                parse(&text).matches(path).is_ignored(),
                *want,
                "{text:?} on {path}"
            );
        }
    }
}

const ESCAPE_PREFIXES: &[&str] = &[
    "",
    "\n",
    "// comment\n",
    "\n// comment\n",
    "#include escape-excludes\n",
    "// comment\n#include escape-excludes\n",
    "#include escape-excludes\n//comment\n",
    "// comment\n#include escape-excludes\n//comment\n",
];

#[test]
fn test_escape_placement() {
    let files = [("escape-excludes", "dir4\n")];
    // TestEscapeBeforePattern: comments and includes may come first.
    for prefix in ESCAPE_PREFIXES {
        for (pattern, path, want) in PIPE {
            let text = format!("{prefix}#escape=\\\n{}", pattern.replace('|', "\\"));
            let pats = parse_with(&text, &files).unwrap();
            assert_eq!(pats.matches(path).is_ignored(), *want, "{text:?}");
        }
        // TestEscapeAfterPattern: not after a pattern of the same file.
        for before in ["pattern\n", "pattern/\n", "pattern/**\n"] {
            let text = format!("{prefix}{before}#escape=\u{241B}\na");
            assert!(parse_with(&text, &files).is_err(), "{text:?}");
        }
    }
    // TestEscapeEmpty, TestEscapeInvalid, TestEscapeDoubled.
    for bad in [
        "#escape",
        "#escape ",
        "#escape\t",
        "#escape=",
        "#escape= ",
        "#escape=\t",
        "#escapex",
        "#escape=\\\\",
        "#escape=||",
        "#escape=\u{241B}\u{241B}",
        "#escape=xx",
        "#escape=\\\n#escape",
        "#escape=\\\n#escape=",
        "#escape=\\\n#escape=\\",
        "#escape=\\\n#escape=|",
    ] {
        assert!(parse_with(&format!("{bad}\na"), &files).is_err(), "{bad:?}");
    }
}
