//! `backer stop`: stop the store's running node cleanly. The node is found
//! over its control socket (which answers only its own user and root) and
//! sent SIGTERM, the signal that unmounts cleanly, tells the peers and
//! leaves a store that opens again (DESIGN.md); the command returns once
//! the node has finished.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::backend::Remote;

/// How long a node may take to stop (its last commit is made durable).
const STOP_WAIT: Duration = Duration::from_secs(120);

/// Stops the node running on the store at `store_dir`; an error if none
/// runs.
pub(crate) fn run(store_dir: &Path) -> Result<()> {
    let store = super::require_store(store_dir)?;
    let pid = stop(&store)?;
    println!("Stopped the node (pid {pid}) of {}", store.display());
    Ok(())
}

/// Sends the store's running node SIGTERM and waits until it has exited;
/// returns its pid.
pub(crate) fn stop(store: &Path) -> Result<u32> {
    let Some((_, status)) = Remote::find(store)? else {
        bail!("no node runs on the store at {}", store.display());
    };
    let pid = status
        .pid
        .ok_or_else(|| anyhow!("the node on {} did not say its pid", store.display()))?;
    let raw = libc::pid_t::try_from(pid).map_err(|_| anyhow!("bad pid {pid}"))?;
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(raw, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot stop the node (pid {pid}): {e}");
    }
    let pid_file = store.join("backer.pid");
    let deadline = Instant::now() + STOP_WAIT;
    // Done when the node has removed its pid file (its very last step)
    // or is gone (a zombie counts: a container's init may never reap it).
    while pid_file.exists() && running(raw) {
        if Instant::now() > deadline {
            bail!(
                "the node (pid {pid}) did not stop within {}s (see {})",
                STOP_WAIT.as_secs(),
                store.join("backer.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// Whether process `pid` exists and is not a zombie (a process whose
/// main thread is a zombie while others still run is running).
fn running(pid: libc::pid_t) -> bool {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    if threads > 1 {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_free_pid_does_not() {
        assert!(running(std::process::id() as libc::pid_t));
        assert!(!running(libc::pid_t::MAX));
    }
}
