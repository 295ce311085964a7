//! Issue 13: streaming methods over the mesh, with real node processes: order, typed
//! errors, flow control bounding a slow reader's server, cancellation both ways, unary
//! calls beside a stream, and a replica killed or drained mid-stream.

use std::time::{Duration, Instant};

use meshrpc::{call::Reply, transport::Connection, Codec, Error, Stream};
use meshrpc_tests::{
    harness::{eventually, terminate, Node},
    hostile::status_kib,
    lab::{Lab, LabClient, LabError},
    streams::{Producers, Streamer, StreamerClient, Tick},
};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

async fn node(args: &[&str]) -> (Node, Connection) {
    let mut all = vec!["--tag", "streams"];
    all.extend_from_slice(args);
    let node = Node::start(LABNODE, &all).await;
    let conn = meshrpc::connect(node.addr).await.expect("connect");
    (node, conn)
}

async fn producers(client: &StreamerClient) -> Producers {
    client.producers().await.expect("producers")
}

#[tokio::test(flavor = "multi_thread")]
async fn server_streams_arrive_in_order_and_end_with_their_typed_error() {
    let (_node, conn) = node(&[]).await;
    for codec in [Codec::Json, Codec::Postcard] {
        let client = StreamerClient::new(conn.clone()).with_codec(codec);
        let mut ticks = client.count(0, 1000, 3).await.expect("stream opens");
        for n in 0..1000 {
            assert_eq!(ticks.next().await, Some(Ok(Tick { n, pad: "xxx".into() })), "{codec:?}");
        }
        assert_eq!(ticks.next().await, None, "a clean end");

        let mut failing = client.fail_at(3).await.unwrap();
        let mut got = Vec::new();
        while let Some(item) = failing.next().await {
            got.push(item);
        }
        assert_eq!(got, [Ok(0), Ok(1), Ok(2), Err(LabError::Refused("item 3".into()))]);

        // Refused before any item: the call's own error.
        assert_eq!(client.refuse_stream().await.err(), Some(LabError::Refused("no stream today".into())));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_bidirectional_streams_and_a_bad_item_fails_its_call_alone() {
    let (_node, conn) = node(&[]).await;
    let client = StreamerClient::new(conn.clone());
    assert_eq!(client.sum(Stream::iter(1..=1000)).await, Ok(500_500));
    assert_eq!(client.sum(Stream::empty()).await, Ok(0));

    let mut chat = client.chat("> ".into(), Stream::iter(["a".to_string(), "b".into()])).await.unwrap();
    assert_eq!(chat.next().await, Some(Ok("> a".into())));
    assert_eq!(chat.next().await, Some(Ok("> b".into())));
    assert_eq!(chat.next().await, None);

    // Items that do not decode: the third is a string where a number goes.
    let items = ["1", "2", "\"three\"", "4"].map(|i| Ok(Reply::Ok(i.into())));
    let (tx, raw) = meshrpc::call::Items::channel(8);
    for item in items {
        tx.send(item).await.unwrap();
    }
    drop(tx);
    let answer = meshrpc::Channel::from(conn.clone())
        .call_raw_items("streamer", "sum", bytes::Bytes::from_static(b"{}"), Some(raw), false)
        .await;
    let Ok(Reply::AppError(detail)) = answer else { panic!("{answer:?}") };
    let detail = String::from_utf8_lossy(&detail);
    assert!(detail.contains("bad_request") && detail.contains("stream item 2"), "{detail}");

    // Items sent to a method that takes none, and none to one that needs them.
    let (_tx, raw) = meshrpc::call::Items::channel(1);
    let refused = meshrpc::Channel::from(conn.clone())
        .call_raw_items("streamer", "producers", bytes::Bytes::from_static(b"{}"), Some(raw), false)
        .await;
    assert!(
        matches!(&refused, Err(Error::BadRequest { message }) if message.contains("takes no stream")),
        "{refused:?}"
    );
    let missing =
        meshrpc::Channel::from(conn.clone()).call_raw("streamer", "sum", bytes::Bytes::from_static(b"{}")).await;
    assert!(
        matches!(&missing, Err(Error::BadRequest { message }) if message.contains("takes a stream")),
        "{missing:?}"
    );

    // The connection and its other calls live on.
    assert_eq!(client.sum(Stream::iter([2, 3])).await, Ok(5));
}

/// A million small items through a reader that pauses: the server produces only what the
/// reader's credit allows (1 MiB of frames, plus what the socket buffers hold), its
/// memory stays bounded, and every item arrives in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_bounds_what_the_server_holds_and_loses_nothing() {
    let (node, conn) = node(&[]).await;
    let pid = node.child.id().unwrap();
    let client = StreamerClient::new(conn).with_codec(Codec::Postcard).without_stream_deadline();
    let idle_kib = status_kib(pid, "VmRSS");
    const TOTAL: u64 = 1_000_000;
    // 32-byte items: a u64 and 23 bytes of pad, postcard-encoded with their lengths.
    let mut ticks = client.count(0, TOTAL, 23).await.unwrap();
    let mut next = 0;
    for _ in 0..1000 {
        assert_eq!(ticks.next().await.unwrap().unwrap().n, next);
        next += 1;
    }
    // The reader stops. The producer gets ahead by at most the window and the buffers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ahead = producers(&client).await.produced - next;
    // Each item costs 9 + 33 bytes of credit; the socket buffers and the node's queue
    // hold at most a few MiB more.
    let window_items = u64::from(meshrpc::proto::STREAM_WINDOW) / 42;
    assert!(ahead <= window_items + 8 * 1024 * 1024 / 42, "{ahead} items ahead of the reader");
    let paused_kib = status_kib(pid, "VmRSS");
    while let Some(item) = ticks.next().await {
        assert_eq!(item.unwrap().n, next, "in order, none lost");
        next += 1;
        if next % 100_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(next, TOTAL);
    let end_kib = status_kib(pid, "VmRSS");
    // The bound in docs/streams.md: the node's RSS stays under 2 × its idle RSS plus the
    // window, however many items go through.
    let bound = 2 * idle_kib + u64::from(meshrpc::proto::STREAM_WINDOW) / 1024;
    assert!(
        paused_kib <= bound && end_kib <= bound,
        "idle {idle_kib} KiB, paused {paused_kib}, end {end_kib}, bound {bound}"
    );
    eprintln!("node RSS: idle {idle_kib} KiB, paused {paused_kib} KiB, after 1e6 items {end_kib} KiB; {ahead} items ahead while paused");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_stream_drops_its_producer_on_the_server() {
    let (_node, conn) = node(&[]).await;
    let client = StreamerClient::new(conn).without_stream_deadline();
    let mut ticks = client.ticks(5).await.unwrap();
    for n in 1..=3 {
        assert_eq!(ticks.next().await, Some(Ok(n)));
    }
    assert_eq!(producers(&client).await.dropped, 0, "the producer lives while the stream is read");
    drop(ticks);
    let dropped_at = Instant::now();
    // The issue's bound is 100 ms; a test asserts the state, the time is printed (10 s is
    // a guard against hanging: decisions.md).
    let took = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let p = producers(&client).await;
            if p.dropped == p.started {
                return dropped_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the producer still runs after the stream was dropped");
    eprintln!("producer dropped within {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_covers_the_whole_stream_unless_the_caller_opts_out() {
    let (_node, conn) = node(&[]).await;
    let bounded = StreamerClient::new(conn.clone()).with_timeout(Duration::from_millis(300));
    let mut ticks = bounded.ticks(20).await.unwrap();
    let mut last = None;
    while let Some(item) = ticks.next().await {
        last = Some(item);
    }
    assert_eq!(last, Some(Err(LabError::Rpc(Error::Timeout))), "ended by its deadline");
    let p = eventually(Duration::from_secs(2), || async {
        let p = producers(&bounded).await;
        (p.dropped == p.started).then_some(p)
    })
    .await;
    assert!(p.is_some(), "the producer outlived the deadline");

    let unbounded = StreamerClient::new(conn).with_timeout(Duration::from_millis(300)).without_stream_deadline();
    let mut ticks = unbounded.ticks(100).await.unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        assert!(matches!(ticks.next().await, Some(Ok(_))), "the stream outlives the timeout");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_calls_on_the_same_connection_go_on_while_a_stream_runs_at_full_speed() {
    let (_node, conn) = node(&[]).await;
    let streamer = StreamerClient::new(conn.clone()).with_codec(Codec::Postcard).without_stream_deadline();
    let mut flood = streamer.count(0, u64::MAX, 1024).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut read = 0u64;
        while let Some(Ok(_)) = flood.next().await {
            read += 1;
        }
        read
    });
    let lab = LabClient::new(conn.clone()).with_timeout(Duration::from_secs(5));
    for _ in 0..200 {
        assert_eq!(lab.whoami().await, Ok("lab".into()));
    }
    assert!(!reader.is_finished(), "the stream still runs");
    let before = producers(&streamer).await.produced;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(producers(&streamer).await.produced > before, "and keeps flowing");
    reader.abort();
}

/// Established TCP connections to `port` on 127.0.0.1 from this machine (the caller's
/// ends, as `ss` shows them): the same count read twice in a row (the table is not read
/// as one snapshot while other tests open and close connections).
fn connections_to(port: u16) -> usize {
    let read = || {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let remote = format!("0100007F:{port:04X}");
        table
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some(&remote) && l.split_whitespace().nth(3) == Some("01"))
            .count()
    };
    loop {
        let (a, b) = (read(), read());
        if a == b {
            return a;
        }
    }
}

/// Through a cluster, a stream goes on a connection of its own to its replica (the
/// stream lane): the unary calls to that replica never wait behind its bytes. The lane
/// closes once idle, so a caller holds two connections per peer at most.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_cluster_a_stream_takes_a_lane_of_its_own_and_gives_it_back_when_idle() {
    let tag = "streams-lane";
    let node = Node::start(LABNODE, &["--tag", tag, "--name", "lane"]).await;
    let port = node.addr.port();
    let cluster =
        meshrpc::Cluster::builder("streams-test").tag(tag).seeds([node.addr.to_string()]).start().await.unwrap();
    cluster.wait_for(&[StreamerClient::SPEC, LabClient::SPEC], Duration::from_secs(15)).await.unwrap();
    let lab = LabClient::new(cluster.client(LabClient::SPEC)).with_timeout(Duration::from_secs(5));
    assert_eq!(lab.whoami().await, Ok("lane".into()));
    // One connection for calls (what the cluster opened to learn the node's methods
    // closes once done).
    let one = eventually(Duration::from_secs(30), || async { (connections_to(port) == 1).then_some(()) }).await;
    assert!(one.is_some(), "{} connections to the node", connections_to(port));

    let streamer = StreamerClient::new(cluster.client(StreamerClient::SPEC)).without_stream_deadline();
    let mut flood = streamer.count(0, u64::MAX, 1024).await.unwrap();
    assert!(matches!(flood.next().await, Some(Ok(_))));
    assert_eq!(connections_to(port), 2, "the stream has a connection of its own");
    // A second stream shares the lane; unary calls keep to the first connection.
    let mut ticks = streamer.ticks(5).await.unwrap();
    assert!(matches!(ticks.next().await, Some(Ok(_))));
    for _ in 0..50 {
        assert_eq!(lab.whoami().await, Ok("lane".into()));
    }
    assert_eq!(connections_to(port), 2, "two connections at most");
    assert!(matches!(flood.next().await, Some(Ok(_))), "the stream still flows");

    // Both streams end: the lane is given back once idle (10 s), the first one stays.
    drop((flood, ticks));
    let closed = eventually(Duration::from_secs(45), || async { (connections_to(port) == 1).then_some(()) }).await;
    assert!(closed.is_some(), "the idle lane was never closed");
    assert_eq!(lab.whoami().await, Ok("lane".into()));
    assert_eq!(connections_to(port), 1, "unary calls still have their connection");
    // The next stream opens a lane again.
    let mut short = streamer.count(0, 3, 0).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = short.next().await {
        got.push(item.unwrap().n);
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(connections_to(port), 2);
}

/// Asks the node to drain (SIGTERM); when it was asked.
async fn drain(child: &mut tokio::process::Child) -> Instant {
    let pid = child.id().unwrap();
    let term = tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await.unwrap();
    assert!(term.success());
    Instant::now()
}

/// An endless stream runs on through the node's grace (1.5 s), then ends with
/// `unavailable` naming the drain, and the node exits.
async fn ends_with_the_drain(ticks: &mut Stream<u64, LabError>, signalled: Instant, child: &mut tokio::process::Child) {
    let ended = tokio::time::timeout(Duration::from_secs(10), past_items(ticks))
        .await
        .expect("the stream hung through the drain");
    let waited = signalled.elapsed();
    let Some(Err(LabError::Rpc(Error::Unavailable { message, .. }))) = ended else { panic!("{ended:?}") };
    assert!(message.contains("drain"), "{message}");
    assert!(waited >= Duration::from_millis(900), "ended before the grace: {waited:?}");
    assert!(terminate(child, Duration::from_secs(10)).await.is_some(), "the node exits after its drain");
}

/// A replica that drains lets the streams on a cluster caller's lane run through its grace
/// (the lane is not closed under them), as on a bare connection.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_cluster_a_draining_replica_lets_the_streams_on_the_lane_finish() {
    let tag = "streams-lane-drain";
    let mut node = Node::start(LABNODE, &["--tag", tag, "--name", "drains", "--drain-ms", "1500"]).await;
    let cluster =
        meshrpc::Cluster::builder("streams-test").tag(tag).seeds([node.addr.to_string()]).start().await.unwrap();
    cluster.wait_for(&[StreamerClient::SPEC], Duration::from_secs(15)).await.unwrap();
    let client = StreamerClient::new(cluster.client(StreamerClient::SPEC)).without_stream_deadline();
    let mut ticks = client.ticks(10).await.unwrap();
    let mut short = client.ticks(100).await.unwrap();
    assert!(matches!(ticks.next().await, Some(Ok(_))));
    assert!(matches!(short.next().await, Some(Ok(_))));
    let signalled = drain(&mut node.child).await;
    // Items keep coming during the grace.
    for _ in 0..3 {
        let next = tokio::time::timeout(Duration::from_secs(5), short.next()).await.expect("the stream stalled");
        assert!(matches!(next, Some(Ok(_))), "a stream was cut at the drain's start: {next:?}");
    }
    ends_with_the_drain(&mut ticks, signalled, &mut node.child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_stream_fails_the_stream_fast() {
    let (mut node, conn) = node(&[]).await;
    let client = StreamerClient::new(conn).without_stream_deadline();
    let mut ticks = client.ticks(10).await.unwrap();
    assert!(matches!(ticks.next().await, Some(Ok(_))));
    node.kill().await;
    let killed = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), past_items(&mut ticks))
        .await
        .expect("the stream hung after its replica died");
    assert!(matches!(ended, Some(Err(LabError::Rpc(Error::Unavailable { .. })))), "{ended:?}");
    eprintln!("stream failed {:?} after kill -9", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_replica_ends_open_streams_with_unavailable_after_its_grace() {
    let (mut node, conn) = node(&["--drain-ms", "1500"]).await;
    let client = StreamerClient::new(conn).without_stream_deadline();
    let mut ticks = client.ticks(10).await.unwrap();
    let mut short = client.count(0, 3, 0).await.unwrap();
    assert!(matches!(ticks.next().await, Some(Ok(_))));
    let signalled = drain(&mut node.child).await;
    // A stream that ends by itself within the grace completes.
    let mut got = Vec::new();
    while let Some(item) = short.next().await {
        got.push(item.unwrap().n);
    }
    assert_eq!(got, [0, 1, 2]);
    // The endless one runs on through the grace, then ends with `unavailable`.
    ends_with_the_drain(&mut ticks, signalled, &mut node.child).await;
}

/// The caller's producer of items is held back by the node's credit: while the handler
/// reads nothing, the client produces about one window of items, then waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_reads_late_holds_back_the_callers_producer() {
    let (_node, conn) = node(&[]).await;
    let client = StreamerClient::new(conn).with_codec(Codec::Postcard);
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = produced.clone();
    let (tx, items) = Stream::channel(1);
    tokio::spawn(async move {
        for n in 0..100_000u64 {
            if tx.send(Tick { n, pad: "y".repeat(1000) }).await.is_err() {
                return;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let call = tokio::spawn(async move { client.hold(1500, items).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let early = produced.load(std::sync::atomic::Ordering::Relaxed);
    // 1,012-byte items: the 1 MiB window is ~1,036 of them; socket buffers add a few MiB.
    assert!(early <= 1036 + 8 * 1024, "{early} items produced while the handler read none");
    assert_eq!(call.await.unwrap(), Ok(100_000), "then every item arrives");
    eprintln!("{early} items produced before the handler read");
}

/// A node holds a bounded amount of unread items across all its streams: past its budget,
/// the call whose item does not fit ends with `overloaded`; the connection serves on.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_node_wide_budget_for_unread_items_a_call_is_shed_alone() {
    let (_node, conn) = node(&["--max-stream-bytes", "262144"]).await;
    let client = StreamerClient::new(conn.clone());
    let items = Stream::iter((0..1000).map(|n| Tick { n, pad: "z".repeat(500) }));
    let shed = client.hold(2000, items).await;
    assert!(
        matches!(&shed, Err(LabError::Rpc(Error::Overloaded { message })) if message.contains("unread stream items")),
        "{shed:?}"
    );
    assert_eq!(client.sum(Stream::iter([1, 2])).await, Ok(3), "the connection serves on");
    let small = Stream::iter((0..10).map(|n| Tick { n, pad: String::new() }));
    assert_eq!(client.hold(10, small).await, Ok(10), "and the budget was given back");
}

/// A hostile client that sends items past the credit it was granted: its call ends with
/// `protocol`, nothing past the window is kept, and the connection and the node go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_sending_past_its_credit_loses_that_call_alone() {
    use bytes::{Bytes, BytesMut};
    use meshrpc::proto::{Frame, Status, DEFAULT_MAX_FRAME};
    use meshrpc_tests::hostile::{handshaken, metric};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (node, _conn) = node(&[]).await;
    let mut raw = handshaken(node.addr).await;
    let mut out = BytesMut::new();
    Frame::Request {
        id: 1,
        codec: Codec::Json,
        deadline: Some(Duration::from_secs(30)),
        trace_id: 1,
        parent_span: 0,
        service: Bytes::from_static(b"streamer"),
        method: Bytes::from_static(b"hold"),
        metadata: Default::default(),
        items: true,
        payload: Bytes::from_static(br#"{"millis":60000}"#),
    }
    .encode(&mut out);
    // 2 MiB of items with no credit granted past the first 1 MiB.
    let item = Bytes::from(format!(r#"{{"n":1,"pad":"{}"}}"#, "p".repeat(64 * 1024)));
    for _ in 0..32 {
        Frame::Item { id: 1, payload: item.clone() }.encode(&mut out);
    }
    Frame::Ping { id: 2 }.encode(&mut out);
    raw.write_all(&out).await.unwrap();
    let mut inbox = BytesMut::new();
    let (mut refused, mut pong) = (None, false);
    tokio::time::timeout(Duration::from_secs(10), async {
        while refused.is_none() || !pong {
            assert!(raw.read_buf(&mut inbox).await.unwrap() > 0, "the node closed the connection");
            while let Some(frame) = Frame::decode(&mut inbox, DEFAULT_MAX_FRAME).unwrap() {
                match frame {
                    Frame::Response { id: 1, status: Status::Failed, payload } => {
                        refused = Some(String::from_utf8_lossy(&payload).into_owned())
                    }
                    Frame::Pong { id: 2 } => pong = true,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("no answer to the call or the ping");
    let refused = refused.unwrap();
    assert!(refused.contains("protocol") && refused.contains("exceeds the sender's credit"), "{refused}");
    assert_eq!(metric(node.addr, "meshrpc_stream_items_shed").await, 0, "credit, not the budget, refused it");
}

/// Reads past a stream's items: its end, or its error.
async fn past_items<T, E>(stream: &mut Stream<T, E>) -> Option<Result<T, E>> {
    loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            other => return other,
        }
    }
}

/// Items of about 50 KB while other calls share the connection: the sender can be left
/// with more than half the shared window but less than one item; it says it is blocked,
/// and the reader grants what it can, so the stream never stalls.
#[tokio::test(flavor = "multi_thread")]
async fn large_items_beside_other_calls_never_stall() {
    let (_node, conn) = node(&[]).await;
    let streamer = StreamerClient::new(conn.clone()).with_codec(Codec::Postcard).without_stream_deadline();
    let lab = LabClient::new(conn);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beside = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut calls = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lab.whoami().await.unwrap();
                calls += 1;
            }
            calls
        })
    };
    let mut items = streamer.count(0, 300, 49_980).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut next = 0;
        while let Some(item) = items.next().await {
            assert_eq!(item.unwrap().n, next);
            next += 1;
        }
        next
    })
    .await
    .expect("the stream stalled");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read, 300);
    assert!(beside.await.unwrap() > 0, "calls ran beside the stream");
}

/// README, Limits: an item is bounded by the frame limit its reader accepts; a larger one
/// ends its stream with `too_large`, and the connection and other calls go on.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_over_the_readers_frame_limit_ends_its_stream_with_too_large() {
    let node = Node::start(LABNODE, &["--tag", "streams"]).await;
    let small = meshrpc::transport::ConnectOptions::default().max_frame(64 * 1024);
    let conn = Connection::connect(node.addr, small).await.unwrap();
    let client = StreamerClient::new(conn.clone());
    let mut ticks = client.count(0, 10, 1_000).await.expect("the stream opens");
    assert!(matches!(ticks.next().await, Some(Ok(Tick { n: 0, .. }))));
    let mut big = client.count(0, 10, 100_000).await.expect("the stream opens");
    let ended = tokio::time::timeout(Duration::from_secs(10), big.next()).await.expect("the stream ended");
    assert!(
        matches!(ended, Some(Err(LabError::Rpc(Error::TooLarge { .. })))),
        "an item of 100 kB over a 64 KiB frame limit: {ended:?}"
    );
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), big.next()).await.unwrap(), None);
    // The small stream and the connection go on.
    assert!(matches!(ticks.next().await, Some(Ok(Tick { n: 1, .. }))));
    assert_eq!(LabClient::new(conn).whoami().await.unwrap(), "lab");
}
