//! `.backerignore` in the vfs without a mount: the commit keeps ignored
//! names out of the tree, a pattern file that does not parse keeps the
//! last good set (across a reopen), and with no good set ever seen new
//! names are held back.

use backer_fs::tree::dir;
use backer_fs::vfs::ROOT;

use crate::util::TestFs;

/// The names in the committed root directory.
fn committed(t: &TestFs) -> Vec<String> {
    t.vfs().commit().unwrap();
    let store = t.vfs().store();
    let root = t.vfs().root_hash().unwrap();
    dir::entries(&*store, root)
        .unwrap()
        .into_iter()
        .filter(|e| !e.deleted)
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

#[test]
fn held_back_until_the_pattern_file_parses() {
    let t = TestFs::new();
    t.put(ROOT, ".backerignore", b"// keep\n!\n");
    t.put(ROOT, "a.txt", b"a");
    t.put(ROOT, "b.tmp", b"b");
    assert_eq!(committed(&t), Vec::<String>::new());
    let st = t.vfs().ignore_status().unwrap();
    assert!(st.held_back, "{st:?}");
    assert!(
        st.error
            .as_deref()
            .unwrap_or("")
            .starts_with(".backerignore:2:"),
        "{st:?}"
    );

    t.put(ROOT, ".backerignore", b"*.tmp\n");
    assert_eq!(committed(&t), vec!["a.txt"]);
    let st = t.vfs().ignore_status().unwrap();
    assert_eq!(
        (st.error, st.held_back, st.local, st.remote),
        (None, false, 1, 0)
    );
}

#[test]
fn a_broken_pattern_file_keeps_the_last_good_set_across_a_reopen() {
    let mut t = TestFs::new();
    t.put(ROOT, ".backerignore", b"*.tmp\n");
    t.put(ROOT, "a.tmp", b"a");
    assert_eq!(committed(&t), Vec::<String>::new());
    t.put(ROOT, ".backerignore", b"(?i)\n");
    t.put(ROOT, "b.tmp", b"b");
    assert_eq!(committed(&t), Vec::<String>::new());
    t.reopen();
    t.put(ROOT, "c.tmp", b"c");
    t.put(ROOT, "d.txt", b"d");
    assert_eq!(committed(&t), vec!["d.txt"]);
    let st = t.vfs().ignore_status().unwrap();
    assert!(!st.held_back && st.error.is_some(), "{st:?}");
    assert_eq!(st.local, 3);

    // Fixed and widened: what it no longer ignores joins the tree.
    t.put(ROOT, ".backerignore", b"a.tmp\n");
    assert_eq!(committed(&t), vec!["b.tmp", "c.tmp", "d.txt"]);
}

#[test]
fn an_include_change_reloads_and_a_missing_include_is_an_error() {
    let t = TestFs::new();
    let sub = t
        .vfs()
        .names()
        .mkdir(Default::default(), ROOT, b"shared", 0o755)
        .unwrap()
        .ino;
    t.put(sub, "ignores.txt", b"*.log\n");
    t.put(ROOT, ".backerignore", b"#include shared/ignores.txt\n");
    t.put(ROOT, "x.log", b"x");
    assert_eq!(committed(&t), vec!["shared"]);
    t.put(sub, "ignores.txt", b"*.other\n");
    assert_eq!(committed(&t), vec!["shared", "x.log"]);
    t.put(ROOT, ".backerignore", b"#include shared/nothere.txt\n");
    t.put(ROOT, "y.other", b"y");
    assert_eq!(committed(&t), vec!["shared", "x.log"]);
    let st = t.vfs().ignore_status().unwrap();
    assert!(
        st.error
            .as_deref()
            .unwrap_or("")
            .starts_with(".backerignore:1:"),
        "{st:?}"
    );
}
