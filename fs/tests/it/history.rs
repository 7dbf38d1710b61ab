//! The history API over trees as deep as the vfs allows (2,048 folders):
//! log, restore and export walk them from heap stacks, so they run on
//! threads with small stacks (a control-socket thread has the default
//! 2 MiB or less). A walk that recursed per folder would overflow and
//! abort the whole test binary.

use backer_fs::history::{self, ChangeKind, Outcome, RestoreRequest};
use backer_fs::vfs::{RenameMode, MAX_DEPTH, ROOT};

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

/// Folders `d/d/d/...` `depth` deep in the root, a file `f` at the bottom;
/// committed.
fn deep_tree(t: &TestFs, depth: u32) {
    let v = t.vfs();
    let mut parent = ROOT;
    for _ in 0..depth {
        parent = v.mkdir(ME, parent, b"d", 0o755).unwrap().ino;
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
    v.rename(ROOT, b"d", ROOT, b"moved", RenameMode::Replace)
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
    let done = on_small_stack(|| history::export(&store, &out, None).unwrap());
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
