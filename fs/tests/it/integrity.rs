//! Damaged packs: reads never return a wrong byte (EIO instead), the bad
//! copy is quarantined, `check` reports what is bad and `check --repair`
//! fixes what the packs prove. Real sled stores, real pack files damaged
//! on disk between two opens.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use backer_fs::check;
use backer_fs::history::{self, WriteOptions};
use backer_fs::store::packs::{Location, RECORD_HEADER};
use backer_fs::store::Store;
use backer_fs::{Error, Hash};
use proptest::prelude::*;

use crate::util::{random_bytes, TestFs};
use backer_fs::vfs::ROOT;

/// A store with two files, committed and closed, then opened again.
fn two_files() -> (TestFs, Vec<u8>, Vec<u8>) {
    let mut fs = TestFs::new();
    let (f, g) = (random_bytes(600_000, 1), random_bytes(300_000, 2));
    fs.put(ROOT, "f", &f);
    fs.put(ROOT, "g", &g);
    fs.vfs().commit_durable().unwrap();
    fs.reopen();
    (fs, f, g)
}

fn store(fs: &TestFs) -> std::sync::Arc<Store> {
    fs.vfs().store()
}

fn pack_path(fs: &TestFs, pack: u32) -> PathBuf {
    fs.dir
        .path()
        .join("store/packs")
        .join(format!("{pack:08}.pack"))
}

/// Closes the store, flips the bits of `len` bytes at each `(at, len)`
/// of pack `pack`, and opens the store again.
fn damage_stopped(fs: &mut TestFs, pack: u32, spots: &[(u64, usize)]) -> Arc<Store> {
    fs.vfs = None;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack_path(fs, pack))
        .unwrap();
    for &(at, len) in spots {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, at).unwrap();
        for x in &mut b {
            *x ^= 0x5a;
        }
        f.write_all_at(&b, at).unwrap();
    }
    f.sync_all().unwrap();
    fs.reopen();
    store(fs)
}

/// The first chunk of `data` and where the store keeps it.
fn first_chunk(store: &Store, data: &[u8]) -> (Hash, Location) {
    let h = backer_fs::chunk::chunks(data)[0].hash;
    (h, store.chunk_location(&h).unwrap().unwrap())
}

/// Reads `name` whole through the vfs, 128 KiB at a time as FUSE does.
fn read(fs: &TestFs, name: &str) -> backer_fs::Result<Vec<u8>> {
    let v = fs.vfs();
    let ino = v.names().lookup(ROOT, name.as_bytes())?.ino;
    let size = v.names().getattr(ino)?.size;
    let fh = v.files().open(ino, false, false)?;
    let mut out = Vec::new();
    let got = (|| {
        while (out.len() as u64) < size {
            let part = v.files().read(fh, out.len() as u64, 128 << 10)?;
            if part.is_empty() {
                break;
            }
            out.extend_from_slice(&part);
        }
        Ok(())
    })();
    v.files().release(fh)?;
    got.map(|()| out)
}

