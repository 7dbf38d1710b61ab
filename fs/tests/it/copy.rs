//! copy_file_range of a whole file (`Vfs::copy_whole_file`): the copy
//! shares the source's chunks; every other copy is left to the caller.

use backer_fs::vfs::*;

use crate::util::*;

#[test]
fn a_whole_file_copy_shares_the_content_and_stays_independent() {
    let mut fs = TestFs::new();
    let data = random_bytes(5 << 20, 7);
    let src = fs.put(ROOT, "src", &data);
    let v = fs.vfs();
    let fin = v.files().open(src, false, false).unwrap();
    let (dst, fout) = v.names().create(ME, ROOT, b"dst", 0o644, false).unwrap();
    let n = v
        .files()
        .copy_whole_file(fin, 0, fout, 0, u64::from(u32::MAX))
        .unwrap();
    assert_eq!(n, Some(data.len() as u64));
    assert_eq!(v.names().getattr(dst.ino).unwrap().size, data.len() as u64);
    // Read through the still-open handle, then after the release.
    assert_eq!(
        v.files().read(fout, 1 << 20, 10).unwrap(),
        &data[1 << 20..(1 << 20) + 10]
    );
    v.files().release(fout).unwrap();
    v.files().release(fin).unwrap();
    assert_eq!(fs.get(dst.ino), data);

    // Writing the copy leaves the source alone.
    let fh = fs.vfs().files().open(dst.ino, false, false).unwrap();
    write_all(fs.vfs(), fh, 100, b"changed");
    fs.vfs().files().release(fh).unwrap();
    assert_eq!(fs.get(src), data);
    let mut changed = data.clone();
    changed[100..107].copy_from_slice(b"changed");
    assert_eq!(fs.get(dst.ino), changed);

    fs.vfs().sync().unwrap();
    fs.reopen();
    assert_eq!(fs.get(fs.path("src").unwrap()), data);
    assert_eq!(fs.get(fs.path("dst").unwrap()), changed);
}

#[test]
fn unchunked_bytes_of_the_source_are_folded_then_shared() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let (src, fin) = v.names().create(ME, ROOT, b"src", 0o644, false).unwrap();
    let data = random_bytes(300_000, 8);
    write_all(v, fin, 0, &data);
    let (dst, fout) = v.names().create(ME, ROOT, b"dst", 0o644, false).unwrap();
    assert_eq!(
        v.files().copy_whole_file(fin, 0, fout, 0, 1 << 30).unwrap(),
        Some(data.len() as u64)
    );
    v.files().release(fout).unwrap();
    v.files().release(fin).unwrap();
    assert_eq!(fs.get(dst.ino), data);
    assert_eq!(fs.get(src.ino), data);
}

#[test]
fn other_copies_are_left_to_the_caller() {
    let fs = TestFs::new();
    let data = random_bytes(200_000, 9);
    let src = fs.put(ROOT, "src", &data);
    let full = fs.put(ROOT, "full", b"already here");
    let v = fs.vfs();
    let fin = v.files().open(src, false, false).unwrap();
    let (_, fout) = v.names().create(ME, ROOT, b"dst", 0o644, false).unwrap();
    let ffull = v.files().open(full, false, false).unwrap();
    let fapp = v.files().open(full, false, true).unwrap();
    let all = u64::from(u32::MAX);
    for (why, (i, oi, o, oo, len)) in [
        ("a range from inside the source", (fin, 1, fout, 0, all)),
        ("to an offset", (fin, 0, fout, 4096, all)),
        ("part of the source", (fin, 0, fout, 0, 1000)),
        ("into a file with content", (fin, 0, ffull, 0, all)),
        ("into an append handle", (fin, 0, fapp, 0, all)),
        ("a file onto itself", (fin, 0, fin, 0, all)),
    ] {
        assert_eq!(
            v.files().copy_whole_file(i, oi, o, oo, len).unwrap(),
            None,
            "{why}"
        );
    }
    assert_eq!(v.names().getattr(full).unwrap().size, 12);
    for fh in [fin, fout, ffull, fapp] {
        v.files().release(fh).unwrap();
    }
    assert_eq!(fs.get(full), b"already here");
    assert_eq!(
        errno_of(v.files().copy_whole_file(fin, 0, fout, 0, all)),
        libc::EBADF
    );
}

fn errno_of<T: std::fmt::Debug>(r: backer_fs::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}
