//! The store is its owner's alone (DESIGN.md, "Local security"; issue 16):
//! every folder 0700 and every file 0600 whatever the umask of whoever
//! ran `backer`, a store of an earlier version tightened when a node opens
//! it, and root refusing a store that belongs to another user.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use backer_tests::{Run, TempStore};

use crate::mount_util::{is_fuse_mounted, poll_until, process_alive, Mount};

/// A node id that is not this store's (Syncthing's test vector).
const OTHER_ID: &str = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2";

/// `nobody`'s uid and gid.
const NOBODY: u32 = 65534;

/// Every path under `dir` (itself included).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if fs::symlink_metadata(dir).expect("stat").is_dir() {
        for ent in fs::read_dir(dir).expect("list") {
            out.extend(walk(&ent.expect("entry").path()));
        }
    }
    out
}

/// Asserts folders 0700, files 0600, and sockets 0600 or stricter.
#[track_caller]
fn assert_private(dir: &Path) {
    for p in walk(dir) {
        let meta = fs::symlink_metadata(&p).expect("stat");
        let mode = meta.mode() & 0o7777;
        let ok = if meta.is_dir() {
            mode == 0o700
        } else if meta.file_type().is_socket() {
            mode & !0o600 == 0
        } else {
            mode == 0o600
        };
        assert!(ok, "{} is {mode:o}", p.display());
    }
}

/// `cmd` run with umask 000, as a careless caller would.
fn with_umask_000(mut cmd: Command) -> Command {
    // SAFETY: umask(2) is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    cmd
}

/// Unmounts `dir` when dropped, so a failing test leaves no mount.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.0)
                .stdin(Stdio::null())
                .status();
        }
    }
}

fn node_pid(store: &Path) -> i32 {
    let text = fs::read_to_string(store.join("backer.pid")).expect("backer.pid");
    text.trim().parse().expect("a pid")
}

#[test]
fn every_file_of_a_store_is_private_under_umask_000() {
    let ts = TempStore::new();
    let store = ts.dir();
    let mnt = ts.dir().with_file_name("mnt");
    fs::create_dir(&mnt).expect("mount point");
    let backer = || with_umask_000(ts.backer());
    Run::of(backer().arg("init")).assert_success();
    Run::of(backer().args(["peer", "add", OTHER_ID])).assert_success();
    Run::of(backer().arg("mount").arg(&mnt).stdin(Stdio::null())).assert_success();
    let guard = Unmount(mnt.clone());
    let pid = node_pid(&store);
    fs::write(mnt.join("secret"), b"TOP-SECRET").expect("write through the mount");
    fs::File::open(mnt.join("secret"))
        .and_then(|f| f.sync_all())
        .expect("fsync");
    let sock = store.join("backer.sock");
    assert!(
        fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()),
        "no control socket"
    );
    // While the node runs (its socket, log and pid file included).
    assert_private(&store);
    Run::of(Command::new("fusermount3").arg("-u").arg(&mnt)).assert_success();
    poll_until("the node to exit", || !process_alive(pid));
    drop(guard);
    // And what it left behind.
    assert_private(&store);
    assert!(store.join("node.key").is_file());
}

#[test]
fn a_store_readable_by_others_is_made_private_when_a_node_opens_it() {
    let mut m = Mount::init();
    let store = m.store().dir();
    for p in walk(&store) {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    m.mount();
    let log = m.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("made it private"))
        .count();
    assert_eq!(lines, 1, "one line says so:\n{log}");
    m.unmount();
    assert_private(&store);
}

/// Asserts that everything under `dir` is owned by nobody.
#[track_caller]
fn assert_owned_by_nobody(dir: &Path) {
    for p in walk(dir) {
        let uid = fs::symlink_metadata(&p).expect("stat").uid();
        assert_eq!(uid, NOBODY, "{} is owned by {uid}", p.display());
    }
}

#[test]
fn root_refuses_a_store_that_belongs_to_another_user() {
    // SAFETY: geteuid(2) cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test runs as root");
    let ts = TempStore::new();
    let store = ts.dir();
    Run::of(ts.backer().arg("init")).assert_success();
    for p in walk(&store) {
        std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let mnt = store.with_file_name("mnt");
    fs::create_dir(&mnt).expect("mount point");
    let _guard = Unmount(mnt.clone());
    let commands: [&[&str]; 5] = [
        &["id"],
        &["status"],
        &["peer", "add", OTHER_ID],
        &["gc"],
        &["mount", mnt.to_str().expect("utf-8")],
    ];
    for args in commands {
        let run = Run::of(ts.backer().args(args).stdin(Stdio::null()));
        let line = run.assert_one_line_failure();
        assert!(line.contains("belongs to user nobody"), "{args:?}: {line}");
    }
    assert!(!is_fuse_mounted(&mnt));
    assert_owned_by_nobody(&store);

    // A store not made yet belongs to the folder it would be made in.
    let home = store.with_file_name("home-of-nobody");
    fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    let run = Run::of(
        ts.bare_command()
            .arg("--store")
            .arg(home.join("backer"))
            .arg("init"),
    );
    run.assert_one_line_failure();
    assert_owned_by_nobody(&home);
}
