//! POSIX behaviour of the vfs, each test asserting exact results and errnos.

use backer_fs::store::Space;
use backer_fs::vfs::*;

use crate::util::*;

fn errno<T: std::fmt::Debug>(r: backer_fs::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

fn count(fs: &TestFs, space: Space) -> usize {
    fs.vfs()
        .store()
        .kv()
        .scan(space, b"", None, usize::MAX)
        .unwrap()
        .len()
}

#[test]
fn write_read_round_trip_survives_reopen() {
    let mut fs = TestFs::new();
    let d = fs.vfs().names().mkdir(ME, ROOT, b"dir", 0o755).unwrap();
    let big = random_bytes(3 << 20, 1);
    let f = fs.put(d.ino, "big", &big);
    let small = fs.put(ROOT, "small", b"hello");
    assert_eq!(fs.get(f), big);
    assert_eq!(fs.vfs().names().getattr(f).unwrap().size, big.len() as u64);
    fs.vfs().sync().unwrap();
    fs.reopen();
    assert_eq!(fs.get(fs.path("dir/big").unwrap()), big);
    assert_eq!(fs.get(small), b"hello");
    let a = fs.vfs().names().getattr(small).unwrap();
    assert_eq!(
        (a.uid, a.gid, a.perm, a.kind, a.nlink),
        (1000, 1000, 0o644, backer_fs::tree::Kind::File, 1)
    );
}

/// A reused read buffer (the FUSE layer keeps one per thread) must come
/// back with holes zeroed, not holding the previous read's bytes.
#[test]
fn reads_into_a_dirty_buffer_zero_the_holes() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let (_, fh) = v.names().create(ME, ROOT, b"holes", 0o644, false).unwrap();
    let chunk = vec![7u8; 300_000];
    v.files().write(fh, 0, &chunk).unwrap();
    v.files().write(fh, 1 << 20, &chunk).unwrap();
    v.files().flush(fh).unwrap();
    // Unflushed bytes inside the hole, laid over it.
    v.files().write(fh, 600_000, b"overlay").unwrap();
    let mut expect = vec![0u8; (1 << 20) + 300_000];
    expect[..300_000].fill(7);
    expect[1 << 20..].fill(7);
    expect[600_000..600_007].copy_from_slice(b"overlay");
    let mut buf = vec![0xAAu8; 2 << 20];
    for (off, len) in [(0u64, 2u32 << 20), (250_000, 900_000), (700_000, 400_000)] {
        buf.fill(0xAA);
        let n = v.files().read_into(fh, off, len, &mut buf).unwrap();
        let want = &expect[off as usize..(off as usize + len as usize).min(expect.len())];
        assert_eq!(n, want.len());
        assert!(buf[..n] == *want, "read at {off} of {len} differs");
        assert_eq!(v.files().read(fh, off, len).unwrap(), want);
    }
    v.files().release(fh).unwrap();
}

