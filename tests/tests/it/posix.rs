//! POSIX file behaviour through the kernel (open flags, sparse files,
//! truncate, unlink while open, rename, rmdir): each test mounts its own
//! store and asserts exact results and errnos, through std::fs and libc.
//! Metadata and permissions are in `posix_meta`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use rand::RngCore;

use crate::mount_util::{assert_errno, assert_same_bytes, check, cpath, Mount};
use crate::roundtrip::read_uncached;

pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn lseek(f: &fs::File, off: i64, whence: libc::c_int) -> std::io::Result<i64> {
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

#[test]
fn o_append_writes_at_the_end_whatever_the_offset() {
    let m = Mount::new();
    let p = m.path("append.txt");
    fs::write(&p, b"abc").expect("write");
    let mut a = OpenOptions::new().append(true).open(&p).expect("open a");
    let mut b = OpenOptions::new().append(true).open(&p).expect("open b");
    a.write_all(b"def").expect("write a");
    b.write_all(b"gh").expect("write b");
    a.write_all(b"i").expect("write a");
    // Linux: pwrite on an O_APPEND descriptor appends, ignoring the offset.
    a.write_at(b"J", 0).expect("pwrite");
    drop((a, b));
    assert_eq!(fs::read(&p).expect("read"), b"abcdefghiJ");
    assert_eq!(read_uncached(&p), b"abcdefghiJ");
    assert_eq!(fs::metadata(&p).expect("stat").len(), 10);
}

#[test]
fn o_trunc_empties_the_file_at_open() {
    let m = Mount::new();
    let p = m.path("trunc.txt");
    fs::write(&p, b"hello world").expect("write");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .expect("open O_TRUNC");
    assert_eq!(
        fs::metadata(&p).expect("stat").len(),
        0,
        "size right after open"
    );
    f.write_all(b"hi").expect("write");
    drop(f);
    assert_eq!(read_uncached(&p), b"hi");
}

#[test]
fn o_excl_refuses_existing_names_even_dangling_symlinks() {
    let m = Mount::new();
    let p = m.path("excl.txt");
    let excl = |p: &Path| OpenOptions::new().write(true).create_new(true).open(p);
    excl(&p)
        .expect("first O_CREAT|O_EXCL")
        .write_all(b"one")
        .expect("write");
    assert_errno("O_EXCL on an existing file", excl(&p), libc::EEXIST);
    assert_eq!(
        fs::read(&p).expect("read"),
        b"one",
        "O_EXCL must not truncate"
    );
    std::os::unix::fs::symlink("nowhere", m.path("dangling")).expect("symlink");
    assert_errno(
        "O_EXCL on a dangling symlink",
        excl(&m.path("dangling")),
        libc::EEXIST,
    );
    assert_errno(
        "the symlink's target was not created",
        fs::symlink_metadata(m.path("nowhere")),
        libc::ENOENT,
    );
    fs::create_dir(m.path("d")).expect("mkdir");
    assert_errno("O_EXCL on a folder", excl(&m.path("d")), libc::EEXIST);
    assert_errno(
        "mkdir of an existing name",
        fs::create_dir(m.path("d")),
        libc::EEXIST,
    );
}

#[test]
fn sparse_file_reads_zeros_and_takes_little_space() {
    let mut m = Mount::new();
    let p = m.path("sparse.bin");
    let off = 10 * MIB;
    let size = off + 4;
    {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .expect("create");
        f.write_at(b"head", 0).expect("pwrite head");
        f.write_at(b"tail", off).expect("pwrite tail");
        f.sync_all().expect("fsync");
    }
    let check_sparse = |when: &str| {
        let meta = fs::metadata(&p).expect("stat");
        assert_eq!(meta.len(), size, "{when}: size");
        assert!(
            meta.blocks() * 512 <= MIB,
            "{when}: a 10 MiB file with 8 bytes of data uses {} blocks of 512 bytes",
            meta.blocks()
        );
        let data = read_uncached(&p);
        let mut want = vec![0u8; size as usize];
        want[..4].copy_from_slice(b"head");
        want[off as usize..].copy_from_slice(b"tail");
        assert_same_bytes(&format!("{when}: sparse contents"), &data, &want);
        // Holes: either reported (SEEK_HOLE inside the zeros) or the
        // kernel's generic answer (all data, the hole at EOF); at or
        // beyond EOF both give ENXIO.
        let f = fs::File::open(&p).expect("open");
        let hole = lseek(&f, 0, libc::SEEK_HOLE).expect("SEEK_HOLE");
        assert!(
            hole as u64 == size || (4..=off).contains(&(hole as u64)),
            "{when}: SEEK_HOLE from 0 gave {hole}"
        );
        let data_at = lseek(&f, 5, libc::SEEK_DATA).expect("SEEK_DATA");
        if hole as u64 == size {
            assert_eq!(data_at, 5, "{when}: generic SEEK_DATA");
        } else {
            assert!(
                (5..=off as i64).contains(&data_at),
                "{when}: SEEK_DATA from 5 gave {data_at}"
            );
        }
        assert_errno(
            "SEEK_DATA at EOF",
            lseek(&f, size as i64, libc::SEEK_DATA),
            libc::ENXIO,
        );
        assert_errno(
            "SEEK_HOLE past EOF",
            lseek(&f, size as i64 + 1, libc::SEEK_HOLE),
            libc::ENXIO,
        );
    };
    check_sparse("mounted");
    m.remount();
    check_sparse("after a remount");
}

#[test]
fn truncate_down_then_up_reads_zeros_not_old_bytes() {
    let mut m = Mount::new();
    let p = m.path("t.bin");
    fs::write(&p, [b'x'; 100]).expect("write");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("open");
    f.set_len(40).expect("ftruncate down");
    assert_eq!(fs::metadata(&p).expect("stat").len(), 40);
    assert_eq!(read_uncached(&p), [b'x'; 40]);
    f.set_len(100).expect("ftruncate up");
    let mut want = vec![b'x'; 40];
    want.resize(100, 0);
    assert_eq!(
        read_uncached(&p),
        want,
        "bytes 40..100 after shrinking and growing"
    );
    // truncate(2) by path, up to 1 MiB.
    check(unsafe { libc::truncate(cpath(&p).as_ptr(), MIB as i64) }).expect("truncate up");
    want.resize(MIB as usize, 0);
    assert_eq!(fs::metadata(&p).expect("stat").len(), MIB);
    assert_same_bytes("after truncate to 1 MiB", &read_uncached(&p), &want);
    assert_errno(
        "truncate to a negative size",
        check(unsafe { libc::truncate(cpath(&p).as_ptr(), -1) }),
        libc::EINVAL,
    );
    fs::create_dir(m.path("dir")).expect("mkdir");
    assert_errno(
        "truncate of a folder",
        check(unsafe { libc::truncate(cpath(&m.path("dir")).as_ptr(), 0) }),
        libc::EISDIR,
    );
    drop(f);
    m.remount();
    assert_same_bytes("after a remount", &read_uncached(&p), &want);
    fs::File::options()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(0))
        .expect("truncate to 0");
    assert_eq!(read_uncached(&p), b"");
}

