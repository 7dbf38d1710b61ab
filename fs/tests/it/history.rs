//! The history API without a mount: what the log calls each change, and
//! trees as deep as the vfs allows (2,048 folders): log, restore and
//! export walk them from heap stacks, so they run on threads with small
//! stacks (a control-socket thread has the default 2 MiB or less). A walk
//! that recursed per folder would overflow and abort the whole test
//! binary.

use backer_fs::history::{self, Change, ChangeKind, Outcome, RestoreRequest};
use backer_fs::vfs::{RenameMode, MAX_DEPTH, ROOT};
use backer_fs::Error;

use crate::util::{TestFs, ME};

/// The stack the walks get: far less than a recursion over 2,048 levels
/// takes.
const SMALL_STACK: usize = 256 << 10;

/// Runs `f` on a thread with [`SMALL_STACK`].
fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(scope, f)
            .expect("spawn a thread")
            .join()
            .expect("the walk panicked")
    })
}

/// The changes of a log entry as (change, path, from).
fn changes(list: &[Change]) -> Vec<(ChangeKind, &str, Option<&str>)> {
    list.iter()
        .map(|c| (c.change, c.path.as_str(), c.from.as_deref()))
        .collect()
}

#[test]
fn the_log_names_each_kind_of_change() {
    use ChangeKind::*;
    let t = TestFs::new();
    let v = t.vfs();
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    t.put(d, "b", b"moves");
    t.put(ROOT, "a.txt", b"one");
    v.commit().unwrap();
    t.put(ROOT, "a.txt", b"two");
    v.names()
        .rename(d, b"b", d, b"c", RenameMode::Replace)
        .unwrap();
    t.put(
        ROOT,
        "a.sync-conflict-20261126-043000-ABCDEFG.txt",
        b"other",
    );
    v.commit().unwrap();
    v.names().unlink(ROOT, b"a.txt").unwrap();
    v.commit().unwrap();

    let log = history::log(&v.store(), None).unwrap();
    let seqs: Vec<u64> = log.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [3, 2, 1], "newest first");
    assert_eq!(changes(&log[0].changes), [(Deleted, "a.txt", None)]);
    assert_eq!(
        changes(&log[1].changes),
        [
            (
                Conflict,
                "a.sync-conflict-20261126-043000-ABCDEFG.txt",
                None
            ),
            (Modified, "a.txt", None),
            (Renamed, "d/c", Some("d/b")),
        ]
    );
    assert_eq!(
        changes(&log[2].changes),
        [
            (Added, "a.txt", None),
            (Added, "d", None),
            (Added, "d/b", None)
        ]
    );

    // A path lists only the commits that touched it.
    let only = history::log(&v.store(), Some("/d/b")).unwrap();
    assert_eq!(only.len(), 2);
    assert_eq!(changes(&only[0].changes), [(Deleted, "d/b", None)]);
    assert!(matches!(
        history::log(&v.store(), Some("nope")),
        Err(Error::Request(_))
    ));
}

/// Folders `d/d/d/...` `depth` deep in the root, a file `f` at the bottom;
/// committed.
fn deep_tree(t: &TestFs, depth: u32) {
    let v = t.vfs();
    let mut parent = ROOT;
    for _ in 0..depth {
        parent = v.names().mkdir(ME, parent, b"d", 0o755).unwrap().ino;
    }
    t.put(parent, "f", b"at the bottom");
    v.commit().unwrap();
}

#[test]
fn log_and_restore_walk_the_deepest_tree_on_a_small_stack() {
    let t = TestFs::new();
    deep_tree(&t, MAX_DEPTH);
    let v = t.vfs();
    let store = v.store();
    let first = history::head(&store).unwrap().unwrap();
    let first_id = history::commit_id(&first).unwrap();
    v.names()
        .rename(ROOT, b"d", ROOT, b"moved", RenameMode::Replace)
        .unwrap();
    v.commit().unwrap();

    let log = on_small_stack(|| history::log(&store, None).unwrap());
    assert_eq!(log.len(), 2);
    let added = &log[1].changes;
    assert_eq!(
        added.len(),
        MAX_DEPTH as usize + 1,
        "every folder and the file"
    );
    assert!(added.iter().all(|c| c.change == ChangeKind::Added));
    let bottom = &added[MAX_DEPTH as usize];
    assert_eq!(bottom.path.len(), 2 * MAX_DEPTH as usize + 1);
    assert!(bottom.path.ends_with("d/f"), "{}", bottom.path);

    // The whole chain comes back under its old name.
    let req = RestoreRequest {
        path: "d".into(),
        at: first_id,
        to: None,
    };
    let restored = on_small_stack(|| history::restore(v, None, &req).unwrap());
    assert!(restored.dir);
    assert!(matches!(
        restored.outcome,
        Outcome::Installed {
            new_commit: Some(_)
        }
    ));
    let bottom = ["d"; MAX_DEPTH as usize].join("/") + "/f";
    assert_eq!(t.get(t.path(&bottom).unwrap()), b"at the bottom");
    assert!(t.path("moved").is_ok(), "the moved chain stays");
}

#[test]
fn export_writes_the_deepest_tree_on_a_small_stack() {
    // Its deepest path is longer than PATH_MAX: export writes each name
    // relative to its open folder.
    let t = TestFs::new();
    deep_tree(&t, MAX_DEPTH);
    let store = t.vfs().store();
    let out = t.dir.path().join("out");
    let done = on_small_stack(|| {
        history::export(&store, &out, history::WriteOptions::default(), None).unwrap()
    });
    assert_eq!((done.dirs, done.files), (u64::from(MAX_DEPTH), 1));
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    // Read it back one level at a time, as it was written.
    let mut dir = std::fs::File::open(&out).unwrap();
    for _ in 0..MAX_DEPTH {
        dir = openat(&dir, "d");
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut openat(&dir, "f"), &mut data).unwrap();
    assert_eq!(data, b"at the bottom");
}

/// Opens `name` in the open folder `dir`.
fn openat(dir: &std::fs::File, name: &str) -> std::fs::File {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: an open folder and a NUL-terminated name; the fd returned
    // is owned by the File.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) };
    assert!(
        fd >= 0,
        "openat {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just opened and nothing else owns it.
    unsafe { std::fs::File::from_raw_fd(fd) }
}