#[test]
fn sparse_files_read_zeros_and_store_nothing_for_holes() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let (a, fh) = v.names().create(ME, ROOT, b"sparse", 0o644, false).unwrap();
    v.files().write(fh, 10 << 20, b"tail").unwrap();
    v.files().write(fh, 100, b"head").unwrap();
    v.files().release(fh).unwrap();
    let data = fs.get(a.ino);
    assert_eq!(data.len(), (10 << 20) + 4);
    assert_eq!(&data[100..104], b"head");
    assert!(data[104..10 << 20].iter().all(|b| *b == 0));
    assert_eq!(&data[10 << 20..], b"tail");
    let attr = v.names().getattr(a.ino).unwrap();
    assert!(
        attr.blocks < 8,
        "holes must not be stored: {} blocks",
        attr.blocks
    );
    // Truncate up adds a hole; truncate down drops bytes.
    v.names()
        .setattr(
            a.ino,
            &SetAttr {
                size: Some(20 << 20),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(fs.get(a.ino).len(), 20 << 20);
    v.names()
        .setattr(
            a.ino,
            &SetAttr {
                size: Some(102),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(fs.get(a.ino), [vec![0u8; 100], b"he".to_vec()].concat());
    v.names()
        .setattr(
            a.ino,
            &SetAttr {
                size: Some(104),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(fs.get(a.ino), [vec![0u8; 100], b"he\0\0".to_vec()].concat());
}

#[test]
fn truncate_and_overwrite_inside_chunks() {
    let fs = TestFs::new();
    let mut model = random_bytes(1 << 20, 2);
    let f = fs.put(ROOT, "f", &model);
    let v = fs.vfs();
    for (i, size) in [700_000u64, 300_001, 900_000, 5].into_iter().enumerate() {
        v.names()
            .setattr(
                f,
                &SetAttr {
                    size: Some(size),
                    ..Default::default()
                },
            )
            .unwrap();
        model.resize(size as usize, 0);
        let fh = v.files().open(f, false, false).unwrap();
        let patch = random_bytes(70_000, 10 + i as u64);
        let at = size / 3;
        v.files().write(fh, at, &patch).unwrap();
        let end = at as usize + patch.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[at as usize..end].copy_from_slice(&patch);
        // Read through the handle before the fold, then after.
        assert_eq!(
            v.files().read(fh, 0, 4 << 20).unwrap(),
            model,
            "before fold, step {i}"
        );
        v.files().release(fh).unwrap();
        assert_eq!(fs.get(f), model, "after fold, step {i}");
    }
}

#[test]
fn overwrite_in_the_middle_stores_only_nearby_chunks() {
    let fs = TestFs::new();
    let data = random_bytes(8 << 20, 3);
    let f = fs.put(ROOT, "f", &data);
    let before = count(&fs, Space::Chunks);
    assert!(before > 64, "8 MiB should be ~128 chunks, got {before}");
    let v = fs.vfs();
    let fh = v.files().open(f, false, false).unwrap();
    v.files()
        .write(fh, 4 << 20, &random_bytes(1000, 4))
        .unwrap();
    v.files().release(fh).unwrap();
    let new = count(&fs, Space::Chunks) - before;
    assert!(
        (1..=3).contains(&new),
        "a 1000-byte overwrite stored {new} new chunks"
    );
    // Writing the original bytes back gives the original chunks: no new
    // chunk, the same content hash as the first version.
    let fh = v.files().open(f, false, false).unwrap();
    v.files()
        .write(fh, 4 << 20, &data[4 << 20..(4 << 20) + 1000])
        .unwrap();
    v.files().release(fh).unwrap();
    assert_eq!(count(&fs, Space::Chunks) - before, new);
    assert_eq!(fs.get(f), data);
}

#[test]
fn content_hash_does_not_depend_on_write_history() {
    let fs = TestFs::new();
    let data = random_bytes(2 << 20, 5);
    let a = fs.put(ROOT, "a", &data);
    // The same bytes written backwards in odd pieces, with a partial fold
    // in between (file larger than the fold threshold is not needed: the
    // pieces are folded at each release).
    let v = fs.vfs();
    let (b, fh) = v.names().create(ME, ROOT, b"b", 0o644, false).unwrap();
    v.files().release(fh).unwrap();
    let mut end = data.len();
    while end > 0 {
        let start = end.saturating_sub(300_007);
        let fh = v.files().open(b.ino, false, false).unwrap();
        v.files()
            .write(fh, start as u64, &data[start..end])
            .unwrap();
        v.files().release(fh).unwrap();
        end = start;
    }
    v.commit().unwrap();
    let ea = backer_fs::tree::dir::get(&NodesOf(&fs), v.root_hash().unwrap(), b"a")
        .unwrap()
        .unwrap();
    let eb = backer_fs::tree::dir::get(&NodesOf(&fs), v.root_hash().unwrap(), b"b")
        .unwrap()
        .unwrap();
    assert_eq!(fs.get(a), fs.get(b.ino));
    assert_eq!(ea.hash, eb.hash, "same bytes, different chunking");
}

/// Reads tree nodes straight from a test store.
pub(crate) struct NodesOf<'a>(pub &'a TestFs);

impl backer_fs::tree::NodeStore for NodesOf<'_> {
    fn get_node(&self, hash: &backer_fs::Hash) -> backer_fs::Result<Option<Vec<u8>>> {
        self.0.vfs().store().kv().get(Space::Nodes, hash.as_bytes())
    }
    fn put_node(&mut self, _: backer_fs::Hash, _: Vec<u8>) -> backer_fs::Result<()> {
        unreachable!("read only")
    }
}

#[test]
fn unlinked_open_file_lives_until_release() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let f = fs.put(ROOT, "f", b"data");
    let fh = v.files().open(f, false, false).unwrap();
    v.names().unlink(ROOT, b"f").unwrap();
    assert_eq!(errno(v.names().lookup(ROOT, b"f")), libc::ENOENT);
    assert_eq!(v.names().getattr(f).unwrap().nlink, 0);
    v.files().write(fh, 4, b"more").unwrap();
    assert_eq!(v.files().read(fh, 0, 100).unwrap(), b"datamore");
    v.files().release(fh).unwrap();
    assert_eq!(errno(v.names().getattr(f)), libc::ENOENT);
    assert_eq!(count(&fs, Space::Orphans), 0);
}

#[test]
fn unlinked_open_file_is_reclaimed_after_a_crash() {
    let mut fs = TestFs::new();
    let f = fs.put(ROOT, "f", b"data");
    let fh = fs.vfs().files().open(f, false, false).unwrap();
    fs.vfs().names().unlink(ROOT, b"f").unwrap();
    assert_eq!(count(&fs, Space::Orphans), 1);
    let _ = fh; // never released: the process "dies"
    fs.reopen();
    assert_eq!(errno(fs.vfs().names().getattr(f)), libc::ENOENT);
    assert_eq!(count(&fs, Space::Orphans), 0);
}

#[test]
fn rename_rules() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let a = fs.put(ROOT, "a", b"A");
    let b = fs.put(ROOT, "b", b"B");
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    let e = v.names().mkdir(ME, ROOT, b"e", 0o755).unwrap().ino;
    fs.put(e, "inside", b"x");
    let sub = v.names().mkdir(ME, d, b"sub", 0o755).unwrap().ino;
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"a", ROOT, b"b", RenameMode::NoReplace)
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"a", ROOT, b"d", RenameMode::Replace)
        ),
        libc::EISDIR
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"d", ROOT, b"a", RenameMode::Replace)
        ),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"d", ROOT, b"e", RenameMode::Replace)
        ),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"d", sub, b"loop", RenameMode::Replace)
        ),
        libc::EINVAL
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"missing", ROOT, b"x", RenameMode::Replace)
        ),
        libc::ENOENT
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"a", ROOT, b"nothere", RenameMode::Exchange)
        ),
        libc::ENOENT
    );
    assert_eq!(
        errno(
            v.names()
                .rename(ROOT, b"a", ROOT, b".backer", RenameMode::Replace)
        ),
        libc::EEXIST
    );
    // Onto itself: nothing happens.
    v.names()
        .rename(ROOT, b"a", ROOT, b"a", RenameMode::Replace)
        .unwrap();
    assert_eq!(fs.get(a), b"A");
    // Exchange swaps.
    v.names()
        .rename(ROOT, b"a", ROOT, b"b", RenameMode::Exchange)
        .unwrap();
    assert_eq!(fs.get(fs.path("a").unwrap()), b"B");
    assert_eq!(fs.get(fs.path("b").unwrap()), b"A");
    // Replace a file: the old target is gone.
    v.names()
        .rename(ROOT, b"a", ROOT, b"b", RenameMode::Replace)
        .unwrap();
    assert_eq!(fs.get(fs.path("b").unwrap()), b"B");
    assert_eq!(errno(v.names().getattr(a)), libc::ENOENT);
    assert_eq!(fs.path("b").unwrap(), b);
    // A directory over an empty directory, across parents, keeps its subtree.
    let empty = v.names().mkdir(ME, e, b"empty", 0o755).unwrap().ino;
    v.names()
        .rename(ROOT, b"d", e, b"empty", RenameMode::Replace)
        .unwrap();
    assert_eq!(errno(v.names().getattr(empty)), libc::ENOENT);
    assert_eq!(fs.path("e/empty/sub").unwrap(), sub);
    assert_eq!(v.names().lookup(sub, b"..").unwrap().ino, d);
    assert_eq!(v.names().getattr(e).unwrap().nlink, 3);
    assert_eq!(v.names().getattr(ROOT).unwrap().nlink, 3);
}

