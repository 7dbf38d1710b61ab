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

#[test]
fn bash_completions_parse_and_name_the_commands() {
    let (code, script) = backer(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    for word in ["mount", "stop", "restore", "--import"] {
        assert!(script.contains(word), "{word} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backer.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "{check:?}");
    for shell in ["zsh", "fish"] {
        let (code, script) = backer(&["completions", shell]);
        assert_eq!(code, Some(0));
        assert!(
            script.contains("backer") && script.contains("mount"),
            "{shell}"
        );
    }
    assert_eq!(backer(&["completions", "tcsh"]).0, Some(2));
}

#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = backer(&["man", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(0));
    for page in [
        "backer.1",
        "backer-mount.1",
        "backer-stop.1",
        "backer-peer-add.1",
    ] {
        let path = dir.path().join(page);
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(roff.starts_with(".ie") || roff.contains(".TH"), "{page}");
        // `man -l` where man-db is installed (it is on Debian desktops).
        if let Ok(out) = Command::new("man").arg("-l").arg(&path).output() {
            assert!(out.status.success(), "{page}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        }
    }
}
