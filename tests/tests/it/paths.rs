//! `log` and `restore` take paths as the shell means them inside the
//! mount (absolute, or relative to a working folder in it), and from the
//! folder's root elsewhere.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use backer_tests::Run;
use serde_json::Value;

use crate::mount_util::{poll_until, Mount};

/// Writes `data` to `path` and fsyncs it.
fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// `backer log ARG --json` run in `cwd`, parsed.
fn log_in(m: &Mount, cwd: &Path, arg: &str) -> Vec<Value> {
    let run = Run::of(
        m.store()
            .backer()
            .args(["log", arg, "--json"])
            .current_dir(cwd)
            .stdin(Stdio::null()),
    );
    run.assert_success();
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("log --json");
    v.as_array().expect("an array").clone()
}

fn commits(log: &[Value]) -> Vec<String> {
    log.iter()
        .map(|c| c["commit"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn log_and_restore_take_paths_inside_the_mount() {
    let m = Mount::new();
    fs::create_dir(m.path("docs")).unwrap();
    write_synced(&m.path("docs/notes.txt"), b"first");
    write_synced(&m.path("docs/other.txt"), b"other");
    let outside = m.root();
    // Written after notes.txt: once it is committed, both are.
    poll_until("the commit of docs/other.txt", || {
        !log_in(&m, &outside, "docs/other.txt").is_empty()
    });
    let want = commits(&log_in(&m, &outside, "docs/notes.txt"));
    assert!(!want.is_empty());
    let abs = m.path("docs/notes.txt");
    assert_eq!(commits(&log_in(&m, &outside, abs.to_str().unwrap())), want);
    let docs = m.path("docs");
    assert_eq!(commits(&log_in(&m, &docs, "notes.txt")), want);
    assert_eq!(commits(&log_in(&m, &docs, "./../docs/notes.txt")), want);
    // "." in a folder of the mount is that folder.
    assert_eq!(
        commits(&log_in(&m, &docs, ".")),
        commits(&log_in(&m, &outside, "docs"))
    );
    // Outside the mount, paths are still from the folder's root.
    assert_eq!(commits(&log_in(&m, &outside, "docs/notes.txt")), want);
    // Any other absolute path is from the root, as it always was.
    assert_eq!(commits(&log_in(&m, &outside, "/docs/notes.txt")), want);

    // restore, by a relative path from inside the mount.
    let out = m.root().join("out");
    let run = Run::of(
        m.store()
            .backer()
            .args(["restore", "notes.txt", "--at", &want[0], "--to"])
            .arg(&out)
            .current_dir(&docs)
            .stdin(Stdio::null()),
    );
    run.assert_success();
    assert!(run.stdout.contains("1 file,"), "{run:#?}");
    assert_eq!(fs::read(out.join("notes.txt")).unwrap(), b"first");
    write_synced(&m.path("docs/notes.txt"), b"second");
    let run = Run::of(
        m.store()
            .backer()
            .args(["restore", abs.to_str().unwrap(), "--at", &want[0]])
            .stdin(Stdio::null()),
    );
    run.assert_success();
    poll_until("the restored bytes in the mount", || {
        fs::read(&abs).is_ok_and(|b| b == b"first")
    });
}
