//! `backer log [PATH] [--json]`, and what `restore` and `du` share with
//! it: paths in the tree, commit times and ids, and asking the running
//! node or opening the store.
//!
//! Each commit is compared with the next older one in the log (its first
//! parent, the root it followed here, unless `gc` dropped that): names added, modified, deleted, renamed (a file deleted and one
//! added with the same content in the same commit) and conflict copies
//! (added names holding `.sync-conflict-`). With PATH, only the changes at
//! or under PATH are listed, and commits without any are skipped.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use backer_fs::store::Store;
use backer_fs::tree::{dir, Entry, Kind, Timestamp};
use backer_fs::vfs::{entry_at, read_log, snapshot_name, Commit};
use backer_fs::{Error, Hash, NodeId};
use serde_json::{json, Value};

/// How long a history request to a running node may take.
const NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs `request` on the node serving `store_dir`, else `local` on the
/// store opened here. The node replies `{"result": ...}` or
/// `{"error": "..."}`.
pub(crate) fn via_node_or_store(
    store_dir: &Path,
    request: &Value,
    local: impl FnOnce(Store) -> Result<Value>,
) -> Result<Value> {
    let store_dir = super::require_store(store_dir)?;
    let line = request.to_string();
    for attempt in 0..50 {
        if let Some(reply) = crate::control::ask_timeout(&store_dir, &line, NODE_TIMEOUT)? {
            if let Some(e) = reply.get("error").and_then(Value::as_str) {
                bail!("{e}");
            }
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
        match Store::open(&store_dir) {
            Ok(store) => return local(store),
            // A node is starting: its socket comes up in a moment.
            Err(Error::Locked) if attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(super::open_store_error(&store_dir, e)),
        }
    }
    bail!("the store at {} is locked", store_dir.display())
}

/// The names of a path in the tree: `a/b/c`, `/a/b/c` and `./a//b/` alike.
/// The root is the empty path.
pub(crate) fn split_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("{path:?}: '..' is not allowed in a path"),
            p => out.push(p.as_bytes().to_vec()),
        }
    }
    Ok(out)
}

/// A commit time in nanoseconds since the epoch.
fn nanos(t: (i64, u32)) -> i128 {
    i128::from(t.0) * 1_000_000_000 + i128::from(t.1)
}

