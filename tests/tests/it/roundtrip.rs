//! Round trip through a real mount: a mixed tree written through the
//! kernel reads back byte for byte, before and after a remount.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rand::{Rng, RngCore};

use crate::mount_util::{assert_same_bytes, walk, Mount};

/// What one path in the tree should be.
#[derive(Debug)]
enum Want {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Reads `path` through the file system, not the kernel's page cache:
/// flushes the file's dirty pages, drops its cached ones, then reads.
pub(crate) fn read_uncached(path: &Path) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
    // SAFETY: posix_fadvise on a file descriptor we own; advisory only.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise {}: errno {r}", path.display());
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    out
}

/// Writes `data` to a new file at `path` in 1 MiB writes.
fn write_file(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for chunk in data.chunks(1 << 20) {
        f.write_all(chunk)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Writes the mixed tree into the mount and returns what it must hold.
fn write_tree(m: &Mount) -> BTreeMap<PathBuf, Want> {
    let mut rng = rand::thread_rng();
    let mut want = BTreeMap::new();
    let mkdir = |rel: &str, want: &mut BTreeMap<PathBuf, Want>| {
        fs::create_dir(m.path(rel)).unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
        want.insert(PathBuf::from(rel), Want::Dir);
    };

    // A 64 MiB random file four directories down.
    for d in ["deep", "deep/a", "deep/a/b", "deep/a/b/c"] {
        mkdir(d, &mut want);
    }
    let mut big = vec![0u8; 64 << 20];
    rng.fill_bytes(&mut big);
    write_file(&m.path("deep/a/b/c/big.bin"), &big);
    want.insert("deep/a/b/c/big.bin".into(), Want::File(big));

    // 200 small files of 0 to 16 KiB in 10 folders.
    mkdir("small", &mut want);
    for d in 0..10 {
        mkdir(&format!("small/dir{d:02}"), &mut want);
    }
    for i in 0..200 {
        let rel = format!("small/dir{:02}/file-{i:03}.dat", i % 10);
        let len = if i % 25 == 0 {
            0
        } else {
            rng.gen_range(1..=16 << 10)
        };
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        write_file(&m.path(&rel), &data);
        want.insert(rel.into(), Want::File(data));
    }

    // A relative symlink to the big file.
    std::os::unix::fs::symlink("a/b/c/big.bin", m.path("deep/link-to-big")).expect("symlink");
    want.insert(
        "deep/link-to-big".into(),
        Want::Symlink("a/b/c/big.bin".into()),
    );

    // A hard link to a small file, from another folder.
    fs::hard_link(m.path("small/dir01/file-001.dat"), m.path("hard-link.dat")).expect("link");
    let Some(Want::File(linked)) = want.get(Path::new("small/dir01/file-001.dat")) else {
        unreachable!("file-001 was written above")
    };
    let linked = linked.clone();
    want.insert("hard-link.dat".into(), Want::File(linked));

    // A file renamed into another folder, and a folder renamed.
    mkdir("renamed", &mut want);
    write_file(&m.path("small/before.txt"), b"renamed across folders\n");
    fs::rename(m.path("small/before.txt"), m.path("renamed/after.txt")).expect("rename file");
    want.insert(
        "renamed/after.txt".into(),
        Want::File(b"renamed across folders\n".to_vec()),
    );
    fs::rename(m.path("small/dir09"), m.path("moved-dir")).expect("rename dir");
    let under: Vec<PathBuf> = want
        .keys()
        .filter(|k| k.starts_with("small/dir09"))
        .cloned()
        .collect();
    for old in under {
        let w = want.remove(&old).expect("listed");
        let rest = old.strip_prefix("small/dir09").expect("under dir09");
        let new = if rest.as_os_str().is_empty() {
            PathBuf::from("moved-dir")
        } else {
            Path::new("moved-dir").join(rest)
        };
        want.insert(new, w);
    }
    want
}

/// Checks that the mount holds exactly `want`, reading every byte through
/// the file system.
fn verify(m: &Mount, want: &BTreeMap<PathBuf, Want>, when: &str) {
    let listed = walk(m.dir());
    let expected: Vec<PathBuf> = want.keys().cloned().collect();
    assert_eq!(listed, expected, "{when}: the tree's names");
    for (rel, w) in want {
        let path = m.dir().join(rel);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{when}: lstat {}: {e}", rel.display()));
        match w {
            Want::Dir => assert!(meta.is_dir(), "{when}: {} is not a folder", rel.display()),
            Want::File(data) => {
                assert!(meta.is_file(), "{when}: {} is not a file", rel.display());
                assert_eq!(
                    meta.len(),
                    data.len() as u64,
                    "{when}: size of {}",
                    rel.display()
                );
                let got = read_uncached(&path);
                assert_same_bytes(&format!("{when}: {}", rel.display()), &got, data);
            }
            Want::Symlink(target) => {
                assert!(
                    meta.file_type().is_symlink(),
                    "{when}: {} is not a symlink",
                    rel.display()
                );
                let got = fs::read_link(&path).expect("readlink");
                assert_eq!(&got, target, "{when}: target of {}", rel.display());
            }
        }
    }
    // The symlink resolves to the big file.
    let Some(Want::File(big)) = want.get(Path::new("deep/a/b/c/big.bin")) else {
        unreachable!("big.bin is in the tree")
    };
    let mut head = vec![0u8; 1 << 20];
    fs::File::open(m.path("deep/link-to-big"))
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("{when}: read through the symlink: {e}"));
    assert_same_bytes(
        &format!("{when}: through the symlink"),
        &head,
        &big[..1 << 20],
    );
    // Both names of the hard link are one inode with two links.
    let a = fs::metadata(m.path("small/dir01/file-001.dat")).expect("stat");
    let b = fs::metadata(m.path("hard-link.dat")).expect("stat");
    assert_eq!(a.ino(), b.ino(), "{when}: the hard link's inode");
    assert_eq!(
        (a.nlink(), b.nlink()),
        (2, 2),
        "{when}: the hard link's nlink"
    );
}

#[test]
fn mixed_tree_reads_back_before_and_after_a_remount() {
    let mut m = Mount::new();
    let want = write_tree(&m);
    verify(&m, &want, "before the remount");
    m.remount();
    verify(&m, &want, "after the remount");
}
