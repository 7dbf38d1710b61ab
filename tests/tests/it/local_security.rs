//! Issue 16's local doors, tried as the review tried them: a socket that
//! serves only its owner and root, `export` and `restore --to` written by
//! the command (never by the node for whoever asks) without set-id bits
//! unless root asks, nothing written through a name swapped for a
//! symlink, and names printed without raw control characters.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use backer_tests::Run;
use serde_json::Value;

use crate::mount_util::Mount;
use crate::posix_meta::as_nobody;

/// Sends each of `lines` to the socket `sock` (one connection) and prints
/// every line the node answers until it closes (a refused connection may
/// end in a reset: the node did not read what was sent), as `user` (`None`: the
/// test's own user, root).
fn socket_talk(sock: &Path, lines: &[&str], user: Option<&str>) -> Run {
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        try:\n\
        \x20   s.sendall(''.join(l + '\\n' for l in sys.argv[2:]).encode())\n\
        \x20   s.shutdown(socket.SHUT_WR)\n\
        except OSError:\n\
        \x20   pass\n\
        out = b''\n\
        try:\n\
        \x20   while True:\n\
        \x20       d = s.recv(65536)\n\
        \x20       if not d:\n\
        \x20           break\n\
        \x20       out += d\n\
        except OSError:\n\
        \x20   pass\n\
        sys.stdout.write(out.decode())\n";
    let sock = sock.to_str().expect("a UTF-8 socket path");
    let mut args = vec!["/usr/bin/python3", "-c", script, sock];
    args.extend_from_slice(lines);
    match user {
        Some("nobody") => as_nobody(&args),
        _ => Run::of(std::process::Command::new(args[0]).args(&args[1..])),
    }
}

