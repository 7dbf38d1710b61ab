//! Which folders are mount points, from /proc/self/mountinfo.

use std::path::Path;

/// What is mounted at a mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The file system type ("fuse", "fuse.backer", "ext4"...).
    pub(crate) fs_type: String,
    /// The source (for backer: the store folder).
    pub(crate) source: String,
    /// The device number, "major:minor" (names the mount's bdi in /sys).
    pub(crate) device: String,
}

/// What is mounted at `dir`, if anything (the top mount).
pub(crate) fn mount_at(dir: &Path) -> Option<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let mut fields = line.split(' ');
        let Some(device) = fields.nth(2) else {
            continue;
        };
        let Some(point) = fields.nth(1) else { continue };
        if unescape(point) != want {
            continue;
        }
        let mut rest = line.split(" - ").nth(1).unwrap_or("").split(' ');
        // The last matching line is the mount on top.
        found = Some(MountEntry {
            fs_type: rest.next().unwrap_or("").to_string(),
            source: unescape(rest.next().unwrap_or("")),
            device: device.to_string(),
        });
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert!(mount_at(Path::new("/")).is_some());
    }
}
