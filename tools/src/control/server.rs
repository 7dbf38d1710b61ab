//! The node's side of the socket: one thread per connection (at most
//! [`MAX_CONNS`] at once); its peer's credentials checked, then request
//! lines answered one by one with [`Response`] lines by the node's
//! [`Local`].

use std::fs::{self, DirBuilder, Permissions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::creds::refusal;
use super::{socket_path, Local, Request, Response};

/// The longest request line read (a restore's paths fit many times).
const MAX_REQUEST: u64 = 64 << 10;

/// At most this many connections are served at once. Only the owner and
/// root get past the credential check, but every connection holds a thread
/// until then, and a stuck script opening connections in a loop must not
/// use up the node's threads or descriptors.
const MAX_CONNS: usize = 64;

/// How long a connection may stay silent before it is closed: a command
/// writing an export asks again as soon as a chunk is written.
const IDLE: Duration = Duration::from_secs(300);

/// Binds the socket at `path` 0600 whatever the umask: bound inside a
/// fresh 0700 folder, where no one else can reach it, made 0600, then
/// renamed into place.
fn bind_private(path: &Path) -> Result<UnixListener> {
    let cannot = || format!("cannot listen on {}", path.display());
    let dir = path.with_extension(format!("new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir); // a killed node's, with our pid
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(cannot)?;
    let bound = (|| {
        let inner = dir.join("s");
        let listener = UnixListener::bind(&inner)?;
        fs::set_permissions(&inner, Permissions::from_mode(0o600))?;
        let _ = fs::remove_file(path); // stale: we hold the store lock
        fs::rename(&inner, path)?;
        Ok::<_, std::io::Error>(listener)
    })();
    let _ = fs::remove_dir_all(&dir);
    bound.with_context(cannot)
}

/// How often a followed event stream with nothing to tell sends an empty
/// batch: a follower that went away is noticed (its thread ends).
const EVENTS_ALIVE: Duration = Duration::from_secs(15);

/// Serves the socket of the node's `local` on a thread until the process
/// exits.
pub(crate) fn serve(store: &Path, local: Arc<Local>) -> Result<()> {
    let listener = bind_private(&socket_path(store))?;
    std::thread::Builder::new()
        .name("backer-control".into())
        .spawn(move || {
            let mut errors = crate::accept_errors::AcceptErrors::default();
            let live = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors: wait, do not spin.
                        errors.note("control", &e);
                        std::thread::sleep(crate::accept_errors::BACKOFF);
                        continue;
                    }
                };
                let Some(slot) = Slot::take(&live) else {
                    refuse_busy(conn);
                    continue;
                };
                // One thread per request: a long one (gc, a big restore)
                // must not hold up `status`.
                let local = local.clone();
                let spawned = std::thread::Builder::new()
                    .name("backer-control-req".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = answer(conn, &local) {
                            tracing::warn!(error = %e, "control request failed");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot answer a control request");
                }
            }
        })?;
    Ok(())
}

/// One of the [`MAX_CONNS`] places, given back when dropped (whichever way
/// the connection's thread ends).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(live: &Arc<AtomicUsize>) -> Option<Slot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CONNS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(live.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells a connection over the cap why it is closed, without waiting on
/// it (the accept loop must not block on a client that does not read).
fn refuse_busy(conn: UnixStream) {
    let _ = conn.set_nonblocking(true);
    let why = format!("the node is serving {MAX_CONNS} connections; try again");
    tracing::warn!("control socket: {why}");
    let mut w = &conn;
    if let Ok(line) = serde_json::to_string(&Response::Error(why)) {
        let _ = writeln!(w, "{line}");
    }
}

/// Answers the requests of `conn` until it closes, if its peer is served;
/// else writes one refusal line and closes it.
fn answer(conn: UnixStream, local: &Local) -> Result<()> {
    let mut w = &conn;
    if let Some(why) = refusal(&conn) {
        tracing::warn!("control socket: {why}");
        writeln!(w, "{}", serde_json::to_string(&Response::Error(why))?)?;
        return Ok(());
    }
    conn.set_read_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(&conn);
    loop {
        let mut line = String::new();
        if (&mut reader).take(MAX_REQUEST).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = match serde_json::from_str::<Request>(line.trim()) {
            Ok(Request::Events { since }) if local.bus().is_some() => {
                return follow(&conn, local, since);
            }
            Ok(req) => local.handle(req),
            Err(e) => Response::Error(format!("a bad request: {e}")),
        };
        writeln!(w, "{}", serde_json::to_string(&reply)?)?;
        if !line.ends_with('\n') {
            return Ok(()); // cut at MAX_REQUEST, or the end came
        }
    }
}

/// Streams the bus to `conn` from after `since` until the peer goes away
/// (a write fails).
fn follow(conn: &UnixStream, local: &Local, mut since: u64) -> Result<()> {
    let Some(bus) = local.bus() else {
        return Ok(());
    };
    let mut w = conn;
    loop {
        let batch = bus.wait(since, EVENTS_ALIVE);
        if let Some(last) = batch.last() {
            since = last.id;
        }
        let line = serde_json::to_string(&Response::Events(batch))?;
        if writeln!(w, "{line}").is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backer_fs::store::Store;

    /// Sends `line` to a server answering with a fresh store's `Local`.
    fn exchange(line: &str) -> Response {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(Store::create(&dir.path().join("s")).unwrap()).unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        let mut w = &client;
        writeln!(w, "{line}").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        answer(server, &local).unwrap();
        let mut reply = String::new();
        BufReader::new(&client).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }

    #[test]
    fn requests_are_json_tagged_by_req_and_nothing_else() {
        match exchange(r#"{"req":"status"}"#) {
            Response::Status(s) => assert_eq!((s.commits, s.pid), (0, None)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            exchange(r#"{"req":"log","path":null}"#),
            Response::Log(Vec::new())
        );
        for bad in ["status", "reload", r#"{"req":"nope"}"#, "{"] {
            match exchange(bad) {
                Response::Error(e) => assert!(e.starts_with("a bad request"), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_socket_is_its_owners_alone_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backer.sock");
        std::fs::write(&path, b"stale").unwrap();
        let _listener = bind_private(&path).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the private folder is gone");
        UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn a_connection_may_ask_several_times() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(Store::create(&dir.path().join("s")).unwrap()).unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        let mut w = &client;
        writeln!(w, r#"{{"req":"status"}}"#).unwrap();
        writeln!(w, r#"{{"req":"version","at":null}}"#).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        answer(server, &local).unwrap();
        let lines: Vec<String> = BufReader::new(&client)
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            serde_json::from_str::<Response>(&lines[1]).unwrap(),
            Response::Version(None)
        );
    }

    #[test]
    fn events_stream_from_since_until_the_follower_goes() {
        use backer_fs::events::{Bus, EventKind};
        use backer_fs::vfs::{Vfs, VfsOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let vfs = Arc::new(Vfs::new(Arc::new(store), VfsOptions::default()).unwrap());
        let bus = Bus::new();
        let error = |n: u32| EventKind::Error {
            what: format!("e{n}"),
            place: "test".into(),
        };
        bus.publish(error(1));
        bus.publish(error(2));
        let local = Arc::new(Local::node(vfs, None, None, bus.clone()));
        let (client, server) = UnixStream::pair().unwrap();
        let mut w = &client;
        writeln!(w, r#"{{"req":"events","since":1}}"#).unwrap();
        let l = local.clone();
        let served = std::thread::spawn(move || answer(server, &l));
        let mut r = BufReader::new(&client);
        let mut next = || {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            match serde_json::from_str(&line).unwrap() {
                Response::Events(v) => v.iter().map(|e| e.id).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(next(), [2], "what came after since");
        bus.publish(error(3));
        assert_eq!(next(), [3], "then each as it comes");
        drop(r);
        drop(client);
        bus.publish(error(4));
        served.join().unwrap().unwrap();
    }

    #[test]
    fn connections_past_the_cap_are_refused_until_one_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        let local = Arc::new(Local::open(Store::create(&store).unwrap()).unwrap());
        serve(&store, local).unwrap();
        let ask = |c: &UnixStream| {
            let mut w = c;
            writeln!(w, r#"{{"req":"status"}}"#).unwrap();
            let mut line = String::new();
            BufReader::new(c).read_line(&mut line).unwrap();
            serde_json::from_str::<Response>(&line).unwrap()
        };
        // Each held connection has been answered once: its thread is live.
        let mut held: Vec<UnixStream> = (0..MAX_CONNS)
            .map(|_| {
                let c = UnixStream::connect(socket_path(&store)).unwrap();
                assert!(matches!(ask(&c), Response::Status(_)));
                c
            })
            .collect();
        // Refused at once, before it asks (writing to it could meet EPIPE).
        let read = |c: &UnixStream| {
            let mut line = String::new();
            BufReader::new(c).read_line(&mut line).unwrap();
            serde_json::from_str::<Response>(&line).unwrap()
        };
        let over = UnixStream::connect(socket_path(&store)).unwrap();
        match read(&over) {
            Response::Error(e) => assert!(e.contains("serving 64 connections"), "{e}"),
            other => panic!("{other:?}"),
        }
        drop(held.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let c = UnixStream::connect(socket_path(&store)).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut w = &c;
            let _ = writeln!(w, r#"{{"req":"status"}}"#);
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            match serde_json::from_str::<Response>(&line) {
                Ok(Response::Status(_)) => break,
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => panic!("a place was given back: {line} {other:?}"),
            }
        }
    }
}
