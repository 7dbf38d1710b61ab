//! The Debian package of packaging/deb.sh: built from the tests' binary,
//! its file list checked, and installed with `dpkg --root` into a
//! throwaway root, where the binary runs and the helper link resolves.

use std::path::Path;
use std::process::Command;

use backer_tests::{backer_bin, Run};

#[test]
fn the_deb_holds_everything_and_installs() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("no dpkg-deb (not Debian): the package is not built");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb.sh");
    let run = Run::of(
        Command::new(&script)
            .arg("--binary")
            .arg(backer_bin())
            .arg("--out")
            .arg(tmp.path().join("out")),
    );
    run.assert_success();
    let deb = run.last_line().to_string();
    assert!(deb.ends_with(".deb"), "{run:#?}");
    let list = Run::of(Command::new("dpkg-deb").arg("-c").arg(&deb));
    list.assert_success();
    for want in [
        "./usr/bin/backer",
        "./usr/sbin/mount.backer -> ../bin/backer",
        "./usr/lib/systemd/user/backer.service",
        "./usr/lib/systemd/system/backer-replica@.service",
        "./usr/share/bash-completion/completions/backer",
        "./usr/share/zsh/vendor-completions/_backer",
        "./usr/share/fish/vendor_completions.d/backer.fish",
        "./usr/share/man/man1/backer.1.gz",
        "./usr/share/man/man1/backer-mount.1.gz",
    ] {
        assert!(
            list.stdout.contains(want),
            "{want} missing:\n{}",
            list.stdout
        );
    }
    let info = Run::of(Command::new("dpkg-deb").args(["-f", &deb, "Depends"]));
    assert!(info.stdout.contains("fuse3"), "{info:#?}");

    // Installed into an empty root (its dpkg database made here).
    let root = tmp.path().join("root");
    let db = root.join("var/lib/dpkg");
    std::fs::create_dir_all(db.join("info")).unwrap();
    std::fs::create_dir_all(db.join("updates")).unwrap();
    std::fs::write(db.join("status"), "").unwrap();
    std::fs::write(db.join("available"), "").unwrap();
    let install = Run::of(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-depends", "--force-not-root", "-i", &deb]),
    );
    install.assert_success();
    let version = Run::of(Command::new(root.join("usr/bin/backer")).arg("--version"));
    assert_eq!(
        version.assert_success().stdout.trim(),
        format!("backer {}", env!("CARGO_PKG_VERSION"))
    );
    let helper = root.join("usr/sbin/mount.backer");
    assert_eq!(
        std::fs::canonicalize(&helper).unwrap(),
        std::fs::canonicalize(root.join("usr/bin/backer")).unwrap()
    );
    let help = Run::of(Command::new(&helper).arg("--help"));
    assert!(help
        .assert_success()
        .stdout
        .contains("mount.backer STORE DIR"));
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/user/backer.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/backer mount"), "{unit}");
}
