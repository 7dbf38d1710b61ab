//! Who is on the other end of a connection to the socket: only the node's
//! own user, root, and the store's owner when root runs the node for them
//! (an fstab line) are served. The socket's mode is a first fence (it
//! is made 0600), this is the one that holds whatever the mode became.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The user id of the process that connected `conn`, as the kernel
/// recorded it at `connect`.
#[cfg(target_os = "linux")]
pub(crate) fn peer_uid(conn: &UnixStream) -> io::Result<u32> {
    peer_cred(conn).map(|c| c.uid)
}

/// The process id of the other end of `conn` (for a client: the node that
/// listens), as the kernel recorded it, translated into our pid namespace;
/// 0 if that process is not visible in it.
#[cfg(target_os = "linux")]
pub(crate) fn peer_pid(conn: &UnixStream) -> io::Result<libc::pid_t> {
    peer_cred(conn).map(|c| c.pid)
}

/// `SO_PEERCRED` of `conn`.
#[cfg(target_os = "linux")]
fn peer_cred(conn: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a connected socket, and an out-parameter of the size given.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

/// The user id of the process that connected `conn`.
#[cfg(any(target_os = "macos", target_os = "freebsd", target_os = "openbsd"))]
pub(crate) fn peer_uid(conn: &UnixStream) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: a connected socket and two out-parameters.
    if unsafe { libc::getpeereid(conn.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// Elsewhere nobody can be told apart: every connection is refused.
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    target_os = "openbsd"
)))]
pub(crate) fn peer_uid(_: &UnixStream) -> io::Result<u32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are not known on this system",
    ))
}

/// Why the peer of `conn` is not served, or `None` if it is: the node's
/// own user, root, and the owner of the store the node acts for.
pub(crate) fn refusal(conn: &UnixStream) -> Option<String> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    verdict(peer_uid(conn), me, crate::store_dir::acting_owner_uid())
}

/// [`refusal`] for a peer `uid`, a node running as `me` and acting for
/// the store owner `owner`.
fn verdict(uid: io::Result<u32>, me: u32, owner: Option<u32>) -> Option<String> {
    match uid {
        Ok(uid) if uid == me || uid == 0 || Some(uid) == owner => None,
        Ok(uid) => Some(format!(
            "refused: this node serves only its store's owner (uid {}) and root, not uid {uid}",
            owner.unwrap_or(me)
        )),
        Err(e) => Some(format!("refused: cannot tell who is asking: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_and_root_are_served_and_no_one_else() {
        assert_eq!(verdict(Ok(1000), 1000, None), None);
        assert_eq!(verdict(Ok(0), 1000, None), None);
        assert!(verdict(Ok(1001), 1000, None).is_some());
        // Root runs the node for uid 1000's store (an fstab line).
        assert_eq!(verdict(Ok(1000), 0, Some(1000)), None);
        assert_eq!(verdict(Ok(0), 0, Some(1000)), None);
        let other = verdict(Ok(1001), 0, Some(1000)).unwrap();
        assert!(
            other.contains("(uid 1000)") && other.contains("not uid 1001"),
            "{other}"
        );
        assert!(verdict(Err(io::Error::other("no")), 0, None).is_some());
    }
}
