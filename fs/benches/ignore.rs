//! `.backerignore` matching cost: 100 patterns of the kinds people write
//! (names, extensions, editor and OS droppings, anchored folders, `**`,
//! classes, `(?i)`, a few `!`), against paths of a realistic tree, most of
//! which match nothing (the common case: every pattern is tried).
//!
//! Run: `cargo bench -p backer-fs --bench ignore`. Issue 20's budget is
//! ~2 µs per path for 100 patterns.

use std::hint::black_box;
use std::time::Instant;

use backer_fs::ignore::{Patterns, IGNORE_FILE};

const PATTERNS: &str = "\
// OS and editor files
(?d).DS_Store
(?d)Thumbs.db
(?d)(?i)desktop.ini
(?d)._*
.Spotlight-V100
.Trashes
.fseventsd
.TemporaryItems
$RECYCLE.BIN
System Volume Information
*~
.*.swp
.*.swo
*.swx
.#*
#*#
.~lock.*
*.tmp
*.temp
*.bak
*.orig
*.rej
*.part
*.crdownload
*.!qB
// keep these even though a rule below would drop them
!/docs/build/keep.txt
!important.log
// build outputs
/target
/build/
/dist/
/out/
node_modules
bower_components
__pycache__
*.py[co]
.pytest_cache
.mypy_cache
.tox
.venv
venv/
*.egg-info
.gradle
.idea
.vscode
*.iml
.cache
.parcel-cache
.next
.nuxt
*.o
*.obj
*.a
*.so
*.so.*
*.dylib
*.dll
*.exe
*.class
*.jar
*.war
*.log
*.log.[0-9]
logs/**
coverage
.nyc_output
*.lcov
CMakeFiles
CMakeCache.txt
cmake-build-*
*.gcda
*.gcno
// version control
.git
.svn
.hg
.bzr
_darcs
// media caches and large files
(?i)*.iso
(?i)*.dmg
(?i)*.vmdk
*.qcow2
.thumbnails
@eaDir
**/Library/Caches/**
/Photos Library.photoslibrary/resources/derivatives
*cache*
*Cache*
/downloads/incomplete
/home/*/tmp
**/secrets/*.pem
*.sqlite-journal
*.db-wal
*.db-shm
lost+found
.Trash-[0-9]*
{a,b}.lock
npm-debug.log*
yarn-error.log*
*.pid
.terraform
*.tfstate.backup
";

/// A tree of sources, documents and photos: names that mostly match
/// nothing, at depths 1 to 8.
fn paths() -> Vec<String> {
    let dirs = [
        "src",
        "src/vfs",
        "src/store/sled",
        "docs/design/notes",
        "Photos/2024/07 Summer/Day 3",
        "Documents/Taxes/2023/receipts/scanned",
        "projects/backer/fs/src/ignore",
        "projects/web/app/components/forms/inputs",
        "Music/Artist Name/Album (Deluxe)",
        "notes",
    ];
    let names = [
        "main.rs",
        "README.md",
        "IMG_20240712_184512.JPG",
        "invoice-2023-11.pdf",
        "Cargo.toml",
        "index.tsx",
        "01 - Track One.flac",
        "todo.txt",
        "report.final.v2.docx",
        "mod.rs",
        "x.o",
        "notes.md~",
    ];
    let mut out = Vec::new();
    for d in dirs {
        for n in names {
            out.push(format!("{d}/{n}"));
        }
    }
    out
}

fn main() {
    let load = |_: &std::path::Path| -> std::io::Result<Vec<u8>> { Ok(Vec::new()) };
    let pats = match Patterns::parse(PATTERNS.as_bytes(), IGNORE_FILE, &load) {
        Ok(p) => p,
        Err(e) => panic!("bench patterns do not parse: {e}"),
    };
    assert_eq!(pats.lines().len(), 100, "the bench promises 100 patterns");
    let paths = paths();
    let ignored = paths
        .iter()
        .filter(|p| pats.matches(p).is_ignored())
        .count();

    let rounds = 2000;
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for p in &paths {
            hits += usize::from(black_box(&pats).matches(black_box(p)).is_ignored());
        }
    }
    let elapsed = start.elapsed();
    let n = rounds * paths.len();
    black_box(hits);
    println!(
        "ignore match: {:.0} ns/path over {} paths ({} of {} distinct ignored), 100 patterns",
        elapsed.as_nanos() as f64 / n as f64,
        n,
        ignored,
        paths.len()
    );
}
