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
fn export_writes_a_deep_tree_on_a_small_stack() {
    // Deep, but within PATH_MAX once under the export folder: export
    // writes by full path.
    const DEPTH: u32 = 1800;
    let t = TestFs::new();
    deep_tree(&t, DEPTH);
    let store = t.vfs().store();
    let out = t.dir.path().join("out");
    let done = on_small_stack(|| history::export(&store, &out, None).unwrap());
    assert_eq!((done.dirs, done.files), (u64::from(DEPTH), 1));
    let bottom = ["d"; DEPTH as usize].join("/") + "/f";
    assert_eq!(std::fs::read(out.join(bottom)).unwrap(), b"at the bottom");
}
