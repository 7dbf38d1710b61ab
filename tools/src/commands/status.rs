//! `backer status [--json]`: root hash, node id, peers (id, address,
//! connected, last sync), and whether a node runs. Asks the running node
//! over its socket, else opens the store.

use std::path::Path;

use anyhow::Result;
use backer_fs::history::printable;

use super::backend::Backend;

/// Prints the status, as one JSON object with `json`.
pub(crate) fn run(store_dir: &Path, json: bool) -> Result<()> {
    let status = serde_json::to_value(Backend::connect(store_dir)?.status()?)?;
    if json {
        println!("{status}");
        return Ok(());
    }
    let field = |k: &str| status[k].as_str().map(|v| printable(v).into_owned());
    println!("node    {}", field("node").unwrap_or_default());
    println!("root    {}", field("root").unwrap_or_default());
    match (status["pid"].as_u64(), field("mount")) {
        (Some(pid), Some(m)) => println!("running pid {pid}, mounted at {m}"),
        (Some(pid), None) => println!("running pid {pid}"),
        (None, _) => println!("not running"),
    }
    if let Some(listen) = field("listen") {
        println!("listen  {listen}");
    }
    println!("commits {}", status["commits"].as_u64().unwrap_or(0));
    let missing = status["missing_chunks"].as_array().map_or(0, Vec::len);
    if missing > 0 {
        println!("missing {missing} chunks no peer could supply or that failed their check");
    }
    if let Some(line) = scrub_line(&status["scrub"]) {
        println!("scrub   {line}");
    }
    let ign = &status["ignored"];
    let (local, remote) = (
        ign["local"].as_u64().unwrap_or(0),
        ign["remote"].as_u64().unwrap_or(0),
    );
    if local > 0 || remote > 0 {
        println!("ignored {local} here, {remote} from peers (not fetched)");
    }
    if let Some(e) = ign["error"].as_str() {
        if ign["held_back"].as_bool().unwrap_or(false) {
            println!(
                "ignore  {}: new paths are held back until it parses",
                printable(e)
            );
        } else {
            println!(
                "ignore  {}: the last good patterns stay in force",
                printable(e)
            );
        }
    }
    let peers = status["peers"].as_array().map_or(&[][..], Vec::as_slice);
    if peers.is_empty() {
        println!("peers   none");
    }
    for (i, p) in peers.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 { "peers   " } else { "        " },
            peer_line(p, &field("node").unwrap_or_default())
        );
    }
    Ok(())
}

/// The scrub: running (how far), else when it last ran and runs next.
fn scrub_line(s: &serde_json::Value) -> Option<String> {
    let when = |k: &str| {
        s[k].as_u64().map(|t| {
            let secs = i64::try_from(t).unwrap_or(i64::MAX);
            backer_fs::vfs::snapshot_name(backer_fs::tree::Timestamp { secs, nanos: 0 })
        })
    };
    if let Some(r) = s["running"].as_object() {
        let done = r["done_bytes"].as_u64().unwrap_or(0);
        let total = r["total_bytes"].as_u64().unwrap_or(0);
        return Some(format!("running: {done} of {total} bytes checked"));
    }
    match (when("last"), when("next")) {
        (None, None) => None,
        (last, next) => Some(format!(
            "last {}, next {}",
            last.as_deref().unwrap_or("never"),
            next.as_deref().unwrap_or("when the node runs")
        )),
    }
}

/// One peer of the status object: id, address, connection, last sync and
/// what is left to fetch from it.
fn peer_line(p: &serde_json::Value, me: &str) -> String {
    let id = printable(p["id"].as_str().unwrap_or("?"));
    let addr = printable(p["addr"].as_str().unwrap_or("(dials us)"));
    let state = super::peer::live_state(
        p["connected"].as_bool().unwrap_or(false),
        p["last_sync"].as_u64(),
    );
    let mut line = format!("{id}  {addr}  {state}");
    if p["refused_us"].as_bool().unwrap_or(false) {
        let refusal = super::peer::refusal(p["id"].as_str().unwrap_or("?"), me);
        line.push_str(&format!(": {refusal}"));
    }
    let files = p["files_to_go"].as_u64().unwrap_or(0);
    let bytes = p["bytes_to_go"].as_u64().unwrap_or(0);
    if files > 0 || bytes > 0 {
        line.push_str(&format!(
            ", {} ({}) to fetch",
            super::plural(files, "file"),
            super::plural(bytes, "byte")
        ));
    }
    line
}
