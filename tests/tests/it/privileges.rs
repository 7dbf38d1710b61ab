//! Setuid and setgid bits are dropped as Linux drops them: on chown of a
//! file (even by root), and on a write or truncate by someone without
//! CAP_FSETID (here: `nobody`). The mount answers the kernel's
//! FUSE_HANDLE_KILLPRIV_V2 contract, so the file system, not the kernel,
//! does this; these tests pin the behaviour through the kernel.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::mount_util::Mount;
use crate::posix_meta::{as_nobody, getxattr, setxattr};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(p: &Path, id: u32) {
    std::os::unix::fs::chown(p, Some(id), Some(id)).expect("chown");
}

#[test]
fn chown_drops_setuid_and_group_executable_setgid() {
    let mut m = Mount::new();
    let cases = [
        // (mode before, mode after a chown by root)
        (0o4755, 0o755),
        (0o2755, 0o755),
        (0o6755, 0o755),
        // setgid without group execute is a locking mark, not a privilege
        (0o2745, 0o2745),
        (0o1755, 0o1755),
    ];
    for (i, (before, after)) in cases.into_iter().enumerate() {
        let p = m.path(&format!("f{i}"));
        fs::write(&p, b"#!/bin/sh\n").expect("write");
        chmod(&p, before);
        assert_eq!(mode(&p), before);
        chown(&p, 65534);
        assert_eq!(mode(&p), after, "chown of a {before:o} file");
        assert_eq!(fs::metadata(&p).expect("stat").uid(), 65534);
    }
    // A mode set after the chown (as tar and install do) stays.
    let g = m.path("g");
    fs::write(&g, b"").expect("write");
    chown(&g, 65534);
    chmod(&g, 0o6755);
    assert_eq!(mode(&g), 0o6755, "chmod after chown");
    // Folders keep theirs: setgid on a folder is inheritance, not privilege.
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    chmod(&d, 0o2775);
    chown(&d, 65534);
    assert_eq!(mode(&d), 0o2775, "chown of a setgid folder");
    // The store has what the kernel showed, not only its cache.
    m.remount();
    for (i, (_, after)) in cases.into_iter().enumerate() {
        assert_eq!(
            mode(&m.path(&format!("f{i}"))),
            after,
            "f{i} after a remount"
        );
    }
    assert_eq!(mode(&g), 0o6755);
    assert_eq!(mode(&d), 0o2775);
}

#[test]
fn writes_and_truncates_by_others_drop_setuid_and_setgid() {
    let mut m = Mount::new();
    // nobody must be able to reach the mount point (tempdirs are 0700).
    chmod(&m.root(), 0o755);
    let w = m.path("w");
    let t = m.path("t");
    let o = m.path("o");
    let own = m.path("own");
    for p in [&w, &t, &o, &own] {
        fs::write(p, b"before\n").expect("write");
    }
    chmod(&w, 0o6777);
    chmod(&t, 0o4777);
    chmod(&o, 0o2777);
    chmod(&own, 0o4755);

    let r = as_nobody(&["sh", "-c", &format!("echo after >> '{}'", w.display())]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(fs::read(&w).expect("read"), b"before\nafter\n");
    assert_eq!(mode(&w), 0o777, "a write by nobody");

    let r = as_nobody(&["truncate", "-s", "3", t.to_str().expect("utf-8")]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(fs::read(&t).expect("read"), b"bef");
    assert_eq!(mode(&t), 0o777, "a truncate by nobody");

    let r = as_nobody(&["sh", "-c", &format!(": > '{}'", o.display())]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(fs::read(&o).expect("read"), b"");
    assert_eq!(mode(&o), 0o777, "an O_TRUNC open by nobody");

    // root (CAP_FSETID) writes and truncates without dropping them.
    fs::OpenOptions::new()
        .append(true)
        .open(&own)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"root\n"))
        .expect("append");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&own)
        .and_then(|f| f.set_len(3))
        .expect("truncate");
    assert_eq!(mode(&own), 0o4755, "a write and truncate by root");

    m.remount();
    assert_eq!(mode(&w), 0o777);
    assert_eq!(mode(&t), 0o777);
    assert_eq!(mode(&o), 0o777);
    assert_eq!(mode(&own), 0o4755);
}

/// A file capability (`security.capability`, VFS_CAP_REVISION_2): the
/// effective flag and CAP_NET_RAW permitted.
fn net_raw_capability() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

#[test]
fn writes_chowns_and_truncates_drop_file_capabilities() {
    let m = Mount::new();
    let p = m.path("tool");
    fs::write(&p, b"\x7fELF").expect("write");
    let cap = "security.capability";
    let set = || setxattr(&p, cap, &net_raw_capability(), 0).expect("set a capability");
    let gone = |after: &str| {
        let e = getxattr(&p, cap).expect_err(after);
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA), "{after}: {e}");
    };
    set();
    assert_eq!(getxattr(&p, cap).expect("get"), net_raw_capability());
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
        .expect("append");
    gone("a write by root");
    set();
    chown(&p, 65534);
    gone("a chown");
    set();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(2))
        .expect("truncate");
    gone("a truncate");
    // Set again, it stays until the next write.
    set();
    assert_eq!(getxattr(&p, cap).expect("get"), net_raw_capability());
}

/// In a child running as nobody: copy_file_range all of `src` into `dst`
/// from offset 0. Returns the child's exit code (0: copied whole).
fn copy_as_nobody(src: &Path, dst: &Path, len: usize) -> i32 {
    let (src, dst) = (crate::mount_util::cpath(src), crate::mount_util::cpath(dst));
    // SAFETY: the child makes raw system calls only, then _exits.
    unsafe {
        match libc::fork() {
            0 => {
                let ok = libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) == 0
                    && libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) == 0;
                let i = libc::open(src.as_ptr(), libc::O_RDONLY);
                let o = libc::open(dst.as_ptr(), libc::O_WRONLY);
                let n =
                    libc::copy_file_range(i, std::ptr::null_mut(), o, std::ptr::null_mut(), len, 0);
                libc::_exit(if ok && i >= 0 && o >= 0 && n == len as isize {
                    0
                } else {
                    1
                })
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => {
                let mut status = 0;
                assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                libc::WEXITSTATUS(status)
            }
        }
    }
}

#[test]
fn a_whole_file_copied_in_by_another_user_drops_setuid() {
    let m = Mount::new();
    chmod(&m.root(), 0o755);
    let src = m.path("src");
    let data = vec![7u8; 300_000];
    fs::write(&src, &data).expect("write");
    chmod(&src, 0o644);
    for (name, before, after) in [("by-nobody", 0o4777, 0o777), ("sgid", 0o2777, 0o777)] {
        let dst = m.path(name);
        fs::write(&dst, b"").expect("create");
        chmod(&dst, before);
        assert_eq!(
            copy_as_nobody(&src, &dst, data.len()),
            0,
            "copy into {name}"
        );
        assert_eq!(fs::read(&dst).expect("read"), data, "{name}");
        assert_eq!(mode(&dst), after, "{name} after a copy by nobody");
    }
}
