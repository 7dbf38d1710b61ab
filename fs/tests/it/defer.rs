//! The background committer leaves out files open and being written: no
//! half-written version (an O_TRUNC open before its writes) becomes a root
//! that peers copy and history keeps; a quiet, closed or synced file is
//! committed; a file written forever still is, every `max`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backer_fs::tree::{dir, Kind};
use backer_fs::vfs::{Defer, Vfs, ROOT};

use crate::util::{vfs_with_clock, write_all, ME};

const T0: i64 = 1_700_000_000_000;

/// The committed size of `name` in the root (None: not committed).
fn committed_size(v: &Vfs, name: &[u8]) -> Option<u64> {
    let store = v.store();
    let root = v.root_hash().unwrap();
    dir::get(&*store, root, name)
        .unwrap()
        .filter(|e| !e.deleted && e.kind == Kind::File)
        .map(|e| e.size)
}

fn defer() -> Defer {
    Defer {
        quiet: Duration::from_secs(2),
        max: Duration::from_secs(10),
    }
}

#[test]
fn a_file_being_rewritten_is_committed_once_quiet_not_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let at = |ms: i64| clock.store(T0 + ms, Ordering::SeqCst);
    let v = vfs_with_clock(dir.path(), clock.clone());
    // A new file is not committed empty while it is being written.
    let (attr, fh) = v.names().create(ME, ROOT, b"doc", 0o644, false).unwrap();
    assert!(v.commit_background(defer()).unwrap().1);
    assert_eq!(committed_size(&v, b"doc"), None);
    write_all(&v, fh, 0, &[7u8; 5000]);
    let changes = v.change_count();
    v.files().release(fh).unwrap();
    assert!(
        v.change_count() > changes,
        "a release must wake the committer"
    );
    let (info, left_out) = v.commit_background(defer()).unwrap();
    assert!(info.is_some() && !left_out);
    assert_eq!(committed_size(&v, b"doc"), Some(5000));

    // Rewritten in place, as `cmd > doc` does: O_TRUNC, the shell closes
    // its copy of the descriptor (a flush with nothing written), then the
    // writes. Not committed meanwhile.
    at(100);
    let fh = v.files().open(attr.ino, true, false).unwrap();
    v.files().flush(fh).unwrap();
    at(150);
    let (info, left_out) = v.commit_background(defer()).unwrap();
    assert!(
        info.is_none() && left_out,
        "the truncated file was committed"
    );
    write_all(&v, fh, 0, &[9u8; 3000]);
    at(1_500);
    assert!(v.commit_background(defer()).unwrap().1);
    assert_eq!(committed_size(&v, b"doc"), Some(5000));

    // Quiet for 2 s though still open: folded and committed whole.
    at(3_600);
    let (info, left_out) = v.commit_background(defer()).unwrap();
    assert!(info.is_some() && !left_out);
    assert_eq!(committed_size(&v, b"doc"), Some(3000));
    v.files().release(fh).unwrap();

    // A close (flush) says the bytes are whole: committed at once, though
    // another handle keeps the file open.
    let other = v.files().open(attr.ino, false, false).unwrap();
    let fh = v.files().open(attr.ino, true, false).unwrap();
    at(4_000);
    write_all(&v, fh, 0, &[1u8; 700]);
    v.files().flush(fh).unwrap();
    v.files().release(fh).unwrap();
    let (info, left_out) = v.commit_background(defer()).unwrap();
    assert!(info.is_some() && !left_out);
    assert_eq!(committed_size(&v, b"doc"), Some(700));
    v.files().release(other).unwrap();

    // A plain commit (fsync's, a merge's) never leaves anything out.
    let fh = v.files().open(attr.ino, true, false).unwrap();
    write_all(&v, fh, 0, b"short");
    v.files().fsync(fh).unwrap();
    assert_eq!(committed_size(&v, b"doc"), Some(5));
    v.files().release(fh).unwrap();
}

#[test]
fn a_file_written_forever_is_committed_every_max() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let v = vfs_with_clock(dir.path(), clock.clone());
    let (_, fh) = v.names().create(ME, ROOT, b"log", 0o644, false).unwrap();
    let mut size = 0u64;
    let mut commits_with_bytes = 0;
    for second in 0..25i64 {
        clock.store(T0 + second * 1000, Ordering::SeqCst);
        write_all(&v, fh, size, &[b'x'; 100]);
        size += 100;
        let (info, _) = v.commit_background(defer()).unwrap();
        if info.is_some() && committed_size(&v, b"log").unwrap_or(0) > 0 {
            commits_with_bytes += 1;
        }
    }
    // Written every second for 25 s: never quiet, so committed by `max`
    // alone: at 10 s and 20 s.
    assert_eq!(commits_with_bytes, 2);
    assert!(committed_size(&v, b"log").unwrap() >= 1000);
    v.files().release(fh).unwrap();
}
