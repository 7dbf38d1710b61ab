//! Special files in a mount: a FIFO, a Unix socket, character and block
//! devices (made by root), with their type and rdev, before and after a
//! remount. (Mounts are `nodev`: the devices exist but cannot be opened.)

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

use crate::mount_util::{check, cpath, Mount};

/// This process's umask, read without changing it (umask(2) would race
/// with the other tests' file creations).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("a Umask line");
    u32::from_str_radix(line.trim(), 8).expect("an octal umask")
}

#[test]
fn fifo_socket_and_devices_have_the_right_type_and_rdev() {
    let mut m = Mount::new();
    let mask = umask();
    // SAFETY: mkfifo/mknod with valid C paths.
    check(unsafe { libc::mkfifo(cpath(&m.path("fifo")).as_ptr(), 0o640) }).expect("mkfifo");
    let chr = libc::makedev(1, 3); // like /dev/null
    let blk = libc::makedev(7, 42); // a loop device number
    check(unsafe { libc::mknod(cpath(&m.path("chr")).as_ptr(), libc::S_IFCHR | 0o600, chr) })
        .expect("mknod c");
    check(unsafe { libc::mknod(cpath(&m.path("blk")).as_ptr(), libc::S_IFBLK | 0o660, blk) })
        .expect("mknod b");
    // mknod of a regular file works too.
    check(unsafe { libc::mknod(cpath(&m.path("reg")).as_ptr(), libc::S_IFREG | 0o644, 0) })
        .expect("mknod regular");

    // A Unix socket bound inside the mount, and a connection through it.
    let sock = m.path("sock");
    let listener = UnixListener::bind(&sock).expect("bind a Unix socket in the mount");
    let mut client = UnixStream::connect(&sock).expect("connect to the socket in the mount");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("send");
    let mut got = [0u8; 4];
    server.read_exact(&mut got).expect("receive");
    assert_eq!(&got, b"ping");

    // The FIFO carries bytes (O_RDWR: no need for a second opener).
    let mut fifo = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(m.path("fifo"))
        .expect("open the fifo");
    fifo.write_all(b"through the pipe")
        .expect("write to the fifo");
    let mut buf = [0u8; 16];
    fifo.read_exact(&mut buf).expect("read from the fifo");
    assert_eq!(&buf, b"through the pipe");
    drop(fifo);

    let check_all = |m: &Mount, when: &str| {
        let meta = |name: &str| {
            fs::symlink_metadata(m.path(name))
                .unwrap_or_else(|e| panic!("{when}: lstat {name}: {e}"))
        };
        let fifo = meta("fifo");
        assert!(
            fifo.file_type().is_fifo(),
            "{when}: fifo type {:o}",
            fifo.mode()
        );
        assert_eq!(fifo.mode() & 0o7777, 0o640 & !mask, "{when}: fifo mode");
        let s = meta("sock");
        assert!(
            s.file_type().is_socket(),
            "{when}: socket type {:o}",
            s.mode()
        );
        let c = meta("chr");
        assert!(
            c.file_type().is_char_device(),
            "{when}: char device type {:o}",
            c.mode()
        );
        assert_eq!(c.rdev(), chr, "{when}: char device rdev");
        assert_eq!(c.mode() & 0o7777, 0o600 & !mask, "{when}: char device mode");
        let b = meta("blk");
        assert!(
            b.file_type().is_block_device(),
            "{when}: block device type {:o}",
            b.mode()
        );
        assert_eq!(b.rdev(), blk, "{when}: block device rdev");
        assert_eq!(
            b.mode() & 0o7777,
            0o660 & !mask,
            "{when}: block device mode"
        );
        let r = meta("reg");
        assert!(
            r.file_type().is_file() && r.len() == 0,
            "{when}: mknod S_IFREG"
        );
        let mut names: Vec<String> = fs::read_dir(m.dir())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["blk", "chr", "fifo", "reg", "sock"],
            "{when}: listing"
        );
        // readdir's d_type agrees with stat.
        for e in fs::read_dir(m.dir()).expect("readdir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("d_type");
            let st = fs::symlink_metadata(e.path()).expect("lstat").file_type();
            assert_eq!(ft, st, "{when}: d_type of {:?}", e.file_name());
        }
    };
    check_all(&m, "mounted");
    drop((client, server, listener));
    m.remount();
    check_all(&m, "after a remount");
    // Devices on a nodev mount cannot be opened.
    let err = fs::File::open(m.path("chr")).expect_err("opening a device on a nodev mount");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EACCES),
        "open of a device: {err}"
    );
}
