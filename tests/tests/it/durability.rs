//! Durability across `kill -9` of the node: fsync'ed bytes survive; what
//! was not fsync'ed may be lost, but the store mounts again and every file
//! reads without error; inodes unlinked while open are reclaimed.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use backer_fs::store::{Space, Store};

use crate::mount_util::{
    assert_dead_mount, assert_errno, assert_same_bytes, poll_until, walk, Mount,
};
use crate::posix::random_bytes;
use crate::roundtrip::read_uncached;

/// Kills the node with SIGKILL, checks the mount point is a dead mount
/// (ENOTCONN), detaches it with `fusermount3 -u -z` and mounts again.
fn crash_and_remount(m: &mut Mount) {
    m.kill9();
    assert_dead_mount(m.dir());
    m.lazy_unmount();
    m.mount();
}

#[test]
fn fsynced_bytes_survive_kill_9() {
    let mut m = Mount::new();
    fs::create_dir_all(m.path("a/b")).expect("mkdir");
    // A new 4 MiB file.
    let big = random_bytes(4 << 20);
    let mut f = fs::File::create(m.path("a/b/new.bin")).expect("create");
    f.write_all(&big).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    // A small file, fsync'ed through fdatasync.
    let mut f = fs::File::create(m.path("small.txt")).expect("create");
    f.write_all(b"small and durable\n").expect("write");
    f.sync_data().expect("fdatasync");
    // An existing file overwritten in the middle and extended, then fsync'ed.
    let mut old = random_bytes(1 << 20);
    fs::write(m.path("edited.bin"), &old).expect("write");
    let g = OpenOptions::new()
        .write(true)
        .open(m.path("edited.bin"))
        .expect("open");
    let patch = random_bytes(100_000);
    g.write_at(&patch, 300_000).expect("pwrite");
    g.write_at(b"appended", old.len() as u64)
        .expect("pwrite at the end");
    g.sync_all().expect("fsync");
    old[300_000..400_000].copy_from_slice(&patch);
    old.extend_from_slice(b"appended");
    // The descriptors are still open when the node dies.
    crash_and_remount(&mut m);
    drop((f, g));
    assert_same_bytes(
        "new.bin after kill -9",
        &read_uncached(&m.path("a/b/new.bin")),
        &big,
    );
    assert_eq!(read_uncached(&m.path("small.txt")), b"small and durable\n");
    assert_same_bytes(
        "edited.bin after kill -9",
        &read_uncached(&m.path("edited.bin")),
        &old,
    );
    // And the store still works: write, clean remount, read.
    fs::write(m.path("after.txt"), b"after the crash").expect("write after the crash");
    m.remount();
    assert_eq!(
        fs::read(m.path("after.txt")).expect("read"),
        b"after the crash"
    );
    assert_same_bytes(
        "new.bin after a clean remount",
        &read_uncached(&m.path("a/b/new.bin")),
        &big,
    );
}

#[test]
fn unsynced_writes_leave_a_store_that_mounts_and_reads() {
    let mut m = Mount::new();
    // Something durable first: it must survive whatever follows.
    let durable = random_bytes(2 << 20);
    let mut f = fs::File::create(m.path("durable.bin")).expect("create");
    f.write_all(&durable).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    // Then a burst of unsynced work: files, renames, a deletion, overwrites.
    fs::create_dir(m.path("burst")).expect("mkdir");
    for i in 0..100 {
        fs::write(
            m.path(&format!("burst/f{i:03}")),
            random_bytes(10_000 + i * 997),
        )
        .expect("write");
    }
    for i in 0..20 {
        fs::rename(
            m.path(&format!("burst/f{i:03}")),
            m.path(&format!("burst/r{i:03}")),
        )
        .expect("rename");
    }
    fs::remove_file(m.path("burst/f050")).expect("unlink");
    // A writer still writing when the node dies (its errors are expected).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let path = m.path("burst/growing.bin");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let Ok(mut f) = fs::File::create(path) else {
                return 0u64;
            };
            let block = random_bytes(64 << 10);
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) && f.write_all(&block).is_ok() {
                written += block.len() as u64;
            }
            written
        })
    };
    poll_until("the writer to have written 8 MiB", || {
        fs::metadata(m.path("burst/growing.bin")).is_ok_and(|s| s.len() >= 8 << 20)
    });
    m.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    assert_dead_mount(m.dir());
    m.lazy_unmount();
    m.mount();
    assert_same_bytes(
        "fsync'ed before the burst",
        &read_uncached(&m.path("durable.bin")),
        &durable,
    );
    // Every file reads to its size without an error.
    for rel in walk(m.dir()) {
        let path = m.dir().join(&rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", rel.display()));
        if meta.is_file() {
            let mut data = Vec::new();
            fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .unwrap_or_else(|e| panic!("read {} after kill -9: {e}", rel.display()));
            assert_eq!(
                data.len() as u64,
                meta.len(),
                "{}: bytes read vs st_size",
                rel.display()
            );
        }
    }
    // The store takes writes and survives a clean remount. (Not inside
    // burst/: its creation was never fsynced, so it may be gone.)
    fs::write(m.path("after.txt"), b"after").expect("write after the crash");
    m.remount();
    assert_eq!(fs::read(m.path("after.txt")).expect("read"), b"after");
}

/// The store's orphan records (inodes unlinked while open), and whether
/// the inode `ino` still has a record, read from the store directly (the
/// node must not be running).
fn orphans_and_inode(store: &Path, ino: u64) -> (Vec<u64>, bool) {
    let s = Store::open(store).expect("open the store directly");
    let orphans = s
        .kv()
        .scan(Space::Orphans, &[], None, usize::MAX)
        .expect("scan orphans")
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k[..8].try_into().expect("8-byte key")))
        .collect();
    let inode = s
        .kv()
        .get(Space::Inodes, &ino.to_be_bytes())
        .expect("get inode")
        .is_some();
    (orphans, inode)
}

#[test]
fn a_file_unlinked_while_open_is_reclaimed_after_kill_9() {
    let mut m = Mount::new();
    let path = m.path("ghost.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create");
    f.write_all(&random_bytes(4 << 20)).expect("write");
    f.sync_all().expect("fsync");
    let ino = f.metadata().expect("fstat").ino();
    fs::remove_file(&path).expect("unlink");
    // Make the unlink durable the POSIX way: fsync the folder.
    fs::File::open(m.dir())
        .and_then(|d| d.sync_all())
        .expect("fsync of the folder");
    f.sync_all().expect("fsync after the unlink");
    m.kill9();
    drop(f);
    m.lazy_unmount();
    let (orphans, inode) = orphans_and_inode(&m.store().dir(), ino);
    assert!(
        orphans.contains(&ino) && inode,
        "after kill -9 the unlinked-open inode {ino} should be an orphan with a record: \
         orphans {orphans:?}, record {inode}"
    );
    m.mount();
    assert_errno(
        "the unlinked name after the crash",
        fs::metadata(&path),
        libc::ENOENT,
    );
    m.unmount();
    let (orphans, inode) = orphans_and_inode(&m.store().dir(), ino);
    assert_eq!(orphans, Vec::<u64>::new(), "orphans after a mount");
    assert!(
        !inode,
        "inode {ino} still has a record after it was reclaimed"
    );
}
