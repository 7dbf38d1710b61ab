//! A 100,000-entry directory: one change rewrites O(log n) tree nodes, not
//! the directory (counted, never timed).

use backer_fs::store::Space;
use backer_fs::vfs::{RenameMode, ROOT};

use crate::util::{TestFs, ME};

fn nodes(fs: &TestFs) -> usize {
    fs.vfs()
        .store()
        .kv()
        .scan(Space::Nodes, b"", None, usize::MAX)
        .unwrap()
        .len()
}

#[test]
fn one_change_in_a_100k_directory_writes_few_nodes() {
    let fs = TestFs::new();
    let v = fs.vfs();
    let d = v.names().mkdir(ME, ROOT, b"big", 0o755).unwrap().ino;
    for i in 0..100_000u32 {
        let a = v.names().mknod(
            ME,
            d,
            format!("entry-{i:06}").as_bytes(),
            backer_fs::vfs::NewNode::Symlink(b"t".to_vec()),
            0o777,
        );
        a.unwrap();
    }
    v.commit().unwrap().unwrap();
    let mut counts = Vec::new();
    type Op<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let ops: [Op<'_>; 3] = [
        (
            "insert",
            Box::new(|| {
                v.names().symlink(ME, d, b"entry-new", b"t").unwrap();
            }),
        ),
        (
            "delete",
            Box::new(|| v.names().unlink(d, b"entry-050000").unwrap()),
        ),
        (
            "rename",
            Box::new(|| {
                v.names()
                    .rename(d, b"entry-000001", d, b"entry-999999", RenameMode::Replace)
                    .unwrap()
            }),
        ),
    ];
    for (what, op) in ops.iter() {
        let before = nodes(&fs);
        op();
        v.commit().unwrap().unwrap();
        let written = nodes(&fs) - before;
        counts.push((what.to_string(), written));
        // Path in the big directory (height ~4 at fanout ~32, twice for a
        // rename's two names) plus the root directory's node.
        assert!(written <= 12, "{what} wrote {written} nodes");
    }
    eprintln!("nodes written per change in a 100k directory: {counts:?}");
}