#[test]
fn unlinked_open_file_stays_readable_and_writable_through_its_descriptor() {
    let m = Mount::new();
    let p = m.path("doomed.bin");
    let data = random_bytes(MIB as usize);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    fs::remove_file(&p).expect("unlink");
    assert_errno("stat after unlink", fs::metadata(&p), libc::ENOENT);
    assert!(fs::read_dir(m.dir())
        .expect("readdir")
        .all(|e| e.expect("entry").file_name() != "doomed.bin"));
    assert_eq!(
        f.metadata().expect("fstat").nlink(),
        0,
        "nlink of an unlinked file"
    );
    // Drop the cached pages so the reads go to the file system.
    // SAFETY: advisory call on our descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut got = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut got).expect("read after unlink");
    assert_same_bytes("read after unlink", &got, &data);
    f.write_all(b"more").expect("write after unlink");
    f.sync_all().expect("fsync after unlink");
    let mut tail = [0u8; 4];
    f.read_exact_at(&mut tail, MIB).expect("pread");
    assert_eq!(&tail, b"more");
    // A new file at the name is a different file.
    fs::write(&p, b"new").expect("recreate");
    assert_eq!(fs::read(&p).expect("read new"), b"new");
    f.read_exact_at(&mut tail, MIB).expect("pread old");
    assert_eq!(&tail, b"more", "the unlinked file kept its bytes");
    assert_eq!(f.metadata().expect("fstat").len(), MIB + 4);
}

#[test]
fn rename_over_an_existing_file_replaces_it_atomically() {
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, b"new").expect("write a");
    fs::write(&b, b"old").expect("write b");
    let ino_a = fs::metadata(&a).expect("stat a").ino();
    let mut old = fs::File::open(&b).expect("open b");
    fs::rename(&a, &b).expect("rename over b");
    assert_errno("stat of the old name", fs::metadata(&a), libc::ENOENT);
    assert_eq!(fs::read(&b).expect("read b"), b"new");
    assert_eq!(read_uncached(&b), b"new");
    assert_eq!(
        fs::metadata(&b).expect("stat b").ino(),
        ino_a,
        "b is a's inode"
    );
    let mut got = Vec::new();
    old.read_to_end(&mut got).expect("read the replaced file");
    assert_eq!(
        got, b"old",
        "a descriptor on the replaced file still reads it"
    );
    // Renaming a name onto itself (another link to the same inode) is a no-op.
    fs::hard_link(&b, m.path("b2")).expect("link");
    fs::rename(m.path("b2"), &b).expect("rename onto a link of itself");
    assert!(
        m.path("b2").exists(),
        "rename of a link onto itself keeps both names"
    );
}

