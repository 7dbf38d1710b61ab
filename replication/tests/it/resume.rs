//! A first sync cut off in the middle of its install (issue 18): the store
//! as a kill -9 leaves it after some steps is a consistent tree, and the
//! next sync from it converges without fetching a chunk again.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use backer_fs::store::Store;
use backer_fs::vfs::{InstallStep, Vfs, VfsOptions};
use backer_replication::{run, Channels, VfsLocal};

use crate::util::*;

/// Files in the tree (in folders of 100), as the CI size.
const FILES: usize = 20_000;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_killed_mid_install_resumes_without_fetching_chunks_again() {
    let a = Node::new();
    for i in 0..FILES {
        a.write(&format!("d{:03}/f{i:05}", i / 100), &bytes(i as u64, 90));
    }
    let b = Node::new();
    b.vfs.set_install_step(InstallStep {
        names: 1000,
        time: std::time::Duration::from_secs(3600),
    });
    // After the fifth step, B's store is copied as it is on disk: what a
    // kill -9 at that moment would leave (each step is durable before the
    // hook runs, and nothing else writes to B meanwhile).
    let image = tempfile::tempdir().unwrap();
    let store_dir = b.vfs.store().dir().to_path_buf();
    let steps = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(Mutex::new(false));
    let hook = {
        let (steps, taken, to) = (steps.clone(), taken.clone(), image.path().join("store"));
        Arc::new(move |_: &backer_fs::vfs::Installed| {
            if steps.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                copy_dir(&store_dir, &to);
                *taken.lock().unwrap() = true;
            }
        })
    };
    a.vfs.commit().unwrap();
    let (x, y) = tokio::io::duplex(1 << 20);
    let fa = run(x, a.local(), a.hello(), once(), Channels::default());
    let fb = run(
        y,
        VfsLocal::with_install_hook(b.vfs.clone(), hook),
        b.hello(),
        once(),
        Channels::default(),
    );
    let (oa, ob) = tokio::join!(fa, fb);
    oa.result.unwrap();
    ob.result.unwrap();
    let first = ob.report.stats.chunk_bytes_received;
    assert!(
        first >= (FILES * 90) as u64,
        "the first sync got {first} chunk bytes"
    );
    assert!(
        steps.load(Ordering::SeqCst) > 5,
        "the install took {} steps",
        steps.load(Ordering::SeqCst)
    );
    assert!(*taken.lock().unwrap(), "no image was taken mid-install");

    // The restarted node: its tree is a step's, part of A's.
    let store = Arc::new(Store::open(&image.path().join("store")).unwrap());
    let vfs = Arc::new(Vfs::new(store, VfsOptions::default()).unwrap());
    let c = Node { _dir: image, vfs };
    let partial = c.root();
    assert_ne!(partial, a.root(), "the image holds the whole tree already");
    let held = (0..FILES)
        .filter(|i| c.read(&format!("d{:03}/f{i:05}", i / 100)).is_some())
        .count();
    assert!(
        held > 0 && held < FILES,
        "the image holds {held} of {FILES} files"
    );
    let (_, oc) = sync_ok(&a, &c).await;
    assert_eq!(
        oc.report.stats.chunk_bytes_received, 0,
        "the resumed sync fetched chunks the first had stored"
    );
    for i in (0..FILES).step_by(997) {
        assert_eq!(
            c.read(&format!("d{:03}/f{i:05}", i / 100)),
            Some(bytes(i as u64, 90))
        );
    }
}

/// A folder whose first names are many non-empty subfolders, installed in
/// steps smaller than it: a step cut short inside it must let the
/// subfolders it queued finish before it comes back, else the same
/// subfolders are queued again every step and the install never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_many_subfolders_installs_in_small_steps_and_ends() {
    let a = Node::new();
    for d in 0..10 {
        for f in 0..4 {
            a.write(
                &format!("top/s{d:02}/f{f}"),
                &bytes((d * 10 + f) as u64, 50),
            );
        }
    }
    a.write("top/z-last", b"the folder's last name");
    let b = Node::new();
    b.vfs.set_install_step(InstallStep {
        names: 3,
        time: std::time::Duration::from_secs(3600),
    });
    let steps = Arc::new(AtomicUsize::new(0));
    let hook = {
        let steps = steps.clone();
        Arc::new(move |_: &backer_fs::vfs::Installed| {
            // A loop would step for ever: stop it with a failure instead.
            assert!(
                steps.fetch_add(1, Ordering::SeqCst) < 1_000,
                "the install does not end"
            );
        })
    };
    a.vfs.commit().unwrap();
    let (x, y) = tokio::io::duplex(1 << 20);
    let fa = run(x, a.local(), a.hello(), once(), Channels::default());
    let fb = run(
        y,
        VfsLocal::with_install_hook(b.vfs.clone(), hook),
        b.hello(),
        once(),
        Channels::default(),
    );
    let (oa, ob) = tokio::join!(fa, fb);
    oa.result.unwrap();
    ob.result.unwrap();
    assert!(steps.load(Ordering::SeqCst) > 5, "installed in steps");
    assert_eq!(b.vfs.root_hash().unwrap(), a.vfs.root_hash().unwrap());
}
