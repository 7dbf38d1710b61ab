//! Real programs inside a mount: git, SQLite, tar and diff, and the fsx
//! file-system exerciser.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use backer_tests::Run;

use crate::mount_util::Mount;

/// The workspace folder (this crate is `<workspace>/tests`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// The real source trees copied into mounts: the workspace's crates,
/// without build output.
const SOURCE_DIRS: [&str; 4] = ["fs", "replication", "tools", "tests"];

/// Runs `program` with `args` in `cwd`, asserting success.
fn run_in(cwd: &Path, program: &str, args: &[&str]) -> Run {
    let run = Run::of(
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            // git: no user or system configuration, a fixed identity.
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "backer tests")
            .env("GIT_AUTHOR_EMAIL", "tests@backer.invalid")
            .env("GIT_COMMITTER_NAME", "backer tests")
            .env("GIT_COMMITTER_EMAIL", "tests@backer.invalid"),
    );
    assert_eq!(
        run.code,
        Some(0),
        "`{program} {}` in {} failed: {run:#?}",
        args.join(" "),
        cwd.display()
    );
    run
}

/// A tar archive of the workspace's source crates, made outside the mount.
fn source_archive(at: &Path) -> PathBuf {
    let archive = at.join("src.tar");
    let mut args = vec![
        "-cf".to_string(),
        archive.display().to_string(),
        "--exclude=target".to_string(),
        "-C".to_string(),
        workspace().display().to_string(),
    ];
    args.extend(SOURCE_DIRS.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in(at, "tar", &args);
    archive
}

/// `find DIR -printf` of each entry's type, mode, size, owner, mtime
/// (whole seconds: tar keeps no more) and link target, sorted: what
/// `diff -r` does not compare. A folder's size is the file system's own
/// business (ext4 says 4096, backer the number of entries): left out.
/// So is `DIR` itself: the archive does not hold it, so its mtime is when
/// each extraction ran (a second apart when one straddles the tick).
fn listing(dir: &Path) -> String {
    let run = run_in(
        dir,
        "find",
        &[
            ".",
            "-mindepth",
            "1",
            "-printf",
            "%p|%y|%m|%s|%U|%G|%T@|%l\n",
        ],
    );
    let mut lines: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 8, "find output {l:?}");
            if f[1] == "d" {
                f[3] = "-";
            }
            f[6] = f[6].split('.').next().unwrap_or(f[6]);
            f.join("|")
        })
        .collect();
    lines.sort_unstable();
    lines.iter().fold(String::new(), |mut acc, l| {
        let _ = writeln!(acc, "{l}");
        acc
    })
}

#[test]
fn tar_extracts_a_real_tree_identical_to_the_original() {
    let m = Mount::new();
    let outside = m.root().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let archive = source_archive(&outside);
    // The reference: the same archive extracted on the local disk.
    let reference = outside.join("reference");
    std::fs::create_dir(&reference).expect("mkdir");
    run_in(
        &reference,
        "tar",
        &["-xf", archive.to_str().expect("utf-8")],
    );
    let inside = m.path("untarred");
    std::fs::create_dir(&inside).expect("mkdir");
    run_in(&inside, "tar", &["-xf", archive.to_str().expect("utf-8")]);
    let diff = Run::of(Command::new("diff").arg("-r").arg(&reference).arg(&inside));
    assert_eq!(diff.code, Some(0), "diff -r found differences: {diff:#?}");
    assert_eq!(
        listing(&inside),
        listing(&reference),
        "types, modes, sizes, owners, mtimes"
    );
    // And tar's own check of the extracted tree against the archive.
    run_in(
        &inside,
        "tar",
        &["--compare", "-f", archive.to_str().expect("utf-8")],
    );
}

