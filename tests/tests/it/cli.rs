//! The command line contract of DESIGN.md ("How it is used") for the
//! commands that exist today: `init` and `id`, how the store folder is
//! found, and how errors look.

use std::process::Command;
use std::str::FromStr;

use backer_fs::NodeId;
use backer_tests::{backer_bin, Run, TempStore};

/// Runs `backer --store <dir> init`, checks it worked, returns the id line.
fn init(store: &TempStore) -> String {
    let run = Run::of(store.backer().arg("init"));
    run.assert_success();
    run.last_line().to_string()
}

#[test]
fn init_prints_the_id_that_id_prints_again() {
    let store = TempStore::new();
    let id = init(&store);
    let again = Run::of(store.backer().arg("id"));
    again.assert_success();
    assert_eq!(again.last_line(), id);
    assert!(store.dir().is_dir());
}

#[test]
fn printed_id_parses_and_has_eight_groups_of_seven() {
    let store = TempStore::new();
    let id = init(&store);
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(groups.len(), 8, "{id}");
    for g in &groups {
        assert_eq!(g.len(), 7, "{id}");
        assert!(
            g.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7')),
            "{id}"
        );
    }
    let parsed = NodeId::from_str(&id).expect("the printed id parses");
    assert_eq!(parsed.to_string(), id);
}

#[test]
fn two_stores_have_different_ids() {
    let (a, b) = (TempStore::new(), TempStore::new());
    assert_ne!(init(&a), init(&b));
}

#[test]
fn init_twice_fails_with_one_line() {
    let store = TempStore::new();
    let id = init(&store);
    let second = Run::of(store.backer().arg("init"));
    second.assert_one_line_failure();
    // The first store is untouched.
    let run = Run::of(store.backer().arg("id"));
    assert_eq!(run.assert_success().last_line(), id);
}

#[test]
fn id_without_a_store_says_to_run_init() {
    let store = TempStore::new();
    let run = Run::of(store.backer().arg("id"));
    let line = run.assert_one_line_failure();
    assert!(line.contains("backer init"), "{line}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn backer_store_variable_is_honoured() {
    let store = TempStore::new();
    let run = Run::of(
        store
            .bare_command()
            .env("BACKER_STORE", store.dir())
            .arg("init"),
    );
    let id = run.assert_success().last_line().to_string();
    assert!(store.dir().is_dir());
    let run = Run::of(store.backer().arg("id"));
    assert_eq!(run.assert_success().last_line(), id);
}

#[test]
fn store_flag_beats_backer_store_variable() {
    let (flagged, ignored) = (TempStore::new(), TempStore::new());
    let flagged_id = init(&flagged);
    let ignored_id = init(&ignored);
    let run = Run::of(
        flagged
            .backer()
            .env("BACKER_STORE", ignored.dir())
            .arg("id"),
    );
    assert_eq!(run.assert_success().last_line(), flagged_id);
    assert_ne!(flagged_id, ignored_id);
}

#[test]
fn default_store_is_in_the_xdg_data_dir() {
    let store = TempStore::new();
    let id = Run::of(store.bare_command().arg("init"))
        .assert_success()
        .last_line()
        .to_string();
    assert!(store.home().join(".local/share/backer").is_dir());

    let xdg = store.home().join("xdg");
    let run = Run::of(store.bare_command().env("XDG_DATA_HOME", &xdg).arg("init"));
    let xdg_id = run.assert_success().last_line().to_string();
    assert!(xdg.join("backer").is_dir());
    assert_ne!(id, xdg_id);
}

#[test]
fn unknown_command_is_a_usage_error() {
    let store = TempStore::new();
    let run = Run::of(store.backer().arg("frobnicate"));
    assert_eq!(run.code, Some(2), "{run:#?}");
}

/// Run under the name `mount.backer` (as mount(8) does), the binary is
/// the mount helper; a store that does not exist is a one-line error.
/// (The mounts themselves are tested in `mount_helper`.)
#[cfg(unix)]
#[test]
fn mount_helper_name_with_a_missing_store_fails_with_one_line() {
    let store = TempStore::new();
    std::fs::create_dir_all(store.home()).unwrap();
    let link = store.home().join("mount.backer");
    std::os::unix::fs::symlink(backer_bin(), &link).unwrap();
    let run = Run::of(Command::new(&link).args(["no-such-store", "/mnt"]));
    assert_ne!(run.code, Some(0), "{run:#?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert!(lines[0].contains("no-such-store"), "{run:#?}");
    assert!(!lines[0].contains("panicked"), "{run:#?}");
}

#[test]
fn status_of_a_stopped_store_with_a_broken_config_names_the_line() {
    let store = TempStore::new();
    init(&store);
    std::fs::write(
        store.dir().join("config.toml"),
        "listen = \"127.0.0.1:22000\"\n[retention\nkeep_last = 2\n",
    )
    .unwrap();
    for args in [&["status"][..], &["status", "--json"], &["peer", "list"]] {
        let run = Run::of(store.backer().args(args));
        let line = run.assert_one_line_failure();
        assert!(line.contains("config.toml:2:"), "{args:?}: {line}");
    }
}
