//! `backer stop`: stop the store's running node cleanly. The node is found
//! over its control socket (which answers only its own user and root) and
//! sent SIGTERM, the signal that unmounts cleanly, tells the peers and
//! leaves a store that opens again (DESIGN.md); the command returns once
//! the node has exited.
//!
//! Which process that is comes from the kernel, not from the node's word:
//! the pid of the socket's other end (`SO_PEERCRED`, translated into our
//! pid namespace), held as a pidfd (so a pid reused meanwhile is never
//! signalled), the node then asked once more over the same connection (so
//! the pidfd is known to be the node's), and signalled and waited on
//! through the pidfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::control::client::Session;
use crate::control::{Request, Response};

/// How long a node may take to stop (its last commit is made durable).
const STOP_WAIT: Duration = Duration::from_secs(120);

/// How long the node may take to answer.
const QUICK: Duration = Duration::from_secs(10);

/// Stops the node running on the store at `store_dir`; an error if none
/// runs.
pub(crate) fn run(store_dir: &Path) -> Result<()> {
    let store = super::require_store(store_dir)?;
    let pid = stop(&store)?;
    println!("Stopped the node (pid {pid}) of {}", store.display());
    Ok(())
}

/// Sends the store's running node SIGTERM and waits until it has exited;
/// returns its pid (as our pid namespace sees it).
pub(crate) fn stop(store: &Path) -> Result<u32> {
    let Some(mut session) = Session::connect(store, QUICK)? else {
        bail!("no node runs on the store at {}", store.display());
    };
    let pid = session
        .peer_pid()
        .context("cannot tell which process the node is")?;
    if pid <= 0 {
        bail!(
            "cannot stop the node of {}: it runs in another pid namespace (stop it from there)",
            store.display()
        );
    }
    let pidfd = pidfd_open(pid)?;
    // Still answering after the pidfd was opened: the pid was the node's
    // then, and the pidfd is bound to that process for good.
    match session.call(&Request::Status)? {
        Response::Status(_) => {}
        _ => bail!("the node (pid {pid}) gave an unexpected answer"),
    }
    drop(session);
    pidfd_send_signal(&pidfd, libc::SIGTERM)
        .with_context(|| format!("cannot stop the node (pid {pid})"))?;
    if !wait_exit(&pidfd, STOP_WAIT)? {
        bail!(
            "the node (pid {pid}) did not stop within {}s (see {})",
            STOP_WAIT.as_secs(),
            store.join("backer.log").display()
        );
    }
    Ok(pid as u32)
}

/// A pidfd for process `pid`; an error where the kernel has none (before
/// Linux 5.3): signalling a bare pid could hit a reused one.
fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            bail!("cannot stop the node (pid {pid}): this kernel has no pidfd_open (Linux 5.3 or newer is needed)");
        }
        bail!("cannot stop the node (pid {pid}): {e}");
    }
    let fd = i32::try_from(fd).context("pidfd_open returned a bad fd")?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, sig)`.
fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: an open pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `limit` for the process of `pidfd` to exit (a zombie
/// counts: a container's init may never reap it); whether it did.
fn wait_exit(pidfd: &OwnedFd, limit: Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            return Ok(false);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("cannot wait for the node");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process signalled through its pidfd is waited for until it has
    /// exited (here a zombie: we reap it only afterwards).
    #[test]
    fn a_pidfd_signals_and_waits_for_its_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id() as libc::pid_t).unwrap();
        assert!(!wait_exit(&pidfd, Duration::from_millis(50)).unwrap());
        pidfd_send_signal(&pidfd, libc::SIGTERM).unwrap();
        assert!(wait_exit(&pidfd, STOP_WAIT).unwrap());
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    /// The pid of a socket's other end comes from the kernel.
    #[test]
    fn the_peer_pid_of_a_socket_is_the_listening_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let pid = crate::control::creds::peer_pid(&conn).unwrap();
        assert_eq!(pid, std::process::id() as libc::pid_t);
    }
}