#[test]
fn git_init_add_commit_and_fsck_a_real_source_tree() {
    let m = Mount::new();
    let repo = m.path("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    let mut cp = vec!["-a".to_string()];
    cp.extend(
        SOURCE_DIRS
            .iter()
            .map(|d| workspace().join(d).display().to_string()),
    );
    cp.push(repo.display().to_string());
    let cp: Vec<&str> = cp.iter().map(String::as_str).collect();
    run_in(&repo, "cp", &cp);
    // Build output, if any, is not source.
    for d in SOURCE_DIRS {
        let _ = std::fs::remove_dir_all(repo.join(d).join("target"));
    }
    run_in(&repo, "git", &["init", "-q", "-b", "main"]);
    run_in(&repo, "git", &["add", "-A"]);
    run_in(&repo, "git", &["commit", "-q", "-m", "a real source tree"]);
    // A second commit touching files, then repack (rewrites packs, renames).
    std::fs::write(repo.join("fs/NEW_FILE"), b"second commit\n").expect("write");
    run_in(&repo, "git", &["rm", "-q", "-r", "tools"]);
    run_in(&repo, "git", &["add", "-A"]);
    run_in(&repo, "git", &["commit", "-q", "-m", "second"]);
    run_in(&repo, "git", &["gc", "-q", "--aggressive"]);
    let fsck = run_in(&repo, "git", &["fsck", "--full", "--strict"]);
    assert!(!fsck.stderr.contains("error"), "{fsck:#?}");
    let status = run_in(&repo, "git", &["status", "--porcelain"]);
    assert_eq!(status.stdout, "", "the work tree matches the last commit");
    let count = run_in(&repo, "git", &["rev-list", "--count", "HEAD"]);
    assert_eq!(count.stdout.trim(), "2");
    // The committed files are the originals.
    let ls = run_in(&repo, "git", &["ls-files"]);
    assert!(
        ls.stdout.lines().any(|l| l == "fs/src/lib.rs"),
        "{}",
        ls.stdout
    );
    let original = std::fs::read(workspace().join("fs/src/lib.rs")).expect("read original");
    let show = Command::new("git")
        .args(["show", "HEAD:fs/src/lib.rs"])
        .current_dir(&repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git show");
    assert_eq!(show.stdout, original, "git show of a committed file");
}

/// Runs the `sqlite3` CLI on `db` with `sql` on its standard input.
fn sqlite(db: &Path, sql: &str) -> Run {
    let mut child = Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sqlite3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write to sqlite3");
    let out = child.wait_with_output().expect("sqlite3");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, Some(0), "sqlite3 failed: {run:#?}");
    assert_eq!(run.stderr, "", "sqlite3 complained: {run:#?}");
    run
}

/// 1,000 single-row transactions, each its own BEGIN/COMMIT.
fn transactions(from: usize, to: usize) -> String {
    let mut sql = String::new();
    for i in from..to {
        let _ = writeln!(
            sql,
            "BEGIN; INSERT INTO t(id, body) VALUES ({i}, printf('%.*c', {}, 'x')); \
             UPDATE meta SET n = n + 1; COMMIT;",
            100 + i % 900
        );
    }
    sql
}

#[test]
fn sqlite_survives_a_thousand_transactions_and_checks_clean() {
    let mut m = Mount::new();
    let db = m.path("db.sqlite");
    sqlite(
        &db,
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
         CREATE TABLE meta(n INTEGER NOT NULL); INSERT INTO meta VALUES (0);\n",
    );
    sqlite(&db, &transactions(0, 1000));
    let check = sqlite(
        &db,
        "PRAGMA integrity_check; SELECT count(*), sum(length(body)) FROM t; SELECT n FROM meta;",
    );
    let want_len: usize = (0..1000).map(|i| 100 + i % 900).sum();
    assert_eq!(check.stdout, format!("ok\n1000|{want_len}\n1000\n"));
    // The rollback journal was removed after each transaction.
    assert!(!m.path("db.sqlite-journal").exists());

    // Then WAL mode (shared-memory index, mmap) for another 200.
    sqlite(&db, "PRAGMA journal_mode=WAL;");
    sqlite(&db, &transactions(1000, 1200));
    m.remount();
    let check = sqlite(
        &db,
        "PRAGMA integrity_check; SELECT count(*) FROM t; SELECT n FROM meta;",
    );
    assert_eq!(check.stdout, "ok\n1200\n1200\n", "after a remount");
}

/// The fsx binary: on PATH, else in cargo's bin folder (`cargo install fsx`).
fn fsx_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("fsx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|c| c.join("bin/fsx")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("fsx is not installed: `cargo install fsx --version 0.3.2 --locked` (CI's .ci/run does it)")
        })
}

#[test]
fn fsx_runs_100000_operations_clean() {
    let m = Mount::new();
    let work = m.root().join("fsx-artifacts");
    std::fs::create_dir(&work).expect("mkdir");
    let config = work.join("fsx.toml");
    // Every operation fsx has that a FUSE file system should do; fallocate
    // and hole punching are left out (backer answers EOPNOTSUPP). fsx's
    // default sizes (a 256 KiB file, operations up to 64 KiB): the store
    // keeps every version, and 100,000 operations add about 2 GB to it.
    std::fs::write(
        &config,
        "flen = 262144\n\
         [opsize]\nmax = 65536\nmin = 1\nalign = 1\n\
         [weights]\nclose_open = 2\ninvalidate = 1\nmapread = 10\nmapwrite = 10\n\
         read = 10\nwrite = 10\ntruncate = 5\nfsync = 1\nfdatasync = 1\n\
         sendfile = 2\nposix_fadvise = 2\ncopy_file_range = 2\n",
    )
    .expect("write fsx.toml");
    let file = m.path("fsx.dat");
    let args: [&OsStr; 9] = [
        "-N".as_ref(),
        "100000".as_ref(),
        "-S".as_ref(),
        "42".as_ref(),
        "-f".as_ref(),
        config.as_os_str(),
        "-P".as_ref(),
        work.as_os_str(),
        file.as_os_str(),
    ];
    let run = Run::of(Command::new(fsx_bin()).args(args).stdin(Stdio::null()));
    assert_eq!(run.code, Some(0), "fsx failed: {run:#?}");
    assert!(
        run.stdout.contains("A-OK") || run.stderr.contains("A-OK"),
        "fsx did not report success: {run:#?}"
    );
}
