//! A disk filled by another process (DESIGN.md, "Full disk"; issue 15,
//! point 5): the store sits on a small tmpfs that `dd` fills while
//! mkdirs, creates and fsynced writes are in flight. Writers get ENOSPC,
//! never EIO and never a success that is later lost; once the space is
//! freed, writes succeed again without a restart; after an unmount (also
//! one started while the disk is still full) and a remount, everything
//! that was acknowledged is there.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::mount_util::{poll_until, process_alive, run, Mount};

/// The size of the file system the store lives on: room for the store,
/// its 64 MiB free-space reserve and some work.
const DISK_MIB: u64 = 160;

/// A tmpfs of its own, mounted over a folder for the length of a test.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        let opts = format!("size={mib}m,mode=0700");
        run(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                opts.as_ref(),
                "tmpfs".as_ref(),
                dir.as_os_str(),
            ],
        )
        .assert_success();
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Where the filler writes (beside the store, not in it).
    fn fill(&self) -> PathBuf {
        self.dir.join("fill")
    }

    /// Fills the disk with `dd` to its last byte, as another program
    /// would; returns how many bytes it wrote.
    fn fill_up(&self) -> u64 {
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.fill().display()))
            .arg("bs=1M")
            .stdin(Stdio::null())
            .output()
            .expect("run dd");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("No space left"),
            "dd stopped for another reason: {said}"
        );
        fs::metadata(self.fill()).expect("the fill file").len()
    }

    /// Free bytes on the tmpfs.
    fn avail(&self) -> u64 {
        backer_fs::store::packs::free_space(&self.dir).expect("statvfs")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// What the writers were told.
#[derive(Debug, Default)]
struct Acked {
    /// mkdirs that returned success.
    dirs: Vec<PathBuf>,
    /// creates (open O_CREAT) that returned success.
    created: Vec<PathBuf>,
    /// files whose write and fsync both returned success, and their bytes.
    synced: Vec<(PathBuf, Vec<u8>)>,
    /// Operations refused with ENOSPC.
    enospc: u64,
    /// Any other failure: none may happen.
    other: Vec<String>,
}

impl Acked {
    fn failed(&mut self, what: &str, e: &std::io::Error) {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            self.enospc += 1;
        } else {
            self.other.push(format!("{what}: {e}"));
        }
    }
}