#[test]
fn rmdir_unlink_errors_and_link_counts() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    let f = fs.put(d, "f", b"x");
    assert_eq!(errno(v.names().rmdir(ROOT, b"d")), libc::ENOTEMPTY);
    assert_eq!(errno(v.names().unlink(ROOT, b"d")), libc::EISDIR);
    assert_eq!(errno(v.names().rmdir(d, b"f")), libc::ENOTDIR);
    assert_eq!(errno(v.names().unlink(ROOT, b"nope")), libc::ENOENT);
    assert_eq!(errno(v.names().mkdir(ME, ROOT, b"d", 0o755)), libc::EEXIST);
    assert_eq!(errno(v.names().mkdir(ME, f, b"x", 0o755)), libc::ENOTDIR);
    // Hard links share content and count.
    v.names().link(f, ROOT, b"hard").unwrap();
    assert_eq!(v.names().getattr(f).unwrap().nlink, 2);
    assert_eq!(fs.get(fs.path("hard").unwrap()), b"x");
    assert_eq!(errno(v.names().link(d, ROOT, b"dirlink")), libc::EPERM);
    v.names().unlink(d, b"f").unwrap();
    assert_eq!(v.names().getattr(f).unwrap().nlink, 1);
    assert_eq!(fs.get(f), b"x");
    v.names().rmdir(ROOT, b"d").unwrap();
    assert_eq!(errno(v.names().getattr(d)), libc::ENOENT);
    assert_eq!(v.names().getattr(ROOT).unwrap().nlink, 2);
}

