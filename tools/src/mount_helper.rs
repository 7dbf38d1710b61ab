//! The mount(8) helper: the same binary run under the name `mount.backer`
//! (`mount -t backer STORE DIR` runs `/sbin/mount.backer STORE DIR -o ...`).
//!
//! Not available in this build: the FUSE adapter does not exist yet. When it
//! does, [`run`] is the one function to replace.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

/// The name under which the binary acts as the mount helper.
const HELPER_NAME: &str = "mount.backer";

/// Whether this process was started as `mount.backer` (by name, whatever
/// the folder).
pub(crate) fn invoked_as_mount_helper() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| is_helper_name(&argv0))
}

/// Whether `argv0`'s file name is [`HELPER_NAME`].
fn is_helper_name(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(HELPER_NAME))
}

/// Runs as the mount helper. For now: one line to stderr and exit code 1.
pub(crate) fn run() -> ExitCode {
    eprintln!("backer: mount is not available yet in this build");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_helper_name_in_any_folder() {
        assert!(is_helper_name(OsStr::new("mount.backer")));
        assert!(is_helper_name(OsStr::new("/sbin/mount.backer")));
        assert!(!is_helper_name(OsStr::new("/usr/local/bin/backer")));
        assert!(!is_helper_name(OsStr::new("mount.backer.old")));
    }
}
