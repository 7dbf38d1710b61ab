//! Running backer as a service: `backer stop`, and the systemd units of
//! packaging/systemd (their command lines, readiness over
//! `$NOTIFY_SOCKET`, `systemd-analyze verify`).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use backer_tests::{backer_bin, Run, TempStore};

use crate::mount_util::{is_fuse_mounted, poll_until, process_alive, Mount, DEADLINE};

#[test]
fn stop_unmounts_cleanly_and_the_store_opens_again() {
    let mut m = Mount::new();
    std::fs::write(m.path("kept.txt"), b"still here").unwrap();
    let pid = m.pid();
    let run = m.stop_with_command();
    assert!(run.stdout.contains(&pid.to_string()), "{run:#?}");
    assert!(!m.pid_file().exists(), "the node left its pid file");
    m.mount();
    assert_eq!(std::fs::read(m.path("kept.txt")).unwrap(), b"still here");
}

#[test]
fn stop_with_no_node_is_a_one_line_error() {
    let m = Mount::init();
    let run = Run::of(m.store().backer().arg("stop"));
    let line = run.assert_one_line_failure();
    assert!(line.contains("no node runs"), "{line}");
    let none = TempStore::new();
    let run = Run::of(none.backer().arg("stop"));
    assert!(run.assert_one_line_failure().contains("backer init"));
}

/// The repository's packaging/systemd folder.
fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd")
}

/// The unit `name` with its binary folder set to where the tests' backer
/// is (install.sh and the package put their own there).
fn unit_text(name: &str) -> String {
    let text = std::fs::read_to_string(units_dir().join(name)).unwrap();
    let bin_dir = backer_bin().parent().unwrap().to_path_buf();
    text.replace("@BINDIR@", &bin_dir.display().to_string())
}

/// The words of the unit's `ExecStart=` line, `${BACKER_DIR}` set to `dir`.
fn exec_start(unit: &str, dir: &Path) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    line.split_whitespace()
        .map(|w| w.replace("${BACKER_DIR}", &dir.display().to_string()))
        .collect()
}

/// Starts the `ExecStart=` line of `unit` (its folder `dir`) on `store`,
/// as systemd would, with `$NOTIFY_SOCKET` a fresh socket beside the
/// store; returns the node and that socket.
fn start_unit(unit: &str, dir: &Path, store: &Path) -> (Child, UnixDatagram) {
    let argv = exec_start(&unit_text(unit), dir);
    let sock_path = store.parent().unwrap().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("BACKER_STORE", store)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock)
}

#[test]
fn the_user_units_command_reports_ready_once_the_mount_is_up() {
    let m = Mount::init();
    let (mut child, sock) = start_unit("backer.service", m.dir(), &m.store().dir());
    let mut buf = [0u8; 256];
    let got = sock.recv(&mut buf);
    // Checked before anything can fail, so the node is always stopped.
    let mounted = is_fuse_mounted(m.dir());
    let stop = Run::of(m.store().backer().arg("stop"));
    let status = child.wait().unwrap();
    let n = got.expect("no readiness notification");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(mounted, "READY=1 came before the mount was up");
    stop.assert_success();
    assert!(status.success(), "{status}");
    let n = sock.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn the_replica_unit_reports_ready_and_stops() {
    let store = TempStore::new();
    Run::of(store.backer().arg("init")).assert_success();
    let (mut child, sock) = start_unit("backer-replica@.service", Path::new("/"), &store.dir());
    let mut buf = [0u8; 256];
    let got = sock.recv(&mut buf);
    let pid = child.id() as i32;
    // The socket answers once READY=1 is sent; `stop` waits for the node.
    poll_until("the replica's socket", || {
        store.dir().join("backer.sock").exists() || !process_alive(pid)
    });
    let stop = Run::of(store.backer().arg("stop"));
    let status = child.wait().unwrap();
    assert_eq!(&buf[..got.expect("no READY=1")], b"READY=1");
    stop.assert_success();
    assert!(status.success(), "{status}");
}

#[test]
fn unit_files_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        // .ci/run installs systemd, so CI always checks them.
        eprintln!("systemd-analyze is not installed: unit files not verified");
        return;
    };
    assert!(probe.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in ["backer.service", "backer-replica@.service"] {
        let p = tmp.path().join(name);
        std::fs::write(&p, unit_text(name)).unwrap();
        paths.push(p);
    }
    let run = Run::of(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&paths),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.trim().is_empty(), "{run:#?}");
}