#[test]
fn symlinks_and_special_files() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let l = v
        .names()
        .symlink(ME, ROOT, b"link", b"../some/where")
        .unwrap();
    assert_eq!(v.names().readlink(l.ino).unwrap(), b"../some/where");
    assert_eq!(l.size, 13);
    let f = fs.put(ROOT, "f", b"");
    assert_eq!(errno(v.names().readlink(f)), libc::EINVAL);
    assert_eq!(
        errno(v.names().symlink(ME, ROOT, b"long", &vec![b'a'; 4096])),
        libc::ENAMETOOLONG
    );
    use backer_fs::tree::Kind;
    for (name, kind, rdev) in [
        ("fifo", Kind::Fifo, 0),
        ("sock", Kind::Socket, 0),
        ("chr", Kind::CharDev, 0x0103),
        ("blk", Kind::BlockDev, 0x0801),
    ] {
        let a = v
            .names()
            .mknod(
                ME,
                ROOT,
                name.as_bytes(),
                NewNode::Special(kind, rdev),
                0o600,
            )
            .unwrap();
        assert_eq!((a.kind, a.rdev, a.perm), (kind, rdev, 0o600));
        assert_eq!(v.names().lookup(ROOT, name.as_bytes()).unwrap().rdev, rdev);
    }
    v.commit().unwrap();
    let e = backer_fs::tree::dir::get(&crate::posix::NodesOf(&fs), v.root_hash().unwrap(), b"blk")
        .unwrap()
        .unwrap();
    assert_eq!((e.kind, e.rdev), (Kind::BlockDev, 0x0801));
}

