//! Crash safety at the store level: a child process writes and fsyncs,
//! and is killed with SIGKILL at a random moment; every fsynced write must
//! be there after, and the store must open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use backer_fs::store::Store;
use backer_fs::vfs::{Vfs, VfsOptions, ROOT};

use crate::util::{random_bytes, write_all, ME};

const CHILD_ENV: &str = "BACKER_CRASH_CHILD_STORE";

/// The child: writes files forever, fsyncing each and printing its name
/// once fsync returned. Also writes unsynced bytes in between.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when started by the parent below
    };
    let store = Arc::new(Store::open(std::path::Path::new(&dir)).unwrap());
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    for i in 0u64.. {
        let name = format!("f{i}");
        let data = random_bytes(10_000 + (i as usize * 7919) % 300_000, i);
        let (_, fh) = vfs
            .names()
            .create(ME, ROOT, name.as_bytes(), 0o644, false)
            .unwrap();
        write_all(&vfs, fh, 0, &data);
        vfs.files().fsync(fh).unwrap();
        println!("synced {name}");
        // Unsynced noise that may or may not survive.
        let (_, fh2) = vfs
            .names()
            .create(ME, ROOT, format!("u{i}").as_bytes(), 0o644, false)
            .unwrap();
        write_all(&vfs, fh2, 0, &data[..5000]);
        vfs.files().release(fh2).unwrap();
        vfs.files().release(fh).unwrap();
    }
}

#[test]
fn fsynced_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::create(&path).unwrap());
    for (round, kill_after) in [3usize, 17, 40].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut synced = Vec::new();
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(name) = line.strip_prefix("synced ") {
                synced.push(name.to_string());
                if synced.len() >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = Arc::new(Store::open(&path).unwrap());
        let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
        for name in &synced {
            let i: u64 = name[1..].parse().unwrap();
            let want = random_bytes(10_000 + (i as usize * 7919) % 300_000, i);
            let a = vfs
                .names()
                .lookup(ROOT, name.as_bytes())
                .unwrap_or_else(|e| panic!("round {round}: {name} lost: {e}"));
            let fh = vfs.files().open(a.ino, false, false).unwrap();
            assert_eq!(
                vfs.files().read(fh, 0, 1 << 20).unwrap(),
                want,
                "round {round}: {name} differs"
            );
            vfs.files().release(fh).unwrap();
        }
        // Everything that survived, synced or not, reads without error.
        for e in vfs.names().readdir(ROOT, 2, usize::MAX).unwrap() {
            let fh = vfs.files().open(e.ino, false, false).unwrap();
            vfs.files().read(fh, 0, 1 << 20).unwrap();
            vfs.files().release(fh).unwrap();
        }
        // The next child starts numbering from 0 again: clear the names.
        for e in vfs.names().readdir(ROOT, 2, usize::MAX).unwrap() {
            vfs.names().unlink(ROOT, &e.name).unwrap();
        }
        vfs.sync().unwrap();
    }
}
