//! What the vfs itself costs per file for the requests `tar x` sends
//! through FUSE for each one (LOOKUP, CREATE, the kernel's GETXATTR of
//! security.capability, WRITE, SETATTR for owner, mode and times, the
//! GETATTR of the parent that `default_permissions` needs, FLUSH,
//! RELEASE), in-process with no kernel in between, and the committer
//! running as in a node. Prints µs per file and per request.
//!
//! Run: `cargo run --release -p backer-fs --example opcost [FILES] [--no-committer]`
//! (a development tool: compare its per-file total with the untar row of
//! `bench/mount.sh` to see how much of a mount's time is the vfs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backer_fs::store::Store;
use backer_fs::vfs::{Committer, Ctx, SetAttr, SetTime, Vfs, VfsOptions, ROOT};

const OPS: [&str; 10] = [
    "lookup", "create", "getxattr", "write", "chown", "chmod", "utimens", "getattr", "flush",
    "release",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let committer = args.next().as_deref() != Some("--no-committer");
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::create(&tmp.path().join("store")).expect("store"));
    let vfs = Arc::new(Vfs::new(store, VfsOptions::default()).expect("vfs"));
    let _committer = committer.then(|| {
        Committer::spawn(
            vfs.clone(),
            Duration::from_millis(20),
            Duration::from_secs(1),
            |_| {},
        )
        .expect("committer")
    });
    let me = Ctx { uid: 0, gid: 0 };
    let dir = vfs.names().mkdir(me, ROOT, b"d", 0o755).expect("mkdir").ino;
    // Distinct bytes per file (as real files are): nothing dedups.
    let mut data = vec![0u8; 4096];
    let mut spent = [Duration::ZERO; OPS.len()];
    let all = Instant::now();
    for i in 0..n {
        let name = format!("f{i:05}");
        let name = name.as_bytes();
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut t = Instant::now();
        let mut lap = |k: usize| {
            spent[k] += t.elapsed();
            t = Instant::now();
        };
        let _ = vfs.names().lookup(dir, name);
        lap(0);
        let (a, fh) = vfs
            .names()
            .create(me, dir, name, 0o644, false)
            .expect("create");
        lap(1);
        let _ = vfs.names().getxattr(a.ino, b"security.capability", 0);
        lap(2);
        vfs.files().write(fh, 0, &data).expect("write");
        lap(3);
        let owner = SetAttr {
            uid: Some(0),
            gid: Some(0),
            ..Default::default()
        };
        vfs.names().setattr(a.ino, &owner).expect("chown");
        lap(4);
        let mode = SetAttr {
            mode: Some(0o644),
            ..Default::default()
        };
        vfs.names().setattr(a.ino, &mode).expect("chmod");
        lap(5);
        let times = SetAttr {
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..Default::default()
        };
        vfs.names().setattr(a.ino, &times).expect("utimens");
        lap(6);
        vfs.names().getattr(dir).expect("getattr");
        lap(7);
        vfs.files().flush(fh).expect("flush");
        lap(8);
        vfs.files().release(fh).expect("release");
        lap(9);
    }
    let total = all.elapsed().as_secs_f64();
    println!("{n} files: {:.1} µs per file", total * 1e6 / n as f64);
    for (op, d) in OPS.iter().zip(spent) {
        println!("  {op:<9} {:6.1} µs", d.as_secs_f64() * 1e6 / n as f64);
    }
}