#[test]
fn xattrs_follow_linux_rules() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let f = fs.put(ROOT, "f", b"");
    assert_eq!(errno(v.names().getxattr(f, b"user.a", 100)), libc::ENODATA);
    v.names()
        .setxattr(f, b"user.a", b"value", XattrSet::Any)
        .unwrap();
    assert_eq!(
        v.names().getxattr(f, b"user.a", 0).unwrap(),
        XattrReply::Size(5)
    );
    assert_eq!(
        v.names().getxattr(f, b"user.a", 5).unwrap(),
        XattrReply::Data(b"value".to_vec())
    );
    assert_eq!(errno(v.names().getxattr(f, b"user.a", 2)), libc::ERANGE);
    assert_eq!(
        errno(v.names().setxattr(f, b"user.a", b"v", XattrSet::Create)),
        libc::EEXIST
    );
    assert_eq!(
        errno(v.names().setxattr(f, b"user.b", b"v", XattrSet::Replace)),
        libc::ENODATA
    );
    assert_eq!(
        errno(
            v.names()
                .setxattr(f, b"user.big", &vec![0; 65537], XattrSet::Any)
        ),
        libc::E2BIG
    );
    assert_eq!(
        errno(v.names().setxattr(f, &[b'u'; 256], b"v", XattrSet::Any)),
        libc::ERANGE
    );
    v.names()
        .setxattr(f, b"user.b", b"", XattrSet::Any)
        .unwrap();
    assert_eq!(v.names().listxattr(f, 0).unwrap(), XattrReply::Size(14));
    assert_eq!(
        v.names().listxattr(f, 100).unwrap(),
        XattrReply::Data(b"user.a\0user.b\0".to_vec())
    );
    assert_eq!(errno(v.names().listxattr(f, 3)), libc::ERANGE);
    v.names().removexattr(f, b"user.a").unwrap();
    assert_eq!(errno(v.names().removexattr(f, b"user.a")), libc::ENODATA);
    v.names().unlink(ROOT, b"f").unwrap();
    assert_eq!(
        count(&fs, Space::Xattrs),
        0,
        "xattrs of a freed inode are freed"
    );
}

#[test]
fn readdir_offsets_are_stable_while_the_directory_changes() {
    let fs = TestFs::new();
    let v = fs.vfs();
    for i in 0..50 {
        fs.put(ROOT, &format!("f{i:02}"), b"");
    }
    let mut seen = Vec::new();
    let mut removed = std::collections::HashSet::new();
    let mut cookie = 0;
    let mut round = 0;
    loop {
        let page = v.names().readdir(ROOT, cookie, 7).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            seen.push(String::from_utf8(e.name.clone()).unwrap());
        }
        cookie = page.last().unwrap().cookie;
        // Between pages: remove a name not yet seen and one already seen,
        // and add a new one.
        round += 1;
        for name in [format!("f{:02}", 49 - round), format!("f{:02}", round - 1)] {
            if v.names().unlink(ROOT, name.as_bytes()).is_ok() {
                removed.insert(name);
            }
        }
        if round <= 5 {
            fs.put(ROOT, &format!("new{round}"), b"");
        }
    }
    assert_eq!(&seen[..2], &[".", ".."]);
    let mut uniq = seen.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), seen.len(), "an entry was returned twice");
    for i in 0..50 {
        let name = format!("f{i:02}");
        if !removed.contains(&name) {
            assert!(
                seen.contains(&name),
                "{name} existed throughout but was skipped"
            );
        }
    }
    // Names removed before their page came are not returned.
    assert!(!seen.contains(&"f48".to_string()));
}

