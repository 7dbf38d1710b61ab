//! Real mounts for the tests: [`Mount`] inits a store in a temporary folder,
//! mounts it with `backer mount` and, whatever happens to the test, unmounts
//! it and waits for the node to exit when dropped. Plus small helpers the
//! mount tests share: polling with a deadline, mountinfo, errno checks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backer_tests::{Run, TempStore};

/// How long anything that should happen "soon" may take before a test
/// fails: generous, for a loaded 2-core CI machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `done` every 10 ms until it holds; panics after [`DEADLINE`].
pub(crate) fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `path` as a C string, for libc calls.
pub(crate) fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path with a NUL byte")
}

/// The errno of a failed call; panics (with `what`) if it succeeded.
pub(crate) fn errno_of<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: not an OS error: {e}")),
    }
}

/// Asserts that `r` failed with exactly `want` (a libc errno constant).
#[track_caller]
pub(crate) fn assert_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) {
    let got = errno_of(what, r);
    assert_eq!(
        got,
        want,
        "{what}: got errno {got} ({}), want {want} ({})",
        io::Error::from_raw_os_error(got),
        io::Error::from_raw_os_error(want)
    );
}

/// Turns a libc return value (-1 on error) into an `io::Result`.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`check`], for calls returning `ssize_t`.
pub(crate) fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Asserts two byte strings are equal without printing megabytes: names
/// the first differing offset and the lengths.
#[track_caller]
pub(crate) fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: contents differ: got {} bytes, want {}; first difference at offset {first} \
         (got {:?}, want {:?})",
        got.len(),
        want.len(),
        got.get(first),
        want.get(first)
    );
}

/// The file system type mounted on top at `dir` according to
/// `mountinfo` (the text of a /proc/<pid>/mountinfo), if any.
pub(crate) fn fs_type_in(mountinfo: &str, dir: &Path) -> Option<String> {
    let want = dir.as_os_str().as_bytes();
    let mut found = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        if unescape(point) != want {
            continue;
        }
        found = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string);
    }
    found
}

