//! Live sessions: they keep running, announce every new local root, pull
//! every root the peer announces, and report progress.

use std::time::Duration;

use backer_fs::Hash;
use backer_replication::proto::AbortReason;
use backer_replication::{run, Channels, Config, Error, Event, Outcome, VfsLocal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::util::*;

struct Live {
    roots: watch::Sender<Hash>,
    events: mpsc::UnboundedReceiver<Event>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Outcome<VfsLocal>>,
}

fn start(node: &Node, stream: tokio::io::DuplexStream) -> Live {
    let (roots, roots_rx) = watch::channel(node.root());
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let ch = Channels {
        roots: Some(roots_rx),
        events: Some(ev_tx),
        stop: Some(stop_rx),
        ..Channels::default()
    };
    let done = tokio::spawn(run(
        stream,
        node.local(),
        node.hello(),
        Config::default(),
        ch,
    ));
    Live {
        roots,
        events,
        stop: Some(stop),
        done,
    }
}

impl Live {
    /// Waits (bounded, as a guard against hangs) for the next merge and
    /// returns every event seen up to it.
    async fn until_merged(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .expect("no merge within 60 s")
                .expect("session ended");
            let merged = matches!(ev, Event::Merged { .. });
            seen.push(ev);
            if merged {
                return seen;
            }
        }
    }

    /// Waits for the session to say both sides hold `root`.
    async fn until_in_sync(&mut self, root: Hash) {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .expect("not in sync within 60 s")
                .expect("session ended");
            if ev == (Event::InSync { root }) {
                return;
            }
        }
    }

    fn commit(&self, node: &Node) {
        self.roots.send_replace(node.root());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_carries_every_new_root_both_ways_until_stopped() {
    let (a, b) = (Node::new(), Node::new());
    let (x, y) = tokio::io::duplex(1 << 20);
    let (mut la, mut lb) = (start(&a, x), start(&b, y));
    la.until_in_sync(a.root()).await;

    for round in 0..5u8 {
        let data = bytes(u64::from(round), 100_000 + usize::from(round));
        a.write(&format!("from-a/{round}.bin"), &data);
        la.commit(&a);
        let events = lb.until_merged().await;
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::PullStarted { .. })));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Progress(p) if p.bytes_done > 0)),
            "progress with bytes: {events:?}"
        );
        assert_eq!(b.read(&format!("from-a/{round}.bin")).unwrap(), data);

        b.write(&format!("from-b/{round}.txt"), &[round; 10]);
        lb.commit(&b);
        la.until_merged().await;
        assert_eq!(
            a.read(&format!("from-b/{round}.txt")).unwrap(),
            vec![round; 10]
        );
        la.until_in_sync(a.root()).await;
    }
    assert_eq!(a.root(), b.root());
    assert_eq!(a.snapshot(""), b.snapshot(""));

    la.stop.take().unwrap().send(()).unwrap();
    let oa = la.done.await.unwrap();
    let ob = lb.done.await.unwrap();
    assert!(oa.result.is_ok(), "{:?}", oa.result);
    assert!(
        matches!(ob.result, Err(Error::PeerAborted(AbortReason::Shutdown))),
        "{:?}",
        ob.result
    );
    assert_eq!(oa.report.stats.merges, 5);
    assert_eq!(ob.report.stats.merges, 5);
}

/// A root published just before the stop (a node's last commit as it
/// shuts down) is announced before the goodbye, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_root_before_a_stop_is_announced_before_the_goodbye() {
    use backer_replication::proto::{encode, Message};
    use backer_replication::session::read_frame;
    use tokio::io::AsyncWriteExt;

    for round in 0..20u8 {
        let node = Node::new();
        let (x, y) = tokio::io::duplex(1 << 20);
        let mut live = start(&node, x);
        let (mut rd, mut wr) = tokio::io::split(y);
        let other = Node::new();
        wr.write_all(&encode(&Message::Hello(other.hello())).unwrap())
            .await
            .unwrap();
        // The first announcement: the session runs.
        let first = node.root();
        loop {
            match read_frame(&mut rd).await.unwrap() {
                Some((Message::Root(r), _)) if r == first => break,
                Some(_) => continue,
                None => panic!("the session ended"),
            }
        }
        node.write("last", &[round; 100]);
        let last = node.root();
        live.commit(&node);
        live.stop.take().unwrap().send(()).unwrap();
        let mut announced = false;
        loop {
            match read_frame(&mut rd).await.unwrap() {
                Some((Message::Root(r), _)) => announced |= r == last,
                Some((Message::Abort(reason), _)) => {
                    assert_eq!(reason, AbortReason::Shutdown);
                    break;
                }
                Some(_) => continue,
                None => panic!("no goodbye"),
            }
        }
        assert!(announced, "round {round}: the goodbye came first");
        assert!(live.done.await.unwrap().result.is_ok());
    }
}