#[test]
fn bad_names_and_offsets_are_errors_not_panics() {
    let fs = TestFs::new();
    let v = fs.vfs();
    for (name, want) in [
        (&b""[..], libc::EINVAL),
        (b".", libc::EINVAL),
        (b"..", libc::EINVAL),
        (b"a/b", libc::EINVAL),
        (b"a\0b", libc::EINVAL),
    ] {
        assert_eq!(
            errno(v.names().create(ME, ROOT, name, 0o644, false)),
            want,
            "{name:?}"
        );
        assert_eq!(
            errno(v.names().mkdir(ME, ROOT, name, 0o755)),
            want,
            "{name:?}"
        );
    }
    let long = vec![b'x'; 256];
    assert_eq!(
        errno(v.names().create(ME, ROOT, &long, 0o644, false)),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(v.names().lookup(ROOT, &long)), libc::ENAMETOOLONG);
    v.names()
        .create(ME, ROOT, &long[..255], 0o644, false)
        .unwrap();
    assert_eq!(
        errno(v.names().mkdir(ME, ROOT, b".backer", 0o755)),
        libc::EEXIST
    );
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    v.names().mkdir(ME, d, b".backer", 0o755).unwrap();
    let (a, fh) = v.names().create(ME, ROOT, b"f", 0o644, false).unwrap();
    assert_eq!(errno(v.files().write(fh, MAX_FILE_SIZE, b"x")), libc::EFBIG);
    assert_eq!(errno(v.files().write(fh, u64::MAX, b"x")), libc::EFBIG);
    assert_eq!(v.files().read(fh, u64::MAX, u32::MAX).unwrap(), b"");
    assert_eq!(
        errno(v.names().setattr(
            a.ino,
            &SetAttr {
                size: Some(u64::MAX),
                ..Default::default()
            }
        )),
        libc::EFBIG
    );
    assert_eq!(errno(v.files().read(Fh(fh.0 + 100), 0, 1)), libc::EBADF);
    assert_eq!(errno(v.names().getattr(Ino(999_999))), libc::ENOENT);
    assert_eq!(errno(v.names().readdir(a.ino, 0, 10)), libc::ENOTDIR);
    assert_eq!(
        errno(v.names().setattr(
            d,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )),
        libc::EISDIR
    );
}

#[test]
fn directories_nest_only_as_deep_as_a_path_can_name() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let mut ino = ROOT;
    for _ in 0..MAX_DEPTH {
        ino = v.names().mkdir(ME, ino, b"d", 0o755).unwrap().ino;
    }
    assert_eq!(
        errno(v.names().mkdir(ME, ino, b"d", 0o755)),
        libc::ENAMETOOLONG
    );
    v.commit().unwrap();
}

#[test]
fn setattr_and_access() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let f = fs.put(ROOT, "f", b"x");
    let t = backer_fs::tree::Timestamp {
        secs: 1_000_000,
        nanos: 5,
    };
    let a = v
        .names()
        .setattr(
            f,
            &SetAttr {
                mode: Some(0o4640),
                uid: Some(7),
                gid: Some(8),
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::At(t)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (a.perm, a.uid, a.gid, a.atime, a.mtime),
        (0o4640, 7, 8, t, t)
    );
    assert!(v.names().access(Ctx { uid: 7, gid: 0 }, f, 6).is_ok());
    assert!(v.names().access(Ctx { uid: 7, gid: 0 }, f, 1).is_err());
    assert!(v.names().access(Ctx { uid: 9, gid: 8 }, f, 4).is_ok());
    assert_eq!(
        errno(v.names().access(Ctx { uid: 9, gid: 8 }, f, 2)),
        libc::EACCES
    );
    assert_eq!(
        errno(v.names().access(Ctx { uid: 9, gid: 9 }, f, 4)),
        libc::EACCES
    );
    assert!(v.names().access(Ctx { uid: 0, gid: 0 }, f, 6).is_ok());
    assert_eq!(
        errno(v.names().access(Ctx { uid: 0, gid: 0 }, f, 1)),
        libc::EACCES
    );
    let s = v.names().statfs().unwrap();
    assert!(s.blocks > 0 && s.bsize == 4096 && s.namelen == 255);
}

