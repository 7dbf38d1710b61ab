//! The hashed lookup in [`Patterns::matches`] against a plain first-match
//! loop over every rule, on random pattern sets and paths.

use proptest::prelude::*;

use super::*;

/// What `matches` must return: the first rule that matches, tried in order.
fn reference(p: &Patterns, path: &[u8]) -> Match {
    if path == IGNORE_FILE.as_bytes() {
        return Match::Ignored {
            deletable: false,
            can_skip_dir: true,
        };
    }
    if path.is_empty() {
        return Match::NoMatch;
    }
    let plain = View::new(path.into());
    let folded = View::new(lowercase(path));
    for (i, rule) in p.rules.iter().enumerate() {
        let view = if rule.fold_case { &folded } else { &plain };
        if view.matches(rule) {
            return if rule.include {
                Match::Included
            } else {
                Match::Ignored {
                    deletable: rule.deletable,
                    can_skip_dir: p.skip_ok[i],
                }
            };
        }
    }
    Match::NoMatch
}

const LINES: &[&str] = &[
    "*.o", "x.o", "!x.o", "(?i)X.O", "a", "!a", "/a", "a/", "*a*", "a?", "*.O", "b/a", "(?d)b",
    "!*.o", "{a,x.o}", "**/b/**", "(?i)!A", "c.o.o", "*.o.o", "[ab]", "/b/x.o", "!/b",
];
const NAMES: &[&str] = &["a", "x.o", "b", "X.O", "c.o.o", "ab", ".o", "A"];

proptest! {
    #[test]
    fn hashed_lookup_keeps_first_match(
        lines in proptest::collection::vec(0..LINES.len(), 0..8),
        paths in proptest::collection::vec(proptest::collection::vec(0..NAMES.len(), 1..5), 1..20),
    ) {
        let text: String = lines.iter().map(|&i| format!("{}\n", LINES[i])).collect();
        let p = Patterns::parse(text.as_bytes(), IGNORE_FILE, &|_| Ok(Vec::new()));
        prop_assert!(p.is_ok());
        let Ok(p) = p else { return Ok(()) };
        for path in paths {
            let path: Vec<&str> = path.iter().map(|&i| NAMES[i]).collect();
            let path = path.join("/");
            prop_assert_eq!(p.matches(&path), reference(&p, path.as_bytes()), "{:?} on {}", p.lines(), path);
        }
    }
}
