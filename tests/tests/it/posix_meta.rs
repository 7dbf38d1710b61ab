//! POSIX metadata through the kernel: modes, owners, times, xattrs, link
//! counts, readdir, statfs, fallocate and permission checks for other users.
//! Each test mounts its own store and asserts exact results and errnos.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, OsStr};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mount_util::{assert_errno, assert_same_bytes, check, check_size, cpath, run, Mount};
use crate::posix::MIB;
use crate::roundtrip::read_uncached;

#[test]
fn chmod_chown_and_utimens_are_exact_and_persist() {
    let mut m = Mount::new();
    let p = m.path("meta.txt");
    fs::write(&p, b"m").expect("write");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(fs::metadata(&p).expect("stat").mode() & 0o7777, 0o640);
    fs::create_dir(m.path("sticky")).expect("mkdir");
    fs::set_permissions(m.path("sticky"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    assert_eq!(
        fs::metadata(m.path("sticky")).expect("stat").mode() & 0o7777,
        0o1777
    );

    let before = fs::metadata(&p).expect("stat");
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).expect("chown");
    let after = fs::metadata(&p).expect("stat");
    assert_eq!((after.uid(), after.gid()), (65534, 65534));
    assert!(
        (after.ctime(), after.ctime_nsec()) >= (before.ctime(), before.ctime_nsec()),
        "ctime went backwards on chown"
    );
    std::os::unix::fs::lchown(m.path("sticky"), None, Some(65534)).expect("chgrp only");
    let d = fs::metadata(m.path("sticky")).expect("stat");
    assert_eq!(
        (d.uid(), d.gid()),
        (0, 65534),
        "chown with uid -1 keeps the owner"
    );

    let set_times = |atime: libc::timespec, mtime: libc::timespec| {
        let times = [atime, mtime];
        // SAFETY: a valid path and a two-element timespec array.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&p).as_ptr(), times.as_ptr(), 0) })
    };
    let ts = |sec, nsec| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    set_times(
        ts(1_000_000_000, 123_456_789),
        ts(1_500_000_000, 987_654_321),
    )
    .expect("utimensat");
    let check_times = |when: &str| {
        let s = fs::metadata(&p).expect("stat");
        assert_eq!(
            (s.atime(), s.atime_nsec()),
            (1_000_000_000, 123_456_789),
            "{when}: atime"
        );
        assert_eq!(
            (s.mtime(), s.mtime_nsec()),
            (1_500_000_000, 987_654_321),
            "{when}: mtime"
        );
    };
    check_times("after utimensat");
    // UTIME_OMIT leaves a time alone; UTIME_NOW sets the current time.
    set_times(ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)).expect("UTIME_OMIT");
    check_times("after UTIME_OMIT");

    m.remount();
    check_times("after a remount");
    let s = fs::metadata(&p).expect("stat");
    assert_eq!(s.mode() & 0o7777, 0o640, "mode after a remount");
    assert_eq!((s.uid(), s.gid()), (65534, 65534), "owner after a remount");
    assert_eq!(
        fs::metadata(m.path("sticky")).expect("stat").mode() & 0o7777,
        0o1777
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    set_times(ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW)).expect("UTIME_NOW");
    let s = fs::metadata(&p).expect("stat");
    assert!(
        (s.mtime() - now).abs() <= 5,
        "UTIME_NOW gave mtime {} at {now}",
        s.mtime()
    );
    assert_eq!(
        (s.atime(), s.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "atime kept"
    );
}

pub(crate) fn setxattr(
    p: &Path,
    name: &str,
    value: &[u8],
    flags: libc::c_int,
) -> std::io::Result<libc::c_int> {
    let n = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid path, name and value buffer.
    check(unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub(crate) fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: valid path and name; buf is writable for its length.
    let len = check_size(unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(len);
    Ok(buf)
}

fn listxattr(p: &Path) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: valid path; buf is writable for its length.
    let len = check_size(unsafe {
        libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    Ok(buf[..len]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn removexattr(p: &Path, name: &str) -> std::io::Result<libc::c_int> {
    let n = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid path and name.
    check(unsafe { libc::removexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

#[test]
fn user_xattrs_set_get_list_remove() {
    let mut m = Mount::new();
    let p = m.path("x.txt");
    fs::write(&p, b"x").expect("write");
    assert_eq!(
        listxattr(&p).expect("listxattr"),
        Vec::<String>::new(),
        "a new file"
    );
    assert_errno(
        "getxattr of a missing name",
        getxattr(&p, "user.absent"),
        libc::ENODATA,
    );
    setxattr(&p, "user.test", b"value", 0).expect("setxattr");
    let binary: Vec<u8> = (0..=255).collect();
    setxattr(&p, "user.binary", &binary, 0).expect("setxattr binary");
    setxattr(&p, "user.empty", b"", 0).expect("setxattr empty");
    assert_eq!(getxattr(&p, "user.test").expect("get"), b"value");
    assert_eq!(getxattr(&p, "user.binary").expect("get"), binary);
    assert_eq!(getxattr(&p, "user.empty").expect("get"), b"");
    // A size query, and a buffer that is too small.
    let n = std::ffi::CString::new("user.test").expect("name");
    // SAFETY: a NULL buffer of size 0 asks for the size.
    let size = unsafe { libc::getxattr(cpath(&p).as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(size, 5, "size query");
    let mut small = [0u8; 2];
    assert_errno(
        "getxattr into a small buffer",
        // SAFETY: `small` is writable for its length.
        check_size(unsafe {
            libc::getxattr(
                cpath(&p).as_ptr(),
                n.as_ptr(),
                small.as_mut_ptr().cast(),
                small.len(),
            )
        }),
        libc::ERANGE,
    );
    let mut names = listxattr(&p).expect("listxattr");
    names.sort();
    assert_eq!(names, ["user.binary", "user.empty", "user.test"]);
    assert_errno(
        "XATTR_CREATE on an existing name",
        setxattr(&p, "user.test", b"again", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    assert_errno(
        "XATTR_REPLACE on a missing name",
        setxattr(&p, "user.nope", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
    );
    setxattr(&p, "user.test", b"replaced", libc::XATTR_REPLACE).expect("XATTR_REPLACE");
    assert_eq!(getxattr(&p, "user.test").expect("get"), b"replaced");
    removexattr(&p, "user.empty").expect("removexattr");
    assert_errno(
        "get after remove",
        getxattr(&p, "user.empty"),
        libc::ENODATA,
    );
    assert_errno("remove twice", removexattr(&p, "user.empty"), libc::ENODATA);
    // On a folder too.
    fs::create_dir(m.path("d")).expect("mkdir");
    setxattr(&m.path("d"), "user.dir", b"on a folder", 0).expect("setxattr on a folder");

    m.remount();
    assert_eq!(
        getxattr(&p, "user.test").expect("get after remount"),
        b"replaced"
    );
    assert_eq!(
        getxattr(&p, "user.binary").expect("get after remount"),
        binary
    );
    let mut names = listxattr(&p).expect("listxattr");
    names.sort();
    assert_eq!(names, ["user.binary", "user.test"], "after a remount");
    assert_eq!(
        getxattr(&m.path("d"), "user.dir").expect("get"),
        b"on a folder"
    );
}

#[test]
fn link_counts_of_files_and_folders() {
    let mut m = Mount::new();
    let nlink = |m: &Mount, rel: &str| fs::symlink_metadata(m.path(rel)).expect("lstat").nlink();
    fs::write(m.path("f"), b"f").expect("write");
    assert_eq!(nlink(&m, "f"), 1);
    fs::hard_link(m.path("f"), m.path("g")).expect("link");
    assert_eq!((nlink(&m, "f"), nlink(&m, "g")), (2, 2));
    fs::create_dir(m.path("sub")).expect("mkdir");
    fs::hard_link(m.path("f"), m.path("sub/h")).expect("link into a folder");
    assert_eq!(nlink(&m, "f"), 3);
    assert_errno(
        "link onto an existing name",
        fs::hard_link(m.path("f"), m.path("g")),
        libc::EEXIST,
    );
    assert_errno(
        "link of a folder",
        fs::hard_link(m.path("sub"), m.path("sub2")),
        libc::EPERM,
    );
    fs::remove_file(m.path("g")).expect("unlink");
    assert_eq!(nlink(&m, "f"), 2);

    // Folders: 2 + one per subfolder; files do not count.
    fs::create_dir(m.path("d")).expect("mkdir");
    assert_eq!(nlink(&m, "d"), 2, "an empty folder");
    fs::create_dir(m.path("d/s1")).expect("mkdir");
    fs::create_dir(m.path("d/s2")).expect("mkdir");
    fs::write(m.path("d/file"), b"").expect("write");
    assert_eq!(nlink(&m, "d"), 4, "a folder with two subfolders and a file");
    fs::remove_dir(m.path("d/s1")).expect("rmdir");
    assert_eq!(nlink(&m, "d"), 3);
    fs::rename(m.path("d/s2"), m.path("s2")).expect("move a subfolder out");
    assert_eq!(nlink(&m, "d"), 2, "after moving a subfolder out");

    m.remount();
    assert_eq!(
        (nlink(&m, "f"), nlink(&m, "sub/h")),
        (2, 2),
        "after a remount"
    );
    assert_eq!(
        fs::metadata(m.path("f")).expect("stat").ino(),
        fs::metadata(m.path("sub/h")).expect("stat").ino(),
        "hard links share an inode after a remount"
    );
    assert_eq!(nlink(&m, "d"), 2, "folder after a remount");
}

/// Reads a folder with opendir/readdir, calling `midway` after `after`
/// entries; returns every name read, "." and ".." included, in order.
fn readdir_with(dir: &Path, after: usize, mut midway: impl FnMut()) -> Vec<Vec<u8>> {
    let c = cpath(dir);
    // SAFETY: opendir/readdir/closedir on a stream we own; each dirent is
    // read before the next readdir call.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir: {}", std::io::Error::last_os_error());
        let mut names = Vec::new();
        loop {
            if names.len() == after {
                midway();
            }
            *libc::__errno_location() = 0;
            let e = libc::readdir(d);
            if e.is_null() {
                let err = *libc::__errno_location();
                assert_eq!(
                    err,
                    0,
                    "readdir: {}",
                    std::io::Error::from_raw_os_error(err)
                );
                break;
            }
            names.push(CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec());
        }
        libc::closedir(d);
        names
    }
}

#[test]
fn readdir_while_the_folder_changes_returns_every_stable_entry_once() {
    let m = Mount::new();
    let dir = m.path("busy");
    fs::create_dir(&dir).expect("mkdir");
    // Long names, so the listing spans many getdents calls and requests.
    let name = |kind: &str, i: usize| format!("{kind}-{i:04}-{}", "n".repeat(40));
    for i in 0..1000 {
        fs::write(dir.join(name("orig", i)), b"").expect("create");
    }
    let removed: BTreeSet<String> = (0..1000).step_by(7).map(|i| name("orig", i)).collect();
    let added: BTreeSet<String> = (0..100).map(|i| name("added", i)).collect();
    let seen = readdir_with(&dir, 500, || {
        for n in &removed {
            fs::remove_file(dir.join(n)).expect("unlink while listing");
        }
        for n in &added {
            fs::write(dir.join(n), b"").expect("create while listing");
        }
    });
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for n in &seen {
        *counts
            .entry(String::from_utf8_lossy(n).into_owned())
            .or_default() += 1;
    }
    for (n, c) in &counts {
        assert_eq!(*c, 1, "{n} was listed {c} times");
        assert!(
            n == "." || n == ".." || n.starts_with("orig-") || added.contains(n),
            "listed a name that never existed: {n}"
        );
    }
    assert!(counts.contains_key(".") && counts.contains_key(".."));
    for i in 0..1000 {
        let n = name("orig", i);
        if !removed.contains(&n) {
            assert!(
                counts.contains_key(&n),
                "{n} existed throughout but was not listed"
            );
        }
    }
    // A fresh listing is exactly the folder now.
    let now: BTreeSet<String> = fs::read_dir(&dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = (0..1000)
        .map(|i| name("orig", i))
        .filter(|n| !removed.contains(n))
        .chain(added.iter().cloned())
        .collect();
    assert_eq!(now, want);
}

#[test]
fn statfs_reports_the_store_disk_and_name_limits() {
    let m = Mount::new();
    let statvfs = |p: &Path| {
        // SAFETY: a zeroed statvfs filled by the call.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        check(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut s) }).expect("statvfs");
        s
    };
    let mnt = statvfs(m.dir());
    let disk = statvfs(&m.store().dir());
    assert_eq!(mnt.f_namemax, 255, "f_namemax");
    assert!(
        mnt.f_bsize > 0 && mnt.f_frsize > 0,
        "block sizes {} {}",
        mnt.f_bsize,
        mnt.f_frsize
    );
    assert!(
        mnt.f_bfree <= mnt.f_blocks && mnt.f_bavail <= mnt.f_bfree,
        "free space"
    );
    assert!(mnt.f_ffree > 0 && mnt.f_ffree <= mnt.f_files, "inodes");
    let total_mnt = mnt.f_blocks * mnt.f_frsize;
    let total_disk = disk.f_blocks * disk.f_frsize;
    assert!(
        total_mnt <= total_disk && total_disk - total_mnt < mnt.f_frsize.max(disk.f_frsize),
        "the mount reports {total_mnt} bytes, the store's disk has {total_disk}"
    );
    // Names: 255 bytes work, 256 do not.
    let ok = "a".repeat(255);
    fs::write(m.path(&ok), b"").expect("a 255-byte name");
    assert!(fs::read_dir(m.dir())
        .expect("readdir")
        .any(|e| e.expect("entry").file_name() == OsStr::new(&ok)));
    let long = "b".repeat(256);
    assert_errno(
        "create of a 256-byte name",
        fs::write(m.path(&long), b""),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "mkdir of a 256-byte name",
        fs::create_dir(m.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "stat of a 256-byte name",
        fs::metadata(m.path(&long)),
        libc::ENAMETOOLONG,
    );
}

#[test]
fn posix_fallocate_gives_a_zeroed_file_of_the_size() {
    let m = Mount::new();
    let p = m.path("alloc.bin");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .expect("create");
    // glibc falls back to writing zeros if fallocate(2) is not supported.
    // SAFETY: posix_fallocate on our descriptor.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, MIB as i64) };
    assert_eq!(
        r,
        0,
        "posix_fallocate: {}",
        std::io::Error::from_raw_os_error(r)
    );
    assert_eq!(f.metadata().expect("fstat").len(), MIB);
    // fallocate(2) itself: supported, or a clean EOPNOTSUPP.
    // SAFETY: fallocate on our descriptor.
    let r = check(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 2 * MIB as i64) });
    match r {
        Ok(_) => assert_eq!(f.metadata().expect("fstat").len(), 2 * MIB),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "fallocate: {e}"),
    }
    let len = f.metadata().expect("fstat").len() as usize;
    drop(f);
    assert_same_bytes("a fallocated file", &read_uncached(&p), &vec![0u8; len]);
}

/// `runuser -u nobody -- ARGS...`.
pub(crate) fn as_nobody(args: &[&str]) -> backer_tests::Run {
    let mut all: Vec<&OsStr> = vec!["-u".as_ref(), "nobody".as_ref(), "--".as_ref()];
    all.extend(args.iter().map(|a| OsStr::new(*a)));
    run("runuser", &all)
}

#[test]
fn default_permissions_are_enforced_for_other_users() {
    let m = Mount::new();
    // nobody must be able to reach the mount point (tempdirs are 0700).
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let opts = crate::mount_util::mount_options_in(
        &fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        m.dir(),
    )
    .expect("mounted");
    for want in ["default_permissions", "allow_other"] {
        assert!(
            opts.split(',').any(|o| o == want),
            "mount options {opts} lack {want}"
        );
    }
    let secret = m.path("secret");
    let public = m.path("public");
    fs::write(&secret, b"top secret\n").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&public, b"for everyone\n").expect("write");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).expect("chmod");

    let r = as_nobody(&["cat", secret.to_str().expect("utf-8")]);
    assert_eq!(r.code, Some(1), "nobody read a 0600 root file: {r:#?}");
    assert!(r.stderr.contains("Permission denied"), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");

    let r = as_nobody(&["cat", public.to_str().expect("utf-8")]);
    assert_eq!(r.code, Some(0), "nobody could not read a 0644 file: {r:#?}");
    assert_eq!(r.stdout, "for everyone\n");

    let r = as_nobody(&["sh", "-c", &format!("echo x >> '{}'", public.display())]);
    assert_ne!(r.code, Some(0), "nobody wrote to a 0644 root file: {r:#?}");
    assert!(r.stderr.contains("Permission denied"), "{r:#?}");
    assert_eq!(fs::read(&public).expect("read"), b"for everyone\n");

    let r = as_nobody(&["touch", m.path("new-by-nobody").to_str().expect("utf-8")]);
    assert_ne!(
        r.code,
        Some(0),
        "nobody created a file in a 0755 root folder: {r:#?}"
    );
    assert!(r.stderr.contains("Permission denied"), "{r:#?}");

    // A world-writable folder: nobody creates a file there, and owns it.
    fs::create_dir(m.path("shared")).expect("mkdir");
    fs::set_permissions(m.path("shared"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let theirs = m.path("shared/theirs");
    let r = as_nobody(&["sh", "-c", &format!("echo mine > '{}'", theirs.display())]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let meta = fs::metadata(&theirs).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owner of a file nobody created"
    );
    assert_eq!(fs::read(&theirs).expect("read"), b"mine\n");

    // A 0700 folder keeps nobody out; root still gets in (and reads 0000).
    fs::create_dir(m.path("private")).expect("mkdir");
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(m.path("private/f"), b"p").expect("write");
    let r = as_nobody(&["ls", m.path("private").to_str().expect("utf-8")]);
    assert_ne!(r.code, Some(0), "{r:#?}");
    assert!(r.stderr.contains("Permission denied"), "{r:#?}");
    fs::set_permissions(m.path("private/f"), fs::Permissions::from_mode(0o000)).expect("chmod");
    assert_eq!(
        fs::read(m.path("private/f")).expect("root reads a 0000 file"),
        b"p"
    );
}
