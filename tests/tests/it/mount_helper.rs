//! The mount(8) helper: the backer binary run as `mount.backer`, directly
//! and through `mount -t backer` and an fstab line (`mount -T FSTAB DIR`).
//!
//! mount(8) looks for helpers only in `/sbin:/sbin/fs.d:/sbin/fs` (fixed
//! in libmount; no variable changes it, and `-i` means "never call a
//! helper"). So that the tests change nothing on the machine, they run
//! mount(8) in a private mount namespace (`unshare --mount`) where an
//! overlay on /usr/sbin (/sbin links to it) adds `mount.backer` -> the
//! backer binary under test. The FUSE mount then exists only in that
//! namespace, which lives as long as the node: the tests reach it through
//! `/proc/<node>/root`, unmount it with `nsenter -m umount`, and on failure
//! stop the node, which takes the namespace and its mounts with it.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use backer_tests::{backer_bin, Run};

use crate::mount_util::{
    fs_type_in, is_fuse_mounted, mount_options_in, poll_until, process_alive, signal, Mount,
};

/// A folder holding `mount.backer`, a link to the backer binary.
fn helper_dir(m: &Mount) -> PathBuf {
    let dir = m.root().join("helper");
    fs::create_dir(&dir).expect("mkdir helper");
    symlink(backer_bin(), dir.join("mount.backer")).expect("link mount.backer");
    dir
}

#[test]
fn mount_backer_run_directly_mounts_and_canonicalises_the_store() {
    let mut m = Mount::init();
    let helper = helper_dir(&m).join("mount.backer");
    // The store given relative to the working folder, with mount(8)'s flags.
    let run = Run::of(
        Command::new(&helper)
            .current_dir(m.root())
            .args(["store".as_ref(), m.dir().as_os_str()])
            .args(["-n", "-s", "-o", "rw,noatime,nosuid,nodev"])
            .env_remove("BACKER_STORE")
            .stdin(Stdio::null()),
    );
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    assert!(
        is_fuse_mounted(m.dir()),
        "mount.backer returned before the mount was up"
    );
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == m.dir().to_str())
        .expect("a mountinfo line");
    let source = line.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1));
    let store = fs::canonicalize(m.store().dir()).expect("canonicalize");
    assert_eq!(
        source,
        store.to_str(),
        "the mount's source is the canonical store path"
    );
    fs::write(m.path("f"), b"via mount.backer").expect("write");
    m.unmount_with("umount", &[]);
    m.mount();
    assert_eq!(fs::read(m.path("f")).expect("read"), b"via mount.backer");
}

