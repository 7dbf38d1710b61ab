//! Helpers for backer's integration tests.
//!
//! The tests run the real `backer` binary, built in the same target folder
//! as the test executable (`cargo test --workspace` builds it), against a
//! store in a temporary folder. Each command gets a clean environment for
//! the variables backer reads (`$BACKER_STORE`, `$XDG_DATA_HOME`, `$HOME`),
//! so no test ever touches the real home folder or another test's store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The `backer` binary beside the running test executable
/// (`target/<profile>/backer`; tests run from `target/<profile>/deps/`).
///
/// # Panics
///
/// If the binary is not there, with the command that builds it.
pub fn backer_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not in target/<profile>/deps/");
    let bin = profile_dir.join(format!("backer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the backer binary is not at {}: build it with the same profile first \
         (`cargo build -p backer`, with --release for a release test run), \
         or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A temporary folder with room for a store and a home folder, removed when
/// dropped. The store itself is not created: `backer init` does that.
#[derive(Debug)]
pub struct TempStore {
    root: TempDir,
}

impl TempStore {
    /// A fresh, empty temporary folder.
    pub fn new() -> TempStore {
        let root = tempfile::Builder::new()
            .prefix("backer-test-")
            .tempdir()
            .expect("cannot create a temporary folder");
        TempStore { root }
    }

    /// Where this store lives (`<tmp>/store`; absent until `backer init`).
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("store")
    }

    /// The `$HOME` given to every command (`<tmp>/home`).
    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// `backer` with a clean environment (`$HOME` set to [`Self::home`],
    /// `$BACKER_STORE` and `$XDG_DATA_HOME` unset) and no `--store`: for
    /// tests of how the store folder is found.
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(backer_bin());
        cmd.env("HOME", self.home())
            .env_remove("BACKER_STORE")
            .env_remove("XDG_DATA_HOME");
        cmd
    }

    /// `backer --store <dir>` with the clean environment of
    /// [`Self::bare_command`]; add the subcommand and run it.
    pub fn backer(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--store").arg(self.dir());
        cmd
    }
}

impl Default for TempStore {
    fn default() -> TempStore {
        TempStore::new()
    }
}

/// What a finished command printed and returned.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion and captures its output.
    ///
    /// # Panics
    ///
    /// If the command cannot be started.
    pub fn of(cmd: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// The last line of standard output (empty if there is none).
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }

    /// The lines of standard error.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Asserts a user error as the contract (DESIGN.md) wants it: exit
    /// code 1 and exactly one line on standard error, starting `backer: `,
    /// with no panic. Returns that line.
    ///
    /// # Panics
    ///
    /// With everything the command printed, if it is not such an error.
    #[track_caller]
    pub fn assert_one_line_failure(&self) -> &str {
        assert_eq!(self.code, Some(1), "{self:#?}");
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "{self:#?}");
        assert!(lines[0].starts_with("backer: "), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        lines[0]
    }

    /// Panics with everything the command printed unless it exited 0.
    pub fn assert_success(&self) -> &Run {
        assert_eq!(self.code, Some(0), "command failed: {self:#?}");
        self
    }
}