/// Distinct bytes for file `i` of writer `who` (distinct, so dedup does
/// not spare them the disk).
fn content(who: &str, i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ who.len() as u64 ^ 0x5bd1_e995;
    (0..24 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One writer: mkdir, then create + write + fsync, over and over, until
/// `stop`; every answer is noted in `acked`.
fn writer(mnt: &Path, who: &str, stop: &AtomicBool, acked: &Mutex<Acked>) {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let dir = mnt.join(format!("{who}-d{i}"));
        match fs::create_dir(&dir) {
            Ok(()) => acked.lock().unwrap().dirs.push(dir),
            Err(e) => acked.lock().unwrap().failed("mkdir", &e),
        }
        let path = mnt.join(format!("{who}-f{i}"));
        match fs::File::create(&path) {
            Ok(mut f) => {
                acked.lock().unwrap().created.push(path.clone());
                let bytes = content(who, i);
                match f.write_all(&bytes).and_then(|()| f.sync_all()) {
                    Ok(()) => acked.lock().unwrap().synced.push((path, bytes)),
                    Err(e) => acked.lock().unwrap().failed("write+fsync", &e),
                }
            }
            Err(e) => acked.lock().unwrap().failed("create", &e),
        }
        i += 1;
    }
}

/// Runs two writers until `until` says so (given what they were told so
/// far and whether the disk was filled), filling the disk once they have
/// done some work. Returns what they were told and what dd wrote.
fn write_while_filling(
    m: &Mount,
    disk: &Tmpfs,
    until: impl Fn(&Acked, u64) -> bool,
) -> (Acked, u64) {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|who| {
            let (mnt, stop, acked) = (m.dir().to_path_buf(), stop.clone(), acked.clone());
            std::thread::spawn(move || writer(&mnt, who, &stop, &acked))
        })
        .collect();
    poll_until("the writers to get going", || {
        acked.lock().unwrap().dirs.len() >= 200
    });
    let filled = disk.fill_up();
    let refused_when_full = acked.lock().unwrap().enospc;
    poll_until("the writers to be refused on the full disk", || {
        until(&acked.lock().unwrap(), refused_when_full)
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a writer panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    (acked, filled)
}

/// Asserts that everything in `acked` is in the mount.
#[track_caller]
fn assert_all_there(m: &Mount, acked: &Acked) {
    let mut lost = Vec::new();
    for d in &acked.dirs {
        if !d.is_dir() {
            lost.push(d.clone());
        }
    }
    for f in &acked.created {
        if !f.is_file() {
            lost.push(f.clone());
        }
    }
    let mut wrong = 0;
    for (f, bytes) in &acked.synced {
        if fs::read(f).ok().as_ref() != Some(bytes) {
            wrong += 1;
        }
    }
    assert!(
        lost.is_empty() && wrong == 0,
        "acknowledged work lost: {} of {} mkdirs/creates gone (first: {:?}), {} of {} fsynced \
         files not as written\nlog:\n{}",
        lost.len(),
        acked.dirs.len() + acked.created.len(),
        lost.first(),
        wrong,
        acked.synced.len(),
        m.log()
    );
}

#[test]
fn a_full_disk_gives_enospc_recovers_without_a_restart_and_loses_nothing() {
    let (disk, mut m) = Mount::init_with(|root| Tmpfs::mount(root, DISK_MIB));
    m.mount();
    // Writers go on while the disk stays full for a few of the node's
    // background commits (at least one a second while changes come),
    // and until they met the full disk a few times.
    let full_since = std::cell::OnceCell::new();
    let (acked, filled) = write_while_filling(&m, &disk, |a, at_full| {
        let since = full_since.get_or_init(std::time::Instant::now);
        a.enospc >= at_full + 40 && since.elapsed() >= std::time::Duration::from_secs(3)
    });
    eprintln!(
        "full disk: dd wrote {} MiB; acknowledged {} mkdirs, {} creates, {} fsynced files; \
         {} refused with ENOSPC; {} other errors",
        filled >> 20,
        acked.dirs.len(),
        acked.created.len(),
        acked.synced.len(),
        acked.enospc,
        acked.other.len()
    );
    assert!(
        acked.other.is_empty(),
        "writers got errors other than ENOSPC: {:?}\nlog:\n{}",
        &acked.other[..acked.other.len().min(5)],
        m.log()
    );
    assert!(disk.avail() < 1 << 20, "dd left the disk with room");
    // Space is freed: the very next operations succeed, same node.
    fs::remove_file(disk.fill()).expect("remove the fill file");
    fs::create_dir(m.path("after"))
        .unwrap_or_else(|e| panic!("mkdir after space was freed: {e}\nlog:\n{}", m.log()));
    let after = content("after", 0);
    let mut f = fs::File::create(m.path("after/file")).expect("create after space was freed");
    f.write_all(&after).expect("write after space was freed");
    f.sync_all().expect("fsync after space was freed");
    drop(f);
    m.remount();
    assert_all_there(&m, &acked);
    assert_eq!(fs::read(m.path("after/file")).expect("read"), after);
    assert!(
        !m.log().contains("final commit failed"),
        "log:\n{}",
        m.log()
    );
}

#[test]
fn an_unmount_on_a_full_disk_waits_for_room_and_keeps_everything() {
    let (disk, mut m) = Mount::init_with(|root| Tmpfs::mount(root, DISK_MIB));
    m.mount();
    let (acked, _) = write_while_filling(&m, &disk, |a, at_full| a.enospc >= at_full + 4);
    assert!(
        acked.other.is_empty(),
        "{:?}\nlog:\n{}",
        acked.other,
        m.log()
    );
    // Unmounted while the disk is still full: the node saves what it was
    // told before it exits, waiting for room if it must.
    let mut waited = false;
    let log = m.store().dir().join("backer.log");
    m.unmount_with_then("fusermount3", &["-u"], |pid| {
        poll_until("the node to exit or wait for room", || {
            !process_alive(pid)
                || fs::read_to_string(&log).is_ok_and(|l| l.contains("waiting up to"))
        });
        waited = process_alive(pid);
        fs::remove_file(disk.fill()).expect("remove the fill file");
    });
    eprintln!(
        "unmount on a full disk: the node {} for room; {} mkdirs, {} creates, {} fsynced files \
         acknowledged",
        if waited {
            "waited"
        } else {
            "did not need to wait"
        },
        acked.dirs.len(),
        acked.created.len(),
        acked.synced.len()
    );
    m.mount();
    assert_all_there(&m, &acked);
    assert!(
        !m.log().contains("final commit failed"),
        "log:\n{}",
        m.log()
    );
}
