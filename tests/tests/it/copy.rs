//! Copies inside the mount: `cp` (copy_file_range of a whole file, which
//! shares the source's chunks) and copy_file_range of a range (which the
//! kernel does through READ and WRITE when the mount declines it).

use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use crate::mount_util::{assert_same_bytes, run, Mount};
use crate::posix::random_bytes;
use crate::roundtrip::read_uncached;

#[test]
fn cp_of_a_whole_file_and_a_copied_range_read_back_exactly() {
    let mut m = Mount::new();
    let data = random_bytes(9 << 20);
    let src = m.path("src");
    fs::write(&src, &data).expect("write");
    let dst = m.path("dst");
    run("cp", &[src.as_os_str(), dst.as_os_str()]).assert_success();
    assert_same_bytes("cp's copy", &read_uncached(&dst), &data);

    // The copy is a file of its own: writing it leaves the source alone.
    let f = fs::OpenOptions::new().write(true).open(&dst).expect("open");
    f.write_all_at(b"changed", 4 << 20).expect("pwrite");
    drop(f);
    let mut changed = data.clone();
    changed[4 << 20..(4 << 20) + 7].copy_from_slice(b"changed");
    assert_same_bytes("the copy after a write", &read_uncached(&dst), &changed);
    assert_same_bytes("the source", &read_uncached(&src), &data);

    // A range, to an offset: the mount declines, the kernel copies.
    let part = m.path("part");
    let fin = fs::File::open(&src).expect("open src");
    let fout = fs::File::create(&part).expect("create part");
    let (mut off_in, mut off_out): (i64, i64) = (5, 7);
    // SAFETY: two open descriptors and live offsets.
    let n = unsafe {
        libc::copy_file_range(
            fin.as_raw_fd(),
            &mut off_in,
            fout.as_raw_fd(),
            &mut off_out,
            100_000,
            0,
        )
    };
    assert_eq!(n, 100_000, "{}", std::io::Error::last_os_error());
    drop((fin, fout));
    let want = [vec![0u8; 7], data[5..100_005].to_vec()].concat();
    assert_same_bytes("a copied range", &read_uncached(&part), &want);

    m.remount();
    assert_same_bytes("the source after a remount", &read_uncached(&src), &data);
    assert_same_bytes("the copy after a remount", &read_uncached(&dst), &changed);
    assert_same_bytes("the range after a remount", &read_uncached(&part), &want);
}