/// A commit time as snapshot folders name it.
pub(crate) fn time_name(t: (i64, u32)) -> String {
    snapshot_name(Timestamp {
        secs: t.0,
        nanos: t.1,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a time as snapshot folders name it (`2026-11-26T04:30:12.345Z`,
/// UTC), or a prefix of one down to the day (`2026-11-26T04:30`); the `Z`
/// is optional. Returns the end of the period it names (exclusive), in
/// nanoseconds since the epoch: the state at that time is the newest
/// commit before it.
pub(crate) fn parse_time(s: &str) -> Option<i128> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = t.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if b.len() < 10 || !sep(4, b'-') || !sep(7, b'-') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut unit: i128 = 86_400 * 1_000_000_000;
    let mut frac: i128 = 0;
    let rest = &b[10..];
    match rest.len() {
        0 => {}
        3 | 6 | 9 => {}
        n if n > 10 && sep(19, b'.') => {}
        _ => return None,
    }
    if !rest.is_empty() {
        if !sep(10, b'T') {
            return None;
        }
        let h = num(11..13)?;
        if h > 23 {
            return None;
        }
        secs += h * 3600;
        unit = 3600 * 1_000_000_000;
        if b.len() > 13 {
            if !sep(13, b':') {
                return None;
            }
            let mi = num(14..16)?;
            if mi > 59 {
                return None;
            }
            secs += mi * 60;
            unit = 60 * 1_000_000_000;
        }
        if b.len() > 16 {
            if !sep(16, b':') {
                return None;
            }
            let sec = num(17..19)?;
            if sec > 60 {
                return None;
            }
            secs += sec;
            unit = 1_000_000_000;
        }
        if b.len() > 19 {
            let digits = t.get(20..)?;
            if digits.is_empty() || digits.len() > 9 || num(20..b.len()).is_none() {
                return None;
            }
            unit = 10i128.pow(9 - digits.len() as u32);
            frac = i128::from(num(20..b.len())?) * unit;
        }
    }
    Some(i128::from(secs) * 1_000_000_000 + frac + unit)
}

/// The commits of the store, newest first.
pub(crate) fn commits(store: &Store) -> Result<Vec<Commit>> {
    read_log(store.kv(), usize::MAX).map_err(|e| anyhow!("cannot read the commit log: {e}"))
}

/// A commit's id in hex.
pub(crate) fn commit_id(c: &Commit) -> Result<String> {
    Ok(c.id().map_err(|e| anyhow!("{e}"))?.to_hex())
}

/// The commit `at` names: a time (the newest commit at or before it) or a
/// commit id (hex, at least 8 digits of it).
pub(crate) fn resolve_at<'c>(commits: &'c [Commit], at: &str) -> Result<&'c Commit> {
    let at = at.trim();
    if at.contains('-') || at.contains(':') {
        let end = parse_time(at).ok_or_else(|| {
            anyhow!("{at:?} is not a time like 2026-11-26T04:30:12.345Z (UTC) or a prefix of one")
        })?;
        return match commits.iter().find(|c| nanos(c.time) < end) {
            Some(c) => Ok(c),
            None => match commits.last() {
                Some(first) => bail!(
                    "no version at {at}: the first commit is at {}",
                    time_name(first.time)
                ),
                None => bail!("no version at {at}: the store has no commits"),
            },
        };
    }
    if at.len() < 8 || at.len() > 64 || !at.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("{at:?} is not a commit id (at least 8 hex digits) or a time");
    }
    let want = at.to_ascii_lowercase();
    let mut found = None;
    for c in commits {
        if commit_id(c)?.starts_with(&want) {
            if found.is_some() {
                bail!("the commit id prefix {at} is ambiguous: give more digits");
            }
            found = Some(c);
        }
    }
    found.ok_or_else(|| anyhow!("no commit with id {at}"))
}

/// One change of a commit.
struct Change {
    path: String,
    change: &'static str,
    kind: Kind,
    size: u64,
    hash: Hash,
    from: Option<String>,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDev => "chardev",
        Kind::BlockDev => "blockdev",
    }
}