/// Writes `data` to `p` and fsyncs it: a file still open is not
/// committed yet, and the kernel closes a FUSE file after `close` returns.
fn write_synced(p: &Path, data: &[u8]) {
    let mut f = fs::File::create(p).expect("create");
    std::io::Write::write_all(&mut f, data).expect("write");
    f.sync_all().expect("fsync");
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

fn backer(m: &Mount, args: &[&str]) -> Run {
    Run::of(m.store().backer().args(args))
}

/// The newest commit's id (`backer log --json`).
fn newest_commit(m: &Mount) -> String {
    let run = backer(m, &["log", "--json"]);
    let log: Value = serde_json::from_str(&run.assert_success().stdout).expect("log json");
    log[0]["commit"].as_str().expect("a commit").to_string()
}

/// A mount holding the file `name` with `data`, committed (by an export
/// to `first`), and that commit's id.
fn committed_file(name: &str, data: &[u8]) -> (Mount, String) {
    let m = Mount::new();
    write_synced(&m.path(name), data);
    backer(&m, &["export", &m.root().join("first").to_string_lossy()]).assert_success();
    let at = newest_commit(&m);
    (m, at)
}

#[test]
fn a_loosened_socket_still_refuses_other_users() {
    let m = Mount::new();
    let sock = m.store().dir().join("backer.sock");
    assert_eq!(mode(&sock), 0o600, "the socket is bound for its owner");
    // Loosen everything on the way, as a umask of 000 would have.
    chmod(&m.root(), 0o755);
    chmod(&m.store().dir(), 0o755);
    chmod(&sock, 0o777);
    let before = backer(&m, &["status", "--json"]);
    let run = socket_talk(
        &sock,
        &[r#"{"req":"gc"}"#, r#"{"req":"status"}"#],
        Some("nobody"),
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one refusal line, then closed: {run:#?}");
    let reply: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    let why = reply["error"].as_str().expect("an error response");
    assert!(why.contains("refused") && why.contains("65534"), "{why}");
    // Nothing was done: no collection ran, the node serves its owner.
    assert!(!m.log().contains("history collection"), "{}", m.log());
    let after = backer(&m, &["status", "--json"]);
    assert_eq!(
        before.assert_success().stdout,
        after.assert_success().stdout
    );
    // Root is served.
    let run = socket_talk(&sock, &[r#"{"req":"status"}"#], None);
    assert!(run.stdout.contains(r#""status""#), "{run:#?}");
}

#[test]
fn the_node_writes_no_folder_for_whoever_asks() {
    let (m, at) = committed_file("f", b"data");
    let to = m.root().join("asked");
    let req = format!(
        r#"{{"req":"restore","path":"f","at":"{at}","to":{}}}"#,
        serde_json::to_string(&to).expect("json")
    );
    let sock = m.store().dir().join("backer.sock");
    let run = socket_talk(&sock, &[&req], None);
    assert!(run.stdout.contains(r#""error""#), "{run:#?}");
    assert!(!to.exists(), "the node wrote {}", to.display());
    // The command writes it itself.
    backer(
        &m,
        &["restore", "f", "--at", &at, "--to", &to.to_string_lossy()],
    )
    .assert_success();
    assert_eq!(fs::read(to.join("f")).expect("read"), b"data");
}

#[test]
fn copies_carry_no_setid_unless_root_asks() {
    let m = Mount::new();
    fs::create_dir(m.path("bin")).expect("mkdir");
    for (name, bits) in [("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o750)] {
        let p = m.path(&format!("bin/{name}"));
        write_synced(&p, b"#!/bin/sh\nid\n");
        chmod(&p, bits);
    }
    let out = |name: &str| m.root().join(name);
    let shown = |name: &str| out(name).to_string_lossy().into_owned();

    backer(&m, &["export", &shown("plain-export")]).assert_success();
    assert_eq!(mode(&out("plain-export/bin/suid")), 0o755);
    assert_eq!(mode(&out("plain-export/bin/sgid")), 0o755);
    assert_eq!(mode(&out("plain-export/bin/plain")), 0o750);
    let at = newest_commit(&m);

    backer(&m, &["export", &shown("kept-export"), "--keep-setid"]).assert_success();
    assert_eq!(mode(&out("kept-export/bin/suid")), 0o4755);
    assert_eq!(mode(&out("kept-export/bin/sgid")), 0o2755);

    let restore = |to: &str, extra: &[&str]| {
        let mut args = vec!["restore", "bin", "--at", &at, "--to", to];
        args.extend_from_slice(extra);
        backer(&m, &args)
    };
    restore(&shown("plain-restore"), &[]).assert_success();
    assert_eq!(mode(&out("plain-restore/bin/suid")), 0o755);
    assert_eq!(mode(&out("plain-restore/bin/sgid")), 0o755);
    restore(&shown("kept-restore"), &["--keep-setid"]).assert_success();
    assert_eq!(mode(&out("kept-restore/bin/suid")), 0o4755);

    // nobody: --keep-setid is refused in one line, and without it the
    // node does not serve another user at all.
    chmod(&m.root(), 0o755);
    let nobody_dir = out("nobody");
    fs::create_dir(&nobody_dir).expect("mkdir");
    std::os::unix::fs::chown(&nobody_dir, Some(65534), Some(65534)).expect("chown");
    let bin = backer_tests::backer_bin();
    let bin = bin.to_str().expect("utf-8");
    let store = m.store().dir();
    let store = store.to_str().expect("utf-8");
    let target = nobody_dir.join("x");
    let target = target.to_str().expect("utf-8");
    let flagged = [
        vec![bin, "--store", store, "export", target, "--keep-setid"],
        vec![
            bin,
            "--store",
            store,
            "restore",
            "bin",
            "--at",
            &at,
            "--to",
            target,
            "--keep-setid",
        ],
    ];
    for args in &flagged {
        let run = as_nobody(args);
        let line = run.assert_one_line_failure();
        assert!(line.contains("root only"), "{line}");
    }
    chmod(&m.store().dir(), 0o755);
    for args in [
        vec![bin, "--store", store, "export", target],
        vec![
            bin, "--store", store, "restore", "bin", "--at", &at, "--to", target,
        ],
    ] {
        // Refused at the socket, or by the store's own permissions.
        as_nobody(&args).assert_one_line_failure();
    }
    let made: Vec<_> = fs::read_dir(&nobody_dir).expect("list").collect();
    assert!(made.is_empty(), "nothing was written for nobody: {made:?}");
}

#[test]
fn a_symlink_in_the_target_folder_is_not_followed() {
    let (m, at) = committed_file("f", b"from history");
    let outside = m.root().join("outside");
    fs::write(&outside, b"untouched").expect("write");
    chmod(&outside, 0o600);
    let before = fs::metadata(&outside).expect("stat");
    let to = m.root().join("to");
    fs::create_dir(&to).expect("mkdir");
    std::os::unix::fs::symlink(&outside, to.join("f")).expect("symlink");
    let run = backer(
        &m,
        &["restore", "f", "--at", &at, "--to", &to.to_string_lossy()],
    );
    run.assert_one_line_failure();
    let after = fs::metadata(&outside).expect("stat");
    assert_eq!(fs::read(&outside).expect("read"), b"untouched");
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
}

#[test]
fn names_with_escape_sequences_print_escaped() {
    let evil = "evil\x1b[2J\x1b]0;pwned\x07name";
    let (m, at) = committed_file(evil, b"x");
    assert!(
        m.root().join("first").join(evil).exists(),
        "the name itself is kept"
    );
    let run = backer(&m, &["log"]);
    run.assert_success();
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    assert!(!run.stdout.contains('\x07'), "{:?}", run.stdout);
    assert!(
        run.stdout.contains(r"evil\x1b[2J\x1b]0;pwned\x07name"),
        "{:?}",
        run.stdout
    );
    let to = m.root().join("to");
    let run = backer(
        &m,
        &["restore", evil, "--at", &at, "--to", &to.to_string_lossy()],
    );
    run.assert_success();
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    assert_eq!(fs::read(to.join(evil)).expect("read"), b"x");
}

#[test]
fn copies_belong_to_the_caller_unless_root_keeps_owners() {
    let m = Mount::new();
    fs::create_dir(m.path("home")).expect("mkdir");
    write_synced(&m.path("home/notes"), b"mine");
    write_synced(&m.path("home/roots"), b"root's");
    chmod(&m.path("home/notes"), 0o4755);
    for p in ["home", "home/notes"] {
        std::os::unix::fs::chown(m.path(p), Some(65534), Some(65534)).expect("chown");
    }
    let out = |name: &str| m.root().join(name);
    let shown = |name: &str| out(name).to_string_lossy().into_owned();
    let owner = |p: &Path| {
        let md = fs::symlink_metadata(p).expect("stat");
        (md.uid(), md.gid())
    };
    backer(&m, &["export", &shown("plain")]).assert_success();
    assert_eq!(owner(&out("plain/home")), (0, 0));
    assert_eq!(owner(&out("plain/home/notes")), (0, 0));
    let at = newest_commit(&m);

    backer(&m, &["export", &shown("owned"), "--keep-owners"]).assert_success();
    assert_eq!(owner(&out("owned/home")), (65534, 65534));
    assert_eq!(owner(&out("owned/home/notes")), (65534, 65534));
    assert_eq!(owner(&out("owned/home/roots")), (0, 0));
    // The chown drops no bit the mode then sets, and sets none it lacks.
    assert_eq!(mode(&out("owned/home/notes")), 0o755);

    let to = shown("restored");
    let args = [
        "restore",
        "home/notes",
        "--at",
        &at,
        "--to",
        &to,
        "--keep-owners",
    ];
    backer(&m, &args).assert_success();
    assert_eq!(owner(&out("restored/notes")), (65534, 65534));

    chmod(&m.root(), 0o755);
    let bin = backer_tests::backer_bin();
    let store = m.store().dir();
    let run = as_nobody(&[
        bin.to_str().expect("utf-8"),
        "--store",
        store.to_str().expect("utf-8"),
        "export",
        "/tmp/never-written",
        "--keep-owners",
    ]);
    assert!(
        run.assert_one_line_failure().contains("root only"),
        "{run:#?}"
    );
    assert!(!Path::new("/tmp/never-written").exists());
}

#[test]
fn another_users_setuid_copy_never_becomes_setuid_root() {
    let m = Mount::new();
    chmod(&m.root(), 0o755);
    fs::create_dir(m.path("shared")).expect("mkdir");
    chmod(&m.path("shared"), 0o777);
    let myid = m.path("shared/myid");
    let myid = myid.to_str().expect("utf-8");
    as_nobody(&["cp", "/usr/bin/id", myid]).assert_success();
    as_nobody(&["chmod", "4755", myid]).assert_success();
    let out = |name: &str| m.root().join(name);
    let shown = |name: &str| out(name).to_string_lossy().into_owned();
    let owner_mode = |p: &Path| {
        let md = fs::symlink_metadata(p).expect("stat");
        (md.uid(), md.mode() & 0o7777)
    };
    let run = backer(&m, &["export", &shown("kept"), "--keep-setid"]);
    run.assert_success();
    assert!(run.stderr.contains("set-id bits dropped"), "{run:#?}");
    assert_eq!(owner_mode(&out("kept/shared/myid")), (0, 0o755));
    let at = newest_commit(&m);
    let to = shown("restored");
    let args = [
        "restore",
        "shared",
        "--at",
        &at,
        "--to",
        &to,
        "--keep-setid",
    ];
    backer(&m, &args).assert_success();
    assert_eq!(owner_mode(&out("restored/shared/myid")), (0, 0o755));
    // Written as its owner, the bit is nobody's privilege, no more.
    let args = ["export", &shown("owned"), "--keep-setid", "--keep-owners"];
    backer(&m, &args).assert_success();
    assert_eq!(owner_mode(&out("owned/shared/myid")), (65534, 0o4755));
}

#[test]
fn a_folder_export_makes_follows_the_callers_umask() {
    let (m, _) = committed_file("f", b"x");
    let out = m.root().join("new/out");
    let cmd = format!(
        "umask 022; exec {} --store {} export {}",
        backer_tests::backer_bin().display(),
        m.store().dir().display(),
        out.display()
    );
    Run::of(std::process::Command::new("sh").args(["-c", &cmd])).assert_success();
    assert_eq!(mode(&out), 0o755, "as mkdir -p would make it");
    assert_eq!(mode(&m.root().join("new")), 0o755);
}
