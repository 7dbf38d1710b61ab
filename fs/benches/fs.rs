//! backer-fs benchmarks, each beside a reference measured in the same run:
//!
//! - chunk + hash throughput vs raw blake3 over the same bytes;
//! - vfs write of a file (1 GiB by default) into the store, fsync
//!   included, vs writing the same bytes to a plain file on the same disk;
//! - small-file creates per second (10,000) vs plain files.
//!
//! Run: `cargo bench -p backer-fs` (BACKER_BENCH_MB=256 for a quicker run,
//! BACKER_BENCH_DIR to choose the disk; default: a temp dir).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use backer_fs::store::Store;
use backer_fs::vfs::{Ctx, Vfs, VfsOptions, ROOT};

fn data(len: usize) -> Vec<u8> {
    // Cheap, incompressible-looking bytes (xorshift), generated once.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let mb: usize = std::env::var("BACKER_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let base = std::env::var("BACKER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(&base).expect("temp dir");
    println!(
        "backer-fs bench: {mb} MiB file, in {}",
        tmp.path().display()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "workload", "backer", "reference", "ratio"
    );

    // 1. Chunk + hash vs raw blake3, 256 MiB in memory.
    let buf = data(256 << 20);
    let t = Instant::now();
    let h = blake3::hash(&buf);
    let raw = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let chunks = backer_fs::chunk::chunks(&buf);
    let cdc = t.elapsed().as_secs_f64();
    std::hint::black_box((h, chunks.len()));
    println!(
        "{:<34} {:>9.0} MB/s {:>7.0} MB/s {:>7.2}x",
        "chunk+hash vs blake3 (256 MiB)",
        mbps(buf.len(), cdc),
        mbps(buf.len(), raw),
        raw / cdc
    );
    drop(buf);

    // 2. Sequential write of a big file, fsync at the end.
    let big = data(mb << 20);
    let plain = tmp.path().join("plain.bin");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&plain).unwrap();
        for piece in big.chunks(128 << 10) {
            f.write_all(piece).unwrap();
        }
        f.sync_all().unwrap();
    }
    let native = t.elapsed().as_secs_f64();
    std::fs::remove_file(&plain).unwrap();
    let store = Arc::new(Store::create(&tmp.path().join("store")).unwrap());
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    let me = Ctx { uid: 0, gid: 0 };
    let t = Instant::now();
    let (_, fh) = vfs.names().create(me, ROOT, b"big", 0o644, false).unwrap();
    let mut off = 0u64;
    for piece in big.chunks(128 << 10) {
        vfs.files().write(fh, off, piece).unwrap();
        off += piece.len() as u64;
    }
    vfs.files().fsync(fh).unwrap();
    vfs.files().release(fh).unwrap();
    let ours = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>9.0} MB/s {:>7.0} MB/s {:>7.2}x",
        format!("write {mb} MiB + fsync vs plain file"),
        mbps(big.len(), ours),
        mbps(big.len(), native),
        native / ours
    );
    drop(big);

    // 3. 10,000 small-file creates (4 KiB each), one fsync at the end.
    let n = 10_000;
    let small = data(4096);
    let pdir = tmp.path().join("plain-small");
    std::fs::create_dir(&pdir).unwrap();
    let t = Instant::now();
    for i in 0..n {
        std::fs::write(pdir.join(format!("f{i}")), &small).unwrap();
    }
    std::process::Command::new("sync").status().ok();
    let native = t.elapsed().as_secs_f64();
    let d = vfs.names().mkdir(me, ROOT, b"small", 0o755).unwrap().ino;
    let t = Instant::now();
    for i in 0..n {
        let (_, fh) = vfs
            .names()
            .create(me, d, format!("f{i}").as_bytes(), 0o644, false)
            .unwrap();
        vfs.files().write(fh, 0, &small).unwrap();
        vfs.files().release(fh).unwrap();
    }
    vfs.sync().unwrap();
    let ours = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>7.0} /s {:>9.0} /s {:>7.2}x",
        "10k small-file creates (4 KiB)",
        n as f64 / ours,
        n as f64 / native,
        native / ours
    );
}