fn join(prefix: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if prefix.is_empty() {
        name.into_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Lists the changes between two trees' entries.
struct Differ<'a> {
    nodes: &'a Store,
    out: Vec<Change>,
}

impl Differ<'_> {
    fn push(&mut self, path: &str, change: &'static str, e: &Entry) {
        self.out.push(Change {
            path: path.to_string(),
            change,
            kind: e.kind,
            size: e.size,
            hash: e.hash,
            from: None,
        });
    }

    /// Every name under the folder tree `hash`, as `change`.
    fn all(&mut self, path: &str, hash: Hash, change: &'static str) -> Result<()> {
        for e in dir::entries(self.nodes, hash)? {
            if !e.deleted {
                self.entry(&join(path, &e.name), &e, change)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &str, e: &Entry, change: &'static str) -> Result<()> {
        self.push(path, change, e);
        if e.kind == Kind::Dir {
            self.all(path, e.hash, change)?;
        }
        Ok(())
    }

    /// The changes from `a` to `b` at `path` (tombstones count as absent).
    fn pair(&mut self, path: &str, a: Option<&Entry>, b: Option<&Entry>) -> Result<()> {
        let a = a.filter(|e| !e.deleted);
        let b = b.filter(|e| !e.deleted);
        match (a, b) {
            (None, None) => {}
            (Some(a), None) => self.entry(path, a, "deleted")?,
            (None, Some(b)) => self.entry(path, b, "added")?,
            (Some(a), Some(b)) if a.kind == Kind::Dir && b.kind == Kind::Dir => {
                if a.mode != b.mode {
                    self.push(path, "modified", b);
                }
                if a.hash != b.hash {
                    self.dirs(path, a.hash, b.hash)?;
                }
            }
            (Some(a), Some(b)) if a.kind != b.kind => {
                self.entry(path, a, "deleted")?;
                self.entry(path, b, "added")?;
            }
            (Some(a), Some(b)) => {
                if (a.mode, a.mtime, a.size, a.hash, &a.target, a.rdev)
                    != (b.mode, b.mtime, b.size, b.hash, &b.target, b.rdev)
                {
                    self.push(path, "modified", b);
                }
            }
        }
        Ok(())
    }

    /// The changes between the folder trees `a` and `b` at `path`.
    fn dirs(&mut self, path: &str, a: Hash, b: Hash) -> Result<()> {
        for (x, y) in dir::diff(self.nodes, a, b)? {
            let Some(name) = x.as_ref().or(y.as_ref()).map(|e| e.name.clone()) else {
                continue;
            };
            self.pair(&join(path, &name), x.as_ref(), y.as_ref())?;
        }
        Ok(())
    }

    /// Pairs deletions and additions of the same content as renames, and
    /// marks added conflict copies.
    fn finish(mut self) -> Vec<Change> {
        let mut deleted: HashMap<Hash, Vec<usize>> = HashMap::new();
        for (i, c) in self.out.iter().enumerate() {
            if c.change == "deleted" && c.kind == Kind::File && c.hash != Hash::ZERO {
                deleted.entry(c.hash).or_default().push(i);
            }
        }
        let mut gone = vec![false; self.out.len()];
        for i in 0..self.out.len() {
            let c = &self.out[i];
            if c.change != "added" {
                continue;
            }
            if c.path.contains(".sync-conflict-") {
                self.out[i].change = "conflict";
                continue;
            }
            if c.kind != Kind::File || c.hash == Hash::ZERO {
                continue;
            }
            if let Some(j) = deleted.get_mut(&c.hash).and_then(Vec::pop) {
                gone[j] = true;
                let from = self.out[j].path.clone();
                self.out[i].change = "renamed";
                self.out[i].from = Some(from);
            }
        }
        self.out
            .into_iter()
            .zip(gone)
            .filter(|(_, g)| !g)
            .map(|(c, _)| c)
            .collect()
    }
}

/// The entry at `path` in `root` (`None` for the empty path: the root
/// itself, as a folder entry).
fn at_path(nodes: &Store, root: Hash, path: &[&[u8]]) -> Result<Option<Entry>> {
    if path.is_empty() {
        return Ok(Some(Entry {
            name: Vec::new(),
            kind: Kind::Dir,
            mode: 0o755,
            mtime: Timestamp::default(),
            size: 0,
            hash: root,
            target: Vec::new(),
            rdev: 0,
            vv: Default::default(),
            modified_by: NodeId::default(),
            deleted: false,
        }));
    }
    Ok(entry_at(nodes, root, path)?)
}

/// The log as `log --json` prints it: see the module documentation.
pub(crate) fn log_json(store: &Store, path: Option<&str>) -> Result<Value> {
    let names = split_path(path.unwrap_or(""))?;
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let prefix = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let empty = empty_dir_hash();
    let log = commits(store)?;
    let mut ever = names.is_empty();
    let mut out = Vec::new();
    for (i, c) in log.iter().enumerate() {
        let root = Hash(c.root);
        // The next older commit of the log: the first parent, unless a
        // collection dropped that one (then the changes since the last
        // version kept).
        let parent = log.get(i + 1).map_or(empty, |older| Hash(older.root));
        let read = |r| at_path(store, r, &names).map_err(|e| anyhow!("commit {}: {e}", c.seq));
        let (a, b) = (read(parent)?, read(root)?);
        ever |= a.is_some() || b.is_some();
        let mut d = Differ {
            nodes: store,
            out: Vec::new(),
        };
        if names.is_empty() {
            d.dirs("", parent, root)?;
        } else {
            d.pair(&prefix, a.as_ref(), b.as_ref())?;
        }
        let changes = d.finish();
        if changes.is_empty() && !names.is_empty() {
            continue;
        }
        out.push(json!({
            "seq": c.seq,
            "commit": commit_id(c)?,
            "root": root.to_hex(),
            "time": time_name(c.time),
            "author": NodeId(c.author).to_string(),
            "parents": c.parents.iter().map(|p| Hash(*p).to_hex()).collect::<Vec<_>>(),
            "changes": changes.iter().map(|ch| {
                let mut v = json!({
                    "path": ch.path,
                    "change": ch.change,
                    "kind": kind_name(ch.kind),
                    "size": ch.size,
                });
                if let Some(f) = &ch.from {
                    v["from"] = json!(f);
                }
                v
            }).collect::<Vec<_>>(),
        }));
    }
    if !ever {
        bail!("{prefix}: no such path in any version");
    }
    Ok(Value::Array(out))
}

/// The hash of the empty folder tree.
pub(crate) fn empty_dir_hash() -> Hash {
    let mut m = backer_fs::tree::MemNodes::new();
    dir::empty(&mut m).unwrap_or(Hash::ZERO)
}

/// A node id's short form, from its display form.
fn short_id(full: &str) -> String {
    full.parse::<NodeId>()
        .map(|id| id.short())
        .unwrap_or_else(|_| full.chars().take(7).collect())
}

/// `backer log [PATH] [--json]`.
pub(crate) fn run(store_dir: &Path, path: Option<&str>, json_out: bool) -> Result<()> {
    let req = json!({ "req": "log", "path": path });
    let log = via_node_or_store(store_dir, &req, |store| log_json(&store, path))?;
    if json_out {
        println!("{log}");
        return Ok(());
    }
    let empty = Vec::new();
    for c in log.as_array().unwrap_or(&empty) {
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        let commit = s("commit");
        println!(
            "{}  commit {}  by {}",
            s("time"),
            &commit[..commit.len().min(12)],
            short_id(&s("author"))
        );
        for ch in c["changes"].as_array().unwrap_or(&empty) {
            let path = ch["path"].as_str().unwrap_or("");
            let what = ch["change"].as_str().unwrap_or("");
            let kind = ch["kind"].as_str().unwrap_or("");
            let size = ch["size"].as_u64().unwrap_or(0);
            let shown = match ch["from"].as_str() {
                Some(f) => format!("{f} -> {path}"),
                None => path.to_string(),
            };
            let tail = match kind {
                "dir" => "/".to_string(),
                "file" => format!("  ({size} bytes)"),
                k => format!("  ({k})"),
            };
            println!("    {what:<9} {shown}{tail}");
        }
        if c["changes"].as_array().is_some_and(Vec::is_empty) {
            println!("    (no visible change)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_name_the_end_of_their_period() {
        let s = 1_795_667_400i128; // 2026-11-26T04:30:00Z
        let ns = 1_000_000_000i128;
        assert_eq!(parse_time("2026-11-26T04:30"), Some((s + 60) * ns));
        assert_eq!(parse_time("2026-11-26T04:30:00Z"), Some((s + 1) * ns));
        assert_eq!(
            parse_time("2026-11-26T04:30:00.123Z"),
            Some(s * ns + 124_000_000)
        );
        assert_eq!(parse_time("2026-11-26T04"), Some((s + 1800) * ns));
        assert_eq!(parse_time("2026-11-26"), Some((s + 19 * 3600 + 1800) * ns));
        for bad in [
            "2026-11-26T",
            "2026-11-26T04:3",
            "2026-13-01",
            "2026-11-26T25:00",
            "2026-11-26 04:30",
            "2026-11-26T04:30:00.",
            "2026-11-26T04:30:00.1234567890",
            "yesterday",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_names_round_trip() {
        let t = (1_795_667_412i64, 345_678_901u32);
        let name = time_name(t);
        assert_eq!(name, "2026-11-26T04:30:12.345Z");
        let end = parse_time(&name).unwrap();
        assert!(nanos(t) < end && end - nanos(t) <= 1_000_000);
    }

    #[test]
    fn paths_split_into_names() {
        assert_eq!(
            split_path("/a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(split_path("/").unwrap().is_empty());
        assert!(split_path("a/../b").is_err());
    }
}
