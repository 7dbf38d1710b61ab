//! The driver's own bounds, which a whole session cannot show: how much
//! of a peer's frames waits in memory, and how the writer gives up on a
//! peer that stopped reading.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;

use super::*;

/// A frame of about 4 MiB.
fn big_frame() -> Vec<u8> {
    proto::encode(&Message::Chunk(vec![7; 4 << 20])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_waiting_for_the_driver_take_a_bounded_number_of_bytes() {
    let (theirs, ours) = tokio::io::duplex(64 << 10);
    let (tx, _queue) = mpsc::channel(INPUTS); // never taken: a busy driver
    let room = Arc::new(Semaphore::new(INPUT_BYTES));
    let reader = tokio::spawn(read_loop(ours, tx, room.clone()));
    let frame = big_frame();
    let written = Arc::new(AtomicUsize::new(0));
    // Far more than the byte bound, far fewer than INPUTS frames.
    let frames = 20;
    let writer = {
        let written = written.clone();
        let mut theirs = theirs;
        tokio::spawn(async move {
            for _ in 0..frames {
                theirs.write_all(&frame).await.unwrap();
                written.fetch_add(1, Ordering::SeqCst);
            }
            theirs
        })
    };
    // The reader stops with the queue full by bytes: the writer cannot
    // finish (without the bound it wrote all 20 frames, 80 MiB queued).
    let finished = tokio::time::timeout(Duration::from_secs(3), async {
        while room.available_permits() >= big_frame().len() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(finished.is_ok(), "the reader never filled its queue");
    let held = INPUT_BYTES - room.available_permits();
    assert!(held <= INPUT_BYTES, "{held} bytes queued");
    let done = tokio::time::timeout(Duration::from_secs(2), writer).await;
    let n = written.load(Ordering::SeqCst);
    println!("queued {held} bytes; the peer got {n} of {frames} frames written");
    assert!(done.is_err(), "all {frames} frames were taken in");
    // The queue's frames, the one waiting for room (read up to its
    // payload), and what the pipe and the read buffer hold.
    assert!(
        n <= INPUT_BYTES / big_frame().len() + 2,
        "{n} frames written"
    );
    reader.abort();
}

// On tokio's paused clock: the waits below pass only when every task
// waits, so no pause of a busy machine can pass for a stall.
#[tokio::test(start_paused = true)]
async fn a_writer_gives_up_on_a_peer_that_stopped_reading() {
    let (_theirs, ours) = tokio::io::duplex(64 << 10); // never read
    let (out_tx, out_rx) = mpsc::channel(64);
    let (in_tx, mut inputs) = mpsc::channel(INPUTS);
    let limit = Duration::from_millis(200);
    let writer = tokio::spawn(write_loop(Stall::new(ours, limit), out_rx, in_tx));
    let frame = Outgoing::new(&Message::Chunk(vec![1; 1 << 20])).unwrap();
    // The driver's queue fills, then the writer gives up and drops it.
    let sent = out_tx.send(frame).await;
    assert!(sent.is_ok());
    let written = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the writer waits forever on a peer that does not read")
        .unwrap();
    assert!(written.stalled);
    assert!(matches!(inputs.recv().await, Some(Input::Stalled(d)) if d == limit));
    assert!(out_tx.is_closed(), "the driver would keep queueing frames");
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_a_stalled_one() {
    let (mut theirs, ours) = tokio::io::duplex(4 << 10);
    // Far less than the whole write takes (64 reads, 50 ms apart), more
    // than any one pause between reads.
    let limit = Duration::from_millis(300);
    let mut w = Stall::new(ours, limit);
    let data = vec![5u8; 256 << 10];
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4 << 10];
        loop {
            // Reads a little, often: never a pause as long as the limit.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match tokio::io::AsyncReadExt::read(&mut theirs, &mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    w.write_all(&data).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    assert_eq!(reader.await.unwrap().len(), data.len());
}