/// The mount options (per-mount and per-superblock, comma-joined) of the
/// mount on top at `dir` in `mountinfo`.
pub(crate) fn mount_options_in(mountinfo: &str, dir: &Path) -> Option<String> {
    let want = dir.as_os_str().as_bytes();
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 || unescape(fields[4]) != want {
            continue;
        }
        let superopts = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').nth(2))
            .unwrap_or("");
        found = Some(format!("{},{superopts}", fields[5]));
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((digits[0] - b'0') * 64 + (digits[1] - b'0') * 8 + (digits[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The file system type mounted at `dir` in this process's namespace.
pub(crate) fn fs_type_at(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("cannot read mountinfo");
    fs_type_in(&info, dir)
}

/// Whether a backer FUSE file system is mounted at `dir` (type `fuse` or
/// `fuse.<subtype>`).
pub(crate) fn is_fuse_mounted(dir: &Path) -> bool {
    fs_type_at(dir).is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
}

/// Whether process `pid` still runs. A zombie whose threads have all
/// exited counts as gone (a reaper may be slow to collect it); a zombie
/// leader whose other threads still run (a multi-threaded process being
/// killed) does not: its files, /dev/fuse among them, are not closed yet.
pub(crate) fn process_alive(pid: i32) -> bool {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    if threads > 1 {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // pid (comm) STATE ...: comm may hold spaces and parentheses.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
        {
            Some('Z' | 'X') | None => false,
            Some(_) => true,
        },
        Err(_) => false,
    }
}

/// Asserts that `dir` is a dead FUSE mount: requests that must reach the
/// file system (opendir, the lookup of a name never seen) fail with
/// ENOTCONN. (A plain stat of the mount point may still be answered from
/// the kernel's attribute cache for up to its TTL.)
#[track_caller]
pub(crate) fn assert_dead_mount(dir: &Path) {
    assert_errno(
        "opendir of a dead mount",
        std::fs::read_dir(dir).map(|_| ()),
        libc::ENOTCONN,
    );
    assert_errno(
        "lookup in a dead mount",
        std::fs::symlink_metadata(dir.join("never-looked-up")),
        libc::ENOTCONN,
    );
}

/// Sends `sig` to `pid`.
pub(crate) fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// Runs a program to completion with its output captured.
pub(crate) fn run(program: &str, args: &[&std::ffi::OsStr]) -> Run {
    Run::of(Command::new(program).args(args).stdin(Stdio::null()))
}

/// A store in a temporary folder and a mount point beside it; mounted
/// while [`Mount::is_up`]. Dropping it unmounts (`fusermount3 -u`, else
/// `umount -l`), waits for the node to exit (killing it after
/// [`DEADLINE`]) and removes the folder: a failing test never leaves a
/// mount behind.
#[derive(Debug)]
pub(crate) struct Mount {
    // Declared first: dropped (and so removed) last, after `Drop::drop`.
    store: TempStore,
    dir: PathBuf,
    /// The node's pid while mounted (from `STORE/backer.pid`).
    pid: Option<i32>,
}

impl Mount {
    /// A new store (`backer init`), not mounted; the mount point exists.
    pub(crate) fn init() -> Mount {
        Mount::init_with(|_| ()).1
    }

    /// [`Mount::init`], after `prepare` ran on the empty folder that will
    /// hold the store and the mount point (e.g. mounts a small file
    /// system there); returns what it returned.
    pub(crate) fn init_with<T>(prepare: impl FnOnce(&Path) -> T) -> (T, Mount) {
        let store = TempStore::new();
        let prepared = prepare(store.dir().parent().expect("the store has a parent"));
        Run::of(store.backer().arg("init")).assert_success();
        let root = store
            .dir()
            .parent()
            .expect("the store has a parent")
            .to_path_buf();
        let dir = root.join("mnt");
        std::fs::create_dir(&dir).expect("cannot create the mount point");
        let dir = std::fs::canonicalize(&dir).expect("cannot canonicalise the mount point");
        (
            prepared,
            Mount {
                store,
                dir,
                pid: None,
            },
        )
    }

    /// A new store, mounted.
    pub(crate) fn new() -> Mount {
        let mut m = Mount::init();
        m.mount();
        m
    }

    /// The mount point.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rel` inside the mount.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The store and its command builders.
    pub(crate) fn store(&self) -> &TempStore {
        &self.store
    }

    /// The temporary folder holding the store and the mount point.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir
            .parent()
            .expect("mount point has a parent")
            .to_path_buf()
    }

    /// The running node's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.pid.expect("not mounted")
    }

    /// `STORE/backer.pid`.
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.store.dir().join("backer.pid")
    }

    /// The node's log (`STORE/backer.log`), for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.store.dir().join("backer.log")).unwrap_or_default()
    }

    /// Runs `backer --store S mount DIR` (plus `extra` arguments) and
    /// returns what it did, without checking it.
    pub(crate) fn try_mount(&self, extra: &[&str]) -> Run {
        Run::of(
            self.store
                .backer()
                .arg("mount")
                .arg(&self.dir)
                .args(extra)
                .stdin(Stdio::null()),
        )
    }

    /// Mounts, asserting the contract: exit 0, and the mount is up the
    /// moment the command returns; then notes the node's pid.
    pub(crate) fn mount(&mut self) {
        assert!(self.pid.is_none(), "already mounted");
        let run = self.try_mount(&[]);
        assert_eq!(
            run.code,
            Some(0),
            "backer mount failed: {run:#?}\nlog:\n{}",
            self.log()
        );
        // Noted before asserting anything else, so Drop cleans up.
        self.adopt_running_node();
        assert!(
            is_fuse_mounted(&self.dir),
            "backer mount returned but {} is not a FUSE mount",
            self.dir.display()
        );
    }

    /// Notes the pid of the node that was just started (by `backer
    /// mount` or some other way), so that it is cleaned up on drop.
    pub(crate) fn adopt_running_node(&mut self) {
        let text = std::fs::read_to_string(self.pid_file()).unwrap_or_else(|e| {
            panic!(
                "{} after a mount: {e}\nlog:\n{}",
                self.pid_file().display(),
                self.log()
            )
        });
        let pid: i32 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("pid file {text:?}: {e}"));
        self.pid = Some(pid);
        assert!(
            process_alive(pid),
            "the node {pid} is not running\nlog:\n{}",
            self.log()
        );
    }

    /// Waits until the node `pid` has exited and the mount is gone.
    fn wait_stopped(&self, pid: i32) {
        poll_until(&format!("node {pid} to exit"), || !process_alive(pid));
        poll_until(&format!("{} to be unmounted", self.dir.display()), || {
            !is_fuse_mounted(&self.dir)
        });
    }

    /// Unmounts with `program args... DIR` (e.g. `fusermount3 -u`,
    /// `umount`), asserts that it worked, that the node exits and removes
    /// its pid file.
    ///
    /// "Device or resource busy" is retried for a few seconds: a program
    /// that another test thread spawns holds a copy of every descriptor
    /// open in this process from its fork until its exec, so a file this
    /// test closed can keep the mount busy for that long on a loaded
    /// machine.
    pub(crate) fn unmount_with(&mut self, program: &str, args: &[&str]) {
        self.unmount_with_then(program, args, |_| ());
    }

    /// [`Self::unmount_with`], running `meanwhile` with the node's pid
    /// once the unmount command returned, before waiting for the node
    /// to exit (the node may still be saving its last changes).
    pub(crate) fn unmount_with_then(
        &mut self,
        program: &str,
        args: &[&str],
        meanwhile: impl FnOnce(i32),
    ) {
        let pid = self.pid();
        let attempt = || {
            Run::of(
                Command::new(program)
                    .args(args)
                    .arg(&self.dir)
                    .stdin(Stdio::null()),
            )
        };
        let mut run = attempt();
        for _ in 0..50 {
            if run.code == Some(0) || !run.stderr.contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            run = attempt();
        }
        assert_eq!(run.code, Some(0), "{program} {args:?} failed: {run:#?}");
        meanwhile(pid);
        self.wait_stopped(pid);
        self.pid = None;
        assert!(
            !self.pid_file().exists(),
            "the node exited but left {}\nlog:\n{}",
            self.pid_file().display(),
            self.log()
        );
    }

    /// `fusermount3 -u DIR`, checked as in [`Self::unmount_with`].
    pub(crate) fn unmount(&mut self) {
        self.unmount_with("fusermount3", &["-u"]);
    }

    /// Unmounts cleanly and mounts the same store again.
    pub(crate) fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Sends `sig` to the node and waits until it has exited and the
    /// mount is gone (for SIGTERM and SIGINT, which unmount cleanly).
    pub(crate) fn stop_with_signal(&mut self, sig: libc::c_int) {
        let pid = self.pid();
        signal(pid, sig);
        self.wait_stopped(pid);
        self.pid = None;
    }

    /// `backer stop`, asserting that it worked and that the node has
    /// exited, unmounted, by the time it returns.
    pub(crate) fn stop_with_command(&mut self) -> Run {
        let pid = self.pid();
        let run = Run::of(self.store.backer().arg("stop").stdin(Stdio::null()));
        run.assert_success();
        assert!(
            !process_alive(pid),
            "`backer stop` returned before the node exited"
        );
        assert!(!is_fuse_mounted(&self.dir), "`backer stop` left the mount");
        self.pid = None;
        run
    }

    /// `kill -9` of the node; returns once it is gone. The mount point is
    /// then a dead mount (ENOTCONN) until [`Self::lazy_unmount`] or the
    /// next `backer mount`.
    pub(crate) fn kill9(&mut self) {
        let pid = self.pid();
        signal(pid, libc::SIGKILL);
        poll_until(&format!("node {pid} to die"), || !process_alive(pid));
        self.pid = None;
    }

    /// `fusermount3 -u -z DIR` (after [`Self::kill9`]), asserting success.
    pub(crate) fn lazy_unmount(&mut self) {
        let run = run(
            "fusermount3",
            &["-u".as_ref(), "-z".as_ref(), self.dir.as_os_str()],
        );
        run.assert_success();
        assert!(
            !is_fuse_mounted(&self.dir),
            "still mounted after fusermount3 -u -z"
        );
    }

    /// Best-effort cleanup for Drop: never panics.
    fn cleanup(&mut self) {
        if is_fuse_mounted(&self.dir) {
            let quiet = |program: &str, args: &[&str]| {
                Command::new(program)
                    .args(args)
                    .arg(&self.dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !quiet("fusermount3", &["-u"]) && !quiet("umount", &[]) {
                eprintln!("cleanup: {} busy, detaching it lazily", self.dir.display());
                let _ = quiet("umount", &["-l"]);
            }
        }
        // A node started by a mount that then failed an assertion.
        let pid = self.pid.take().or_else(|| {
            let text = std::fs::read_to_string(self.pid_file()).ok()?;
            text.trim().parse().ok().filter(|&pid| process_alive(pid))
        });
        if let Some(pid) = pid {
            let start = Instant::now();
            while process_alive(pid) && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(10));
            }
            if process_alive(pid) {
                eprintln!("cleanup: node {pid} did not exit after the unmount; killing it");
                // SAFETY: kill(2); no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.dir)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Every regular file, symlink and directory under `dir`, as paths
/// relative to it, sorted (directories included, `dir` itself not).
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            out.push(path.strip_prefix(base).expect("under base").to_path_buf());
            let ft = entry
                .file_type()
                .unwrap_or_else(|e| panic!("file type of {}: {e}", path.display()));
            if ft.is_dir() {
                go(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}