#[test]
fn mount_backer_ro_mounts_read_only() {
    let mut m = Mount::new();
    fs::write(m.path("f"), b"written before").expect("write");
    m.unmount();
    let helper = helper_dir(&m).join("mount.backer");
    let run = Run::of(
        Command::new(&helper)
            .arg(m.store().dir())
            .arg(m.dir())
            .args(["-o", "ro"])
            .stdin(Stdio::null()),
    );
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let opts = mount_options_in(&info, m.dir()).expect("mounted");
    assert!(opts.split(',').any(|o| o == "ro"), "options {opts}");
    assert_eq!(fs::read(m.path("f")).expect("read"), b"written before");
    let err = fs::write(m.path("g"), b"x").expect_err("a write on a ro mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    m.unmount();
}

#[test]
fn mount_backer_refuses_an_unknown_option_with_one_line() {
    let m = Mount::init();
    let helper = helper_dir(&m).join("mount.backer");
    let run = Run::of(
        Command::new(&helper)
            .arg(m.store().dir())
            .arg(m.dir())
            .args(["-o", "rw,frobnicate"])
            .stdin(Stdio::null()),
    );
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
    assert!(!is_fuse_mounted(m.dir()));
}

/// A node started by mount(8) in a private mount namespace. Dropping it
/// stops the node if it still runs (its namespace and mount go with it).
struct NsNode {
    pid: i32,
}

impl NsNode {
    /// The mount at `dir` as seen from the node's namespace.
    fn view(&self, dir: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid))
            .join(dir.strip_prefix("/").expect("absolute"))
    }

    fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).expect("the node's mountinfo")
    }

    /// `umount DIR` inside the node's namespace; the node must then exit.
    fn umount(self, dir: &Path) {
        let run = Run::of(
            Command::new("nsenter")
                .arg("--target")
                .arg(self.pid.to_string())
                .arg("--mount")
                .arg("umount")
                .arg(dir)
                .stdin(Stdio::null()),
        );
        assert_eq!(
            run.code,
            Some(0),
            "umount in the node's namespace: {run:#?}"
        );
        let pid = self.pid;
        poll_until(&format!("node {pid} to exit after umount"), || {
            !process_alive(pid)
        });
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if process_alive(self.pid) {
            signal(self.pid, libc::SIGTERM);
            let start = std::time::Instant::now();
            while process_alive(self.pid) && start.elapsed() < crate::mount_util::DEADLINE {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if process_alive(self.pid) {
                signal(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// Runs `mount ARGS...` in a new private mount namespace whose /usr/sbin
/// also holds `helper/mount.backer`; returns the node it started.
fn mount_in_namespace(m: &Mount, helper: &Path, args: &[&OsStr]) -> NsNode {
    let script = r#"
        helper=$1; shift
        mount -t overlay overlay -o "lowerdir=$helper:/usr/sbin" /usr/sbin || exit 100
        [ -x /sbin/mount.backer ] || { echo "no /sbin/mount.backer in the namespace" >&2; exit 101; }
        exec mount "$@"
    "#;
    let run = Run::of(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(helper)
            .args(args)
            .stdin(Stdio::null()),
    );
    let node = fs::read_to_string(m.pid_file())
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .map(|pid| NsNode { pid });
    assert_eq!(
        run.code,
        Some(0),
        "mount {args:?} failed: {run:#?}\nlog:\n{}",
        m.log()
    );
    let node = node.expect("the node wrote no pid file");
    assert!(
        process_alive(node.pid),
        "the node is not running\nlog:\n{}",
        m.log()
    );
    node
}

/// Checks the node's namespace has the FUSE mount at `dir` and ours does
/// not (the machine's mount table is untouched), and that files go
/// through it.
fn check_namespaced_mount(m: &Mount, node: &NsNode, file: &str, content: &[u8]) {
    let fstype = fs_type_in(&node.mountinfo(), m.dir());
    assert!(
        fstype.as_deref().is_some_and(|t| t.starts_with("fuse")),
        "the node's namespace has {fstype:?} at {}",
        m.dir().display()
    );
    assert!(
        !is_fuse_mounted(m.dir()),
        "the mount leaked into the test's namespace"
    );
    let path = node.view(m.dir()).join(file);
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    assert_eq!(fs::read(&path).expect("read back"), content);
}

#[test]
fn mount_t_backer_and_an_fstab_line_mount_and_umount() {
    let m = Mount::init();
    let helper = helper_dir(&m);
    let store = m.store().dir();

    // mount -t backer STORE DIR
    let node = mount_in_namespace(
        &m,
        &helper,
        &[
            "-t".as_ref(),
            "backer".as_ref(),
            store.as_os_str(),
            m.dir().as_os_str(),
        ],
    );
    check_namespaced_mount(&m, &node, "by-mount-t", b"mount -t backer");
    node.umount(m.dir());
    assert!(
        !m.pid_file().exists(),
        "the node left its pid file after umount"
    );

    // An fstab line, in a temporary fstab: mount -T FSTAB DIR
    let fstab = m.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} backer defaults 0 0\n",
            store.display(),
            m.dir().display()
        ),
    )
    .expect("write fstab");
    let node = mount_in_namespace(
        &m,
        &helper,
        &["-T".as_ref(), fstab.as_os_str(), m.dir().as_os_str()],
    );
    check_namespaced_mount(&m, &node, "by-fstab", b"fstab line");
    assert_eq!(
        fs::read(node.view(m.dir()).join("by-mount-t")).expect("read the first mount's file"),
        b"mount -t backer"
    );
    node.umount(m.dir());
    assert!(
        !m.pid_file().exists(),
        "the node left its pid file after umount"
    );
}

/// Every path under `dir` (itself included) with its owner.
fn owners(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![(
        dir.to_path_buf(),
        fs::symlink_metadata(dir).expect("stat").uid(),
    )];
    if fs::symlink_metadata(dir).expect("stat").is_dir() {
        for ent in fs::read_dir(dir).expect("list") {
            out.extend(owners(&ent.expect("entry").path()));
        }
    }
    out
}

/// Makes `m`'s store nobody's (uid and gid 65534), who must reach the
/// store and the mount point; returns the store folder.
fn give_store_to_nobody(m: &Mount) -> PathBuf {
    let store = m.store().dir();
    let chown = Run::of(Command::new("chown").args([
        "-R".as_ref(),
        "65534:65534".as_ref(),
        store.as_os_str(),
    ]));
    chown.assert_success();
    fs::set_permissions(
        m.root(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    store
}

#[test]
fn root_mounts_a_users_store_whose_files_stay_the_users() {
    let mut m = Mount::init();
    let store = give_store_to_nobody(&m);
    let helper = helper_dir(&m).join("mount.backer");
    let run = Run::of(
        Command::new(&helper)
            .args([store.as_os_str(), m.dir().as_os_str()])
            .env_remove("BACKER_STORE")
            .stdin(Stdio::null()),
    );
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    fs::write(m.path("f"), b"root's write").expect("write");
    let f = fs::File::open(m.path("f")).expect("open");
    f.sync_all().expect("fsync");
    drop(f);
    m.unmount_with("umount", &[]);
    let foreign: Vec<_> = owners(&store)
        .into_iter()
        .filter(|(_, uid)| *uid != 65534)
        .collect();
    assert!(
        foreign.is_empty(),
        "files the owner cannot use: {foreign:?}"
    );
    // And the owner's own command opens it.
    let bin = backer_bin();
    let run = crate::posix_meta::as_nobody(&[
        bin.to_str().expect("utf-8"),
        "--store",
        store.to_str().expect("utf-8"),
        "id",
    ]);
    run.assert_success();
}

#[test]
fn mount_backer_help_prints_its_usage() {
    let m = Mount::init();
    let helper = helper_dir(&m).join("mount.backer");
    for flag in ["--help", "-h"] {
        let run = Run::of(Command::new(&helper).arg(flag).stdin(Stdio::null()));
        run.assert_success();
        assert!(
            run.stdout.contains("usage: mount.backer STORE DIR"),
            "{run:#?}"
        );
        assert!(run.stdout.contains("listen=ADDR"), "{run:#?}");
    }
}

#[test]
fn mount_backer_listens_where_o_listen_says_and_shows_as_fuse_backer() {
    let mut m = Mount::init();
    let helper = helper_dir(&m).join("mount.backer");
    let addr = crate::mirror_util::free_addr();
    let run = Run::of(
        Command::new(&helper)
            .arg(m.store().dir())
            .arg(m.dir())
            .args(["-o", &format!("rw,listen={addr}")])
            .stdin(Stdio::null()),
    );
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    let status = crate::mirror_util::status(m.store()).expect("status");
    assert_eq!(status["listen"].as_str(), Some(addr.as_str()), "{status}");
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert_eq!(
        fs_type_in(&info, m.dir()).as_deref(),
        Some("fuse.backer"),
        "{info}"
    );
    let findmnt = Run::of(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE"])
            .arg(m.dir()),
    );
    assert_eq!(findmnt.stdout.trim(), "fuse.backer", "{findmnt:#?}");
    m.unmount();
}

/// Root's node acting as a store's owner (as the one the helper starts)
/// without allow_other makes the mount the owner's (user_id), so the
/// owner gets in: a mount with root's user_id would shut them out.
#[test]
fn root_acting_as_the_owner_without_allow_other_lets_the_owner_in() {
    let mut m = Mount::init();
    give_store_to_nobody(&m);
    let run = Run::of(
        m.store()
            .backer()
            .env("BACKER_AS_STORE_OWNER", "1")
            .arg("mount")
            .arg(m.dir())
            .arg("--no-allow-other")
            .stdin(Stdio::null()),
    );
    if run.code == Some(0) {
        m.adopt_running_node();
    }
    assert_eq!(run.code, Some(0), "{run:#?}\nlog:\n{}", m.log());
    let ls = crate::posix_meta::as_nobody(&["ls", "-a", m.dir().to_str().expect("utf-8")]);
    ls.assert_success();
    // The owner talks to the node root runs for them, over its socket.
    let bin = backer_bin();
    let status = crate::posix_meta::as_nobody(&[
        bin.to_str().expect("utf-8"),
        "--store",
        m.store().dir().to_str().expect("utf-8"),
        "status",
        "--json",
    ]);
    status.assert_success();
    assert!(status.stdout.contains("\"pid\""), "{status:#?}");
    m.unmount_with("umount", &[]);
}