#[test]
fn rename_of_folders_over_empty_and_full_folders_and_files() {
    let m = Mount::new();
    fs::create_dir(m.path("src")).expect("mkdir");
    fs::write(m.path("src/f"), b"payload").expect("write");
    fs::create_dir(m.path("empty")).expect("mkdir");
    fs::rename(m.path("src"), m.path("empty")).expect("rename over an empty folder");
    assert_errno("old name", fs::metadata(m.path("src")), libc::ENOENT);
    assert_eq!(fs::read(m.path("empty/f")).expect("read"), b"payload");

    fs::create_dir(m.path("src2")).expect("mkdir");
    fs::create_dir(m.path("full")).expect("mkdir");
    fs::write(m.path("full/keep"), b"k").expect("write");
    assert_errno(
        "rename over a non-empty folder",
        fs::rename(m.path("src2"), m.path("full")),
        libc::ENOTEMPTY,
    );
    assert!(m.path("src2").is_dir() && m.path("full/keep").is_file());

    fs::write(m.path("file"), b"f").expect("write");
    assert_errno(
        "rename of a file over a folder",
        fs::rename(m.path("file"), m.path("src2")),
        libc::EISDIR,
    );
    assert_errno(
        "rename of a folder over a file",
        fs::rename(m.path("src2"), m.path("file")),
        libc::ENOTDIR,
    );
    assert_errno(
        "rename of a folder into itself",
        fs::rename(m.path("full"), m.path("full/keep2")),
        libc::EINVAL,
    );
    assert_errno(
        "rename of a missing name",
        fs::rename(m.path("missing"), m.path("x")),
        libc::ENOENT,
    );
}

#[test]
fn renameat2_noreplace_and_exchange() {
    let m = Mount::new();
    fs::write(m.path("a"), b"A").expect("write");
    fs::write(m.path("b"), b"B").expect("write");
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/inside"), b"I").expect("write");
    let renameat2 = |from: &str, to: &str, flags: libc::c_uint| {
        let (f, t) = (cpath(&m.path(from)), cpath(&m.path(to)));
        // SAFETY: two valid C paths relative to AT_FDCWD (they are absolute).
        check(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                flags,
            )
        })
    };
    assert_errno(
        "RENAME_NOREPLACE",
        renameat2("a", "b", libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    assert_eq!(fs::read(m.path("b")).expect("read"), b"B");
    renameat2("a", "c", libc::RENAME_NOREPLACE).expect("RENAME_NOREPLACE to a free name");
    assert_eq!(fs::read(m.path("c")).expect("read"), b"A");
    renameat2("b", "c", libc::RENAME_EXCHANGE).expect("RENAME_EXCHANGE of two files");
    assert_eq!(fs::read(m.path("b")).expect("read"), b"A");
    assert_eq!(fs::read(m.path("c")).expect("read"), b"B");
    renameat2("b", "d", libc::RENAME_EXCHANGE).expect("RENAME_EXCHANGE of a file and a folder");
    assert_eq!(fs::read(m.path("d")).expect("read"), b"A");
    assert_eq!(fs::read(m.path("b/inside")).expect("read"), b"I");
    assert_errno(
        "RENAME_EXCHANGE with a missing name",
        renameat2("b", "missing", libc::RENAME_EXCHANGE),
        libc::ENOENT,
    );
}

#[test]
fn rmdir_and_unlink_errors() {
    let m = Mount::new();
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/f"), b"x").expect("write");
    assert_errno(
        "rmdir of a non-empty folder",
        fs::remove_dir(m.path("d")),
        libc::ENOTEMPTY,
    );
    assert_errno(
        "rmdir of a file",
        fs::remove_dir(m.path("d/f")),
        libc::ENOTDIR,
    );
    assert_errno(
        "unlink of a folder",
        fs::remove_file(m.path("d")),
        libc::EISDIR,
    );
    assert_errno(
        "rmdir of a missing name",
        fs::remove_dir(m.path("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "unlink of a missing name",
        fs::remove_file(m.path("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "rmdir of .",
        check(unsafe { libc::rmdir(cpath(&m.path("d/.")).as_ptr()) }),
        libc::EINVAL,
    );
    fs::remove_file(m.path("d/f")).expect("unlink");
    fs::remove_dir(m.path("d")).expect("rmdir of the emptied folder");
    assert_errno("stat after rmdir", fs::metadata(m.path("d")), libc::ENOENT);
}