#[test]
fn commits_coalesce_and_fsync_commits() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let empty_root = v.root_hash().unwrap();
    assert_eq!(v.commit().unwrap(), None, "nothing changed");
    for i in 0..100 {
        fs.put(ROOT, &format!("f{i}"), b"x");
    }
    let c = v.commit().unwrap().expect("a commit");
    assert_eq!(c.seq, 1);
    assert_eq!(c.changed, 100);
    assert_ne!(c.root, empty_root);
    assert_eq!(v.commit().unwrap(), None);
    // A change that is undone before the commit makes no commit.
    fs.put(ROOT, "tmp", b"");
    v.names().unlink(ROOT, b"tmp").unwrap();
    assert_eq!(v.commit().unwrap(), None);
    // fsync commits without an explicit commit.
    let (_, fh) = v.names().create(ME, ROOT, b"synced", 0o644, false).unwrap();
    v.files().write(fh, 0, b"durable").unwrap();
    v.files().fsync(fh).unwrap();
    v.files().release(fh).unwrap();
    let log = backer_fs::vfs::read_log(v.store().kv(), 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].parents, vec![c.root.0]);
    assert_eq!(log[0].root, v.root_hash().unwrap().0);
}

#[test]
fn tombstones_and_version_vectors() {
    use backer_fs::tree::{dir, Causality};
    let fs = TestFs::new();
    let v = fs.vfs();
    fs.put(ROOT, "a", b"1");
    fs.put(ROOT, "b", b"2");
    v.commit().unwrap();
    let get = |name: &[u8]| {
        dir::get(&NodesOf(&fs), v.root_hash().unwrap(), name)
            .unwrap()
            .unwrap()
    };
    let (a1, b1) = (get(b"a"), get(b"b"));
    // Rename-over: b gets the join of both vectors, plus a bump.
    v.names()
        .rename(ROOT, b"a", ROOT, b"b", RenameMode::Replace)
        .unwrap();
    v.commit().unwrap();
    let (a2, b2) = (get(b"a"), get(b"b"));
    assert!(a2.deleted, "the old name is a tombstone");
    assert_eq!(a2.vv.compare(&a1.vv), Causality::Dominates);
    assert_eq!(b2.vv.compare(&a1.vv), Causality::Dominates);
    assert_eq!(b2.vv.compare(&b1.vv), Causality::Dominates);
    assert_eq!(b2.hash, a1.hash);
    // Re-creating a deleted name dominates its tombstone.
    fs.put(ROOT, "a", b"3");
    v.commit().unwrap();
    let a3 = get(b"a");
    assert!(!a3.deleted);
    assert_eq!(a3.vv.compare(&a2.vv), Causality::Dominates);
    // A directory's vector covers everything beneath it.
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    fs.put(d, "deep", b"x");
    v.commit().unwrap();
    let dv = get(b"d").vv;
    let deep = dir::get(&NodesOf(&fs), get(b"d").hash, b"deep")
        .unwrap()
        .unwrap();
    assert!(matches!(
        dv.compare(&deep.vv),
        Causality::Dominates | Causality::Equal
    ));
}

#[test]
fn the_background_committer_coalesces_a_burst_into_one_root() {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    let fs = TestFs::new();
    let dir = fs.dir.path().join("store");
    drop(fs.vfs);
    let store = Arc::new(backer_fs::store::Store::open(&dir).unwrap());
    let vfs = Arc::new(Vfs::new(store, VfsOptions::default()).unwrap());
    let (tx, rx) = mpsc::channel();
    let committer = Committer::spawn(
        vfs.clone(),
        Duration::from_secs(3),
        Duration::from_secs(60),
        move |c| {
            tx.send(c.clone()).unwrap();
        },
    )
    .unwrap();
    for i in 0..200 {
        let (_, fh) = vfs
            .names()
            .create(ME, ROOT, format!("f{i}").as_bytes(), 0o644, false)
            .unwrap();
        vfs.files().write(fh, 0, b"x").unwrap();
        vfs.files().release(fh).unwrap();
    }
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the committer committed");
    let mut commits = vec![first];
    drop(committer); // stops after a last commit of anything left
    commits.extend(rx.try_iter());
    let changed: usize = commits.iter().map(|c| c.changed).sum();
    assert_eq!(changed, 200);
    assert!(
        commits.len() <= 2,
        "200 quick creates made {} roots",
        commits.len()
    );
    assert_eq!(vfs.root_hash().unwrap(), commits.last().unwrap().root);
}
