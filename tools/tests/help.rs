//! The binary's own smoke test: `--help` and `--version` work and list the
//! commands of this build.
//!
//! It has a second job: cargo builds a package's binaries only when that
//! package has an integration test selected, so this file is what makes
//! `cargo test --workspace` put `target/<profile>/backer` in place for the
//! end-to-end tests of the backer-tests crate.

use std::process::Command;

fn backer(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backer"))
        .args(args)
        .output()
        .expect("cannot run backer");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn help_lists_the_commands_of_this_build() {
    let (code, help) = backer(&["--help"]);
    assert_eq!(code, Some(0));
    for word in ["init", "id", "--store"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    assert!(!help.contains("to come"), "a stale promise in:\n{help}");
}

#[test]
fn version_names_the_package_version() {
    let (code, out) = backer(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("backer {}", env!("CARGO_PKG_VERSION")));
}
