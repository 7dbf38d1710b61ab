//! `backer mount` as DESIGN.md's contract has it: returns once the mount
//! is up with the node in the background (pid in STORE/backer.pid, logs in
//! STORE/backer.log); `--foreground`; clean unmounts by `fusermount3 -u`,
//! `umount`, SIGTERM and SIGINT; one-line errors; a dead mount left by
//! `kill -9` cleared by the next mount.

use std::fs;
use std::io::Write;
use std::process::Stdio;

use backer_tests::Run;

use crate::mount_util::{
    assert_dead_mount, is_fuse_mounted, poll_until, process_alive, run, Mount, DEADLINE,
};

#[test]
fn mount_returns_with_the_mount_up_and_the_node_in_the_background() {
    let mut m = Mount::init();
    let run = m.try_mount(&[]);
    // The guard takes over the node before any assertion can fail.
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    assert!(
        is_fuse_mounted(m.dir()),
        "not mounted when `backer mount` returned"
    );
    let pid = m.pid();
    assert!(process_alive(pid));
    assert_ne!(pid as u32, std::process::id());
    assert!(
        m.store().dir().join("backer.log").is_file(),
        "no STORE/backer.log"
    );
    fs::write(m.path("hello.txt"), b"hello").expect("write");
    m.unmount();
    assert!(!is_fuse_mounted(m.dir()));
    m.mount();
    assert_eq!(fs::read(m.path("hello.txt")).expect("read"), b"hello");
}

#[test]
fn umount_unmounts_cleanly() {
    let mut m = Mount::new();
    fs::write(m.path("f"), b"kept").expect("write");
    m.unmount_with("umount", &[]);
    m.mount();
    assert_eq!(fs::read(m.path("f")).expect("read"), b"kept");
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let mut m = Mount::new();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let file = format!("before-{name}");
        fs::write(m.path(&file), name).expect("write");
        m.stop_with_signal(sig);
        assert!(
            !m.pid_file().exists(),
            "{name}: the node left its pid file\nlog:\n{}",
            m.log()
        );
        m.mount();
        assert_eq!(
            fs::read_to_string(m.path(&file)).expect("read"),
            name,
            "after {name}"
        );
    }
}

#[test]
fn foreground_mount_stays_until_unmounted_and_exits_0() {
    let m = Mount::init();
    let mut child = m
        .store()
        .backer()
        .arg("mount")
        .arg(m.dir())
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backer mount --foreground");
    // Kill the child if anything below fails (the guard then unmounts).
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let reap = Reap(&mut child);
    poll_until("the foreground mount", || {
        is_fuse_mounted(m.dir()) || reap.0.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(
        reap.0.try_wait().expect("try_wait").is_none(),
        "backer mount --foreground exited instead of serving"
    );
    assert!(is_fuse_mounted(m.dir()));
    let pid = fs::read_to_string(m.pid_file()).expect("pid file");
    assert_eq!(
        pid.trim(),
        reap.0.id().to_string(),
        "the pid file names the foreground process"
    );
    fs::write(m.path("f"), b"foreground").expect("write");
    run("fusermount3", &["-u".as_ref(), m.dir().as_os_str()]).assert_success();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = reap.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the foreground node did not exit after the unmount"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = reap.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(reap);
    let mut m = m;
    m.mount();
    assert_eq!(fs::read(m.path("f")).expect("read"), b"foreground");
}

#[test]
fn a_second_mount_of_a_running_store_fails_with_one_line() {
    let m = Mount::new();
    let other = m.root().join("mnt2");
    fs::create_dir(&other).expect("mkdir");
    let run = Run::of(
        m.store()
            .backer()
            .arg("mount")
            .arg(&other)
            .stdin(Stdio::null()),
    );
    run.assert_one_line_failure();
    assert!(!is_fuse_mounted(&other), "the second mount went up");
    // The first mount is untouched.
    fs::write(m.path("still"), b"up").expect("write to the first mount");
    assert_eq!(fs::read(m.path("still")).expect("read"), b"up");
    assert!(process_alive(m.pid()));
}

#[test]
fn a_missing_mount_point_fails_with_one_line() {
    let m = Mount::init();
    let run = Run::of(
        m.store()
            .backer()
            .arg("mount")
            .arg(m.root().join("does-not-exist"))
            .stdin(Stdio::null()),
    );
    run.assert_one_line_failure();
    assert!(
        !m.pid_file().exists(),
        "a node started for a missing mount point"
    );
}

#[test]
fn mounting_without_a_store_fails_with_one_line() {
    let m = Mount::init();
    let nowhere = m.root().join("no-store");
    let run = Run::of(
        m.store()
            .bare_command()
            .arg("--store")
            .arg(&nowhere)
            .arg("mount")
            .arg(m.dir())
            .stdin(Stdio::null()),
    );
    run.assert_one_line_failure();
    assert!(!is_fuse_mounted(m.dir()));
}

#[test]
fn a_mount_point_in_use_fails_with_one_line() {
    let a = Mount::new();
    // Another store onto a's mount point.
    let b = Mount::init();
    let run = Run::of(
        b.store()
            .backer()
            .arg("mount")
            .arg(a.dir())
            .stdin(Stdio::null()),
    );
    run.assert_one_line_failure();
    assert!(
        !b.pid_file().exists(),
        "a node started for a busy mount point"
    );
    fs::write(a.path("f"), b"a is still served").expect("write");
}

#[test]
fn the_next_mount_clears_a_dead_mount_left_by_kill_9() {
    let mut m = Mount::new();
    let mut f = fs::File::create(m.path("durable")).expect("create");
    f.write_all(b"fsynced before the crash").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    m.kill9();
    assert_dead_mount(m.dir());
    // No fusermount3 here: backer mount must detect and clear it.
    m.mount();
    assert_eq!(
        fs::read(m.path("durable")).expect("read"),
        b"fsynced before the crash"
    );
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let count = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(m.dir().to_str().expect("utf-8")))
        .count();
    assert_eq!(
        count, 1,
        "one mount at the mount point, not a stack:\n{info}"
    );
}