#[test]
fn damaged_chunk_bytes_give_eio_never_wrong_bytes_and_check_reports_them() {
    let (mut fs, f, g) = two_files();
    let (h, loc) = first_chunk(&store(&fs), &f);
    let s = damage_stopped(&mut fs, loc.pack, &[(loc.offset + 1000, 1)]);

    let r = check::run(&s, false).unwrap();
    assert_eq!(r.bad_chunks, vec![h.to_hex()], "{r:?}");
    assert!(r.still_bad > 0);
    assert!(r.nodes > 0 && r.chunks > 0 && r.bytes > 0, "{r:?}");
    assert_eq!(
        s.chunk_location(&h).unwrap(),
        Some(loc),
        "check alone changes nothing"
    );

    // The mount's read path: EIO for f, g whole.
    let err = read(&fs, "f").unwrap_err();
    assert!(matches!(err, Error::BadChunk(x) if x == h), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(read(&fs, "g").unwrap(), g);
    // Quarantined: the index no longer claims it.
    assert_eq!(s.chunk_location(&h).unwrap(), None);
    assert_eq!(s.missing_chunks().unwrap(), vec![h]);
    assert!(read(&fs, "f").is_err());

    // Export: f is not written at all, and the error names it.
    let out = fs.dir.path().join("export");
    std::fs::create_dir(&out).unwrap();
    let err = history::export(&s, &out, WriteOptions::default(), None).unwrap_err();
    assert!(err.to_string().contains("f:"), "{err}");
    assert!(!out.join("f").exists());

    let r = check::run(&s, false).unwrap();
    assert!(r.bad_chunks.is_empty(), "{r:?}");
    assert_eq!(r.missing_chunks, vec![h.to_hex()]);
    assert_eq!(r.still_bad, 1);

    // The same bytes written again heal it.
    fs.put(ROOT, "f2", &f);
    assert_eq!(read(&fs, "f").unwrap(), f);
    assert!(s.missing_chunks().unwrap().is_empty());
    fs.vfs().commit_durable().unwrap();
    assert_eq!(check::run(&s, false).unwrap().still_bad, 0);
}

#[test]
fn a_damaged_record_header_is_reported_and_repair_writes_the_record_again() {
    let (mut fs, f, _) = two_files();
    let (h, loc) = first_chunk(&store(&fs), &f);
    // The magic of its record header.
    let s = damage_stopped(&mut fs, loc.pack, &[(loc.offset - RECORD_HEADER, 2)]);
    // The bytes still check out: reads are fine.
    assert_eq!(read(&fs, "f").unwrap(), f);
    let r = check::run(&s, false).unwrap();
    assert_eq!(r.bad_records, vec![h.to_hex()], "{r:?}");
    assert_eq!(r.still_bad, 1);
    assert_eq!(r.damaged.len(), 1, "{r:?}");
    let r = check::run(&s, true).unwrap();
    assert_eq!(r.repaired.rewritten, vec![h.to_hex()], "{r:?}");
    assert_eq!(r.still_bad, 0, "{r:?}");
    assert_ne!(s.chunk_location(&h).unwrap(), Some(loc));
    let r = check::run(&s, false).unwrap();
    assert_eq!(r.still_bad, 0, "{r:?}");
    assert_eq!(read(&fs, "f").unwrap(), f);
}

#[test]
fn repair_quarantines_a_bad_chunk_and_reindexes_one_the_packs_hold() {
    let (mut fs, f, _) = two_files();
    let s = store(&fs);
    let (h, loc) = first_chunk(&s, &f);
    // A second good copy of another chunk of f, which the index forgets.
    let (h2, loc2) = {
        let c = &backer_fs::chunk::chunks(&f)[1];
        (c.hash, s.chunk_location(&c.hash).unwrap().unwrap())
    };
    let mut b = backer_fs::store::Batch::default();
    b.remove(backer_fs::store::Space::Chunks, h2.as_bytes().to_vec());
    s.kv().apply(b).unwrap();
    drop(s);
    let s = damage_stopped(&mut fs, loc.pack, &[(loc.offset + 10, 3)]);
    let r = check::run(&s, false).unwrap();
    assert_eq!(r.bad_chunks, vec![h.to_hex()]);
    assert_eq!(r.missing_chunks, vec![h2.to_hex()]);
    let r = check::run(&s, true).unwrap();
    assert_eq!(r.repaired.quarantined, vec![h.to_hex()]);
    assert_eq!(r.repaired.reindexed, vec![h2.to_hex()]);
    assert_eq!(
        r.missing_chunks,
        vec![h.to_hex()],
        "no good copy of h anywhere"
    );
    assert_eq!(r.still_bad, 1);
    assert_eq!(s.chunk_location(&h2).unwrap(), Some(loc2));
    assert!(matches!(read(&fs, "f"), Err(Error::BadChunk(x)) if x == h));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random damage anywhere in the pack: a read gives the true bytes or
    /// an error, never a wrong byte and never a panic; check and repair
    /// run through and leave reads as honest.
    #[test]
    fn random_damage_never_yields_a_wrong_byte(
        spots in proptest::collection::vec((0.0f64..1.0, 1usize..300), 1..4)
    ) {
        let (mut fs, f, g) = two_files();
        let (_, loc) = first_chunk(&store(&fs), &f);
        let len = std::fs::metadata(pack_path(&fs, loc.pack)).unwrap().len();
        let spots: Vec<(u64, usize)> = spots
            .iter()
            .map(|(at, n)| {
                let at = ((len as f64) * at) as u64;
                (at, (*n as u64).min(len - at) as usize)
            })
            .collect();
        let s = damage_stopped(&mut fs, loc.pack, &spots);
        let honest = |fs: &TestFs| {
            for (name, want) in [("f", &f), ("g", &g)] {
                match read(fs, name) {
                    Ok(got) => prop_assert_eq!(&got, want),
                    Err(e) => prop_assert_eq!(e.errno(), libc::EIO),
                }
            }
            Ok(())
        };
        let before = check::run(&s, false).unwrap();
        honest(&fs)?;
        let repaired = check::run(&s, true).unwrap();
        honest(&fs)?;
        let after = check::run(&s, false).unwrap();
        prop_assert!(before.still_bad >= repaired.still_bad);
        prop_assert_eq!(after.still_bad, repaired.still_bad);
        if read(&fs, "f").is_ok() && read(&fs, "g").is_ok() {
            prop_assert_eq!(after.missing_chunks.len(), 0);
        }
    }
}

/// A collection that rewrites a pack meets the damaged copy: it leaves it
/// out (quarantined) and finishes; once nothing names the chunk, the next
/// collection drops its record too.
#[test]
fn a_collection_leaves_a_damaged_chunk_out_and_forgets_it_once_unreachable() {
    let mut fs = TestFs::new();
    let f = random_bytes(600_000, 3);
    fs.put(ROOT, "f", &f);
    fs.put(ROOT, "big", &random_bytes(20 << 20, 4));
    fs.vfs().commit_durable().unwrap();
    fs.vfs().names().unlink(ROOT, b"big").unwrap();
    fs.vfs().commit_durable().unwrap();
    let (h, loc) = first_chunk(&store(&fs), &f);
    let s = damage_stopped(&mut fs, loc.pack, &[(loc.offset + 7, 1)]);

    let report = fs.vfs().history().gc(&crate::gc::keep_last(1)).unwrap();
    assert!(report.packs_rewritten >= 1, "{report:?}");
    assert_eq!(s.missing_chunks().unwrap(), vec![h]);
    assert!(matches!(read(&fs, "f"), Err(Error::BadChunk(x)) if x == h));
    let r = check::run(&s, false).unwrap();
    assert_eq!(r.missing_chunks, vec![h.to_hex()], "{r:?}");
    assert!(r.bad_chunks.is_empty(), "{r:?}");

    fs.vfs().names().unlink(ROOT, b"f").unwrap();
    fs.vfs().commit_durable().unwrap();
    fs.vfs().history().gc(&crate::gc::keep_last(1)).unwrap();
    assert!(s.missing_chunks().unwrap().is_empty());
    assert_eq!(check::run(&s, false).unwrap().still_bad, 0);
}
