//! Two connection states driven against each other through bytes, with no sockets:
//! everything is delivered one byte at a time, or split at every offset.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::{
    call::{Call, Reply},
    codec::Codec,
    error::Error,
};

fn handshake(caller_max: u32, node_max: u32) -> (Negotiated, Negotiated) {
    let caller = CallerHandshake::new("billing", caller_max);
    let node = NodeHandshake::new(node_max);
    let mut hello = BytesMut::new();
    caller.hello(&mut hello);
    // The node sees the hello one byte at a time and answers only once it is whole.
    let (mut inbox, mut answer) = (BytesMut::new(), BytesMut::new());
    let mut at_node = None;
    for b in hello.iter() {
        assert!(at_node.is_none(), "answered before the hello was whole");
        inbox.put_u8(*b);
        at_node = node.receive(&mut inbox, &mut answer).unwrap();
    }
    let at_node = at_node.expect("a whole hello is answered");
    assert!(inbox.is_empty());
    let mut inbox = BytesMut::new();
    let mut at_caller = None;
    for b in answer.iter() {
        assert!(at_caller.is_none());
        inbox.put_u8(*b);
        at_caller = caller.receive(&mut inbox).unwrap();
    }
    (at_caller.expect("a whole answer is taken"), at_node)
}

#[test]
fn handshake_byte_by_byte_settles_version_and_limits_both_ways() {
    let (caller, node) = handshake(1000, 2000);
    assert_eq!((caller.version, node.version), (VERSION, VERSION));
    assert_eq!((caller.max_in, caller.max_out), (1000, 2000));
    assert_eq!((node.max_in, node.max_out), (2000, 1000));
    assert_eq!(node.peer_name, "billing");
    let zstd = if cfg!(feature = "zstd") { Features::ZSTD.bits() } else { 0 };
    let both = Features::from_bits(
        Features::METADATA.bits()
            | Features::STREAMS.bits()
            | Features::TRACE.bits()
            | Features::ITEM_RUNS.bits()
            | zstd,
    );
    assert_eq!((caller.features, node.features), (both, both));
}

#[test]
fn a_version_one_caller_is_refused_naming_both_versions() {
    let node = NodeHandshake::new(1024);
    let (mut inbox, mut answer) = (BytesMut::from(&b"MESHRPC1\x07billing"[..]), BytesMut::new());
    let err = node.receive(&mut inbox, &mut answer).unwrap_err();
    assert!(err.to_string().contains("caller speaks 1..=1, this node 2..=2"), "{err}");
    // A newer caller reading that refusal names both sides too.
    let caller = CallerHandshake::new("", 1024);
    let err = caller.receive(&mut answer).unwrap_err();
    assert!(err.to_string().contains("it speaks wire versions 2..=2, we speak 2..=2"), "{err}");
}

#[test]
fn a_future_caller_gets_the_highest_common_version() {
    let node = NodeHandshake::new(1024);
    let mut hello = BytesMut::from(&b"MESHRPC9"[..]);
    hello.put_u8(b'2');
    hello.put_u32(0xffff_0000); // features this build does not know
    hello.put_u32(4096);
    hello.put_u8(0);
    let mut answer = BytesMut::new();
    let got = node.receive(&mut hello, &mut answer).unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.features, Features::NONE, "only features both sides have");
    assert_eq!(&answer[..8], b"MESHRPC2");
}

#[test]
fn http_on_the_mesh_handshake_is_refused_and_sniffing_tells_them_apart() {
    assert_eq!(sniff(b"MESH"), Sniffed::NeedMore);
    assert_eq!(sniff(b"MESHRPC2"), Sniffed::Mesh);
    assert_eq!(sniff(b"GET / HTTP/1.1"), Sniffed::Other);
    assert_eq!(sniff(b"PRI * HTTP/2.0"), Sniffed::Other);
    let caller = CallerHandshake::new("", 1024);
    let mut http = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n"[..]);
    assert!(caller.receive(&mut http).unwrap_err().to_string().contains("not a meshrpc node"));
}

fn call(method: &'static str, payload: &'static [u8], deadline: Option<Instant>) -> Call {
    Call {
        service: "greeter".into(),
        method: method.into(),
        codec: Codec::Json,
        deadline,
        trace_id: 7,
        parent_span: 0,
        key: None,
        version: None,
        metadata: Default::default(),
        payload: Bytes::from_static(payload),
        input: None,
        peer: None,
    }
}

/// Feeds `wire` to a decoder in the given chunks and returns the frames.
fn decode_in_chunks(wire: &[u8], cuts: &[usize], max: u32) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&wire.len())) {
        buf.put_slice(&wire[from..to]);
        from = to;
        while let Some(f) = Frame::decode(&mut buf, max).unwrap() {
            frames.push(f);
        }
    }
    assert!(buf.is_empty());
    frames
}

#[test]
fn calls_and_answers_cross_split_at_every_offset() {
    let (caller_limits, node_limits) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<&str, ()>::new(caller_limits);
    let (a, f1, alone) = caller
        .start_call(call("greet", br#"{"name":"Max"}"#, Some(now + Duration::from_secs(2))), now, "first")
        .unwrap();
    assert!(alone);
    let (b, f2, alone) = caller.start_call(call("greet", br#"{"name":"Eve"}"#, None), now, "second").unwrap();
    assert!(!alone);
    let (p, f3) = caller.start_ping("ping", None).unwrap();
    let p = p.id;
    assert_eq!((caller.in_flight(), caller.calls_in_flight()), (3, 2), "a ping is no call");
    let mut wire = BytesMut::new();
    for f in [&f1, &f2, &f3] {
        f.encode(&mut wire);
    }
    for cut in 0..=wire.len() {
        let frames = decode_in_chunks(&wire, &[cut], node_limits.max_in);
        assert_eq!(frames, vec![f1.clone(), f2.clone(), f3.clone()], "split at {cut}");
    }

    // The node runs them: the deadline arrives relative to its own clock.
    let later = now + Duration::from_millis(5);
    let mut node = ResponderState::<u64, ()>::new(16, None, later);
    let mut answers = BytesMut::new();
    for f in decode_in_chunks(&wire, &(1..wire.len()).collect::<Vec<_>>(), node_limits.max_in) {
        match node.on_frame(f, later, || ()) {
            Inbound::Call { id, call, .. } => {
                assert_eq!(call.service, "greeter");
                if id == a {
                    assert_eq!(call.deadline, Some(later + Duration::from_secs(2)));
                    response(id, Ok(Reply::Ok(Bytes::from_static(b"\"Hello, Max\"")))).encode(&mut answers);
                } else {
                    assert_eq!(call.deadline, None);
                    response(id, Err(Error::internal("boom"))).encode(&mut answers);
                }
            }
            Inbound::Send(f) => f.encode(&mut answers),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Answers come back byte by byte, in any order the node wrote them.
    let mut got = Vec::new();
    for f in decode_in_chunks(&answers, &(1..answers.len()).collect::<Vec<_>>(), caller.limits().max_in) {
        match caller.on_frame(f, || ()) {
            Incoming::Answer(w, _, r) => got.push((w, r)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            ("first", Ok(Reply::Ok(Bytes::from_static(b"\"Hello, Max\"")))),
            ("second", Err(Error::internal("boom"))),
            ("ping", Ok(Reply::Ok(Bytes::new()))),
        ]
    );
    assert_eq!((caller.in_flight(), caller.calls_in_flight()), (0, 0));
    let _ = (b, p);
}

#[test]
fn limits_are_checked_before_anything_is_sent() {
    let (limits, _) = handshake(1 << 20, 64);
    let now = Instant::now();
    let mut caller = CallerState::<(), ()>::new(limits);
    let big = call("greet", &[b'x'; 100], None);
    assert!(matches!(caller.start_call(big, now, ()), Err(Error::TooLarge { limit: 64, .. })));
    let late = call("greet", b"{}", Some(now));
    assert_eq!(caller.start_call(late, now, ()).unwrap_err(), Error::Timeout);
    assert_eq!(caller.in_flight(), 0, "refused calls leave nothing pending");
    // A frame over the node's limit is refused by its decoder before it is buffered.
    let mut wire = BytesMut::new();
    Frame::Response { id: 1, status: Status::Ok, payload: Bytes::from_static(&[0; 100]) }.encode(&mut wire);
    assert!(matches!(Frame::decode(&mut wire, 64), Err(Error::TooLarge { .. })));
}

#[test]
fn cancel_aborts_the_running_handler_and_late_answers_are_dropped() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<_, ()>::new(limits);
    let (id, request, _) = caller.start_call(call("slow", b"{}", None), now, "w").unwrap();
    let mut node = ResponderState::<_, ()>::new(16, None, now);
    let Inbound::Call { id: got, .. } = node.on_frame(request, now, || ()) else { panic!() };
    node.started(got, "abort-handle");
    let cancel = caller.cancel(id).expect("still pending");
    assert!(caller.cancel(id).is_none(), "cancelled once");
    assert!(matches!(node.on_frame(cancel.0, now, || ()), Inbound::Abort(Some("abort-handle"), None, None)));
    assert_eq!(node.in_flight(), 0);
    // An answer racing the cancel finds nobody waiting.
    assert!(matches!(caller.on_frame(response(id, Ok(Reply::Ok(Bytes::new()))), || ()), Incoming::Nothing));
}

#[test]
fn more_calls_than_the_limit_are_refused_as_overloaded() {
    let now = Instant::now();
    let mut node = ResponderState::new(1, None, now);
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let mut caller = CallerState::new(limits);
    let (_, first, _) = caller.start_call(call("slow", b"{}", None), now, 1).unwrap();
    let (second_id, second, _) = caller.start_call(call("slow", b"{}", None), now, 2).unwrap();
    let Inbound::Call { id, .. } = node.on_frame(first, now, || ()) else { panic!() };
    node.started(id, ());
    let Inbound::Send(refusal) = node.on_frame(second, now, || ()) else { panic!() };
    match caller.on_frame(refusal, || ()) {
        Incoming::Answer(2, _, Err(Error::Overloaded { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(caller.in_flight(), 1);
    let _ = second_id;
}

#[test]
fn go_away_drains_then_the_caller_hangs_up_after_its_last_answer() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::new(limits);
    let (id, _, _) = caller.start_call(call("greet", b"{}", None), now, "w").unwrap();
    let mut node = ResponderState::<(), ()>::new(16, None, now);
    let go_away = node.go_away().expect("sent once");
    assert!(node.go_away().is_none());
    assert!(matches!(caller.on_frame(go_away, || ()), Incoming::Nothing));
    assert_eq!(caller.state(), ConnState::Draining);
    assert!(!caller.drained(), "a call is still out");
    assert!(matches!(caller.start_call(call("greet", b"{}", None), now, "x"), Err(Error::Unavailable { .. })));
    assert!(matches!(
        caller.on_frame(response(id, Ok(Reply::Ok(Bytes::new()))), || ()),
        Incoming::Answer("w", _, Ok(_))
    ));
    assert!(caller.drained());
    assert!(caller.close().is_empty());
    assert_eq!(caller.state(), ConnState::Closed);
}

#[test]
fn closing_hands_back_every_waiter() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<_, ()>::new(limits);
    for w in 0..3 {
        caller.start_call(call("greet", b"{}", None), now, w).unwrap();
    }
    let mut waiters = caller.close();
    waiters.sort();
    assert_eq!(waiters, vec![(Some(0), None), (Some(1), None), (Some(2), None)]);
    assert!(matches!(caller.start_ping(9, None), Err(Error::Unavailable { .. })));
}

#[test]
fn an_idle_connection_has_a_deadline_only_while_no_call_runs() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let mut node = ResponderState::<_, ()>::new(16, Some(idle), t0);
    assert_eq!(node.deadline(), Some((t0 + idle, Expired::Idle(idle))));
    let t1 = t0 + Duration::from_secs(3);
    node.heard(t1);
    assert_eq!(node.deadline(), Some((t1 + idle, Expired::Idle(idle))));
    // A read reported late (its frames were handled first) does not take life back.
    node.heard(t0);
    assert_eq!(node.deadline(), Some((t1 + idle, Expired::Idle(idle))));
    node.started(1, ());
    assert_eq!(node.deadline(), None, "a running call is not idleness");
    node.finished(1);
    assert!(node.deadline().is_some());
    assert_eq!(ResponderState::<(), ()>::new(1, None, t0).deadline(), None);
}

#[test]
fn a_partial_frame_has_a_time_budget_from_its_first_byte() {
    let t0 = Instant::now();
    let (idle, slow) = (Duration::from_secs(10), Duration::from_secs(2));
    let mut node = ResponderState::<(), ()>::new(16, Some(idle), t0).with_frame_timeout(slow);
    node.partial(t0, 100);
    // More bytes of the same frame do not extend its budget.
    node.heard(t0 + Duration::from_secs(1));
    node.partial(t0 + Duration::from_secs(1), 5000);
    assert_eq!(node.deadline(), Some((t0 + slow, Expired::SlowFrame(slow))));
    // Once whole, the connection is back on its idle timer.
    let t2 = t0 + Duration::from_millis(1500);
    node.heard(t2);
    node.partial(t2, 0);
    assert_eq!(node.deadline(), Some((t2 + idle, Expired::Idle(idle))));
}

#[test]
fn an_answer_larger_than_the_caller_takes_fails_that_call_alone() {
    let big = || Reply::Ok(Bytes::from(vec![b'x'; 1000]));
    let (Frame::Response { id, status, payload }, true) = response_within(9, Ok(big()), 100) else { panic!() };
    assert_eq!((id, status), (9, Status::Failed));
    let err: Error = serde_json::from_slice(&payload).unwrap();
    assert!(matches!(err, Error::TooLarge { limit: 100, .. }), "{err:?}");
    assert_eq!(response_within(9, Ok(big()), 2000), (response(9, Ok(big())), false));
}

#[test]
fn a_caller_answers_pings_and_refuses_requests() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let mut caller = CallerState::<(), ()>::new(limits);
    assert!(matches!(caller.on_frame(Frame::Ping { id: 4 }, || ()), Incoming::Send(Frame::Pong { id: 4 })));
    let req = Frame::Request {
        id: 5,
        codec: Codec::Json,
        deadline: None,
        trace_id: 0,
        parent_span: 0,
        service: Bytes::new(),
        method: Bytes::new(),
        metadata: Default::default(),
        items: false,
        payload: Bytes::new(),
    };
    assert!(matches!(
        caller.on_frame(req, || ()),
        Incoming::Send(Frame::Response { id: 5, status: Status::Failed, .. })
    ));
}

#[test]
fn metadata_crosses_when_both_sides_offered_it_and_is_refused_otherwise() {
    let (limits, node_limits) = handshake(1 << 20, 1 << 20);
    assert!(limits.features.contains(Features::METADATA));
    let now = Instant::now();
    let mut caller = CallerState::<_, ()>::new(limits.clone());
    let mut with_token = call("greet", b"{}", None);
    with_token.metadata.insert("Authorization", "Bearer s3cret");
    let (_, frame, _) = caller.start_call(with_token.clone(), now, ()).unwrap();
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    let mut node = ResponderState::<(), ()>::new(4, None, now);
    let decoded = decode_in_chunks(&wire, &(1..wire.len()).collect::<Vec<_>>(), node_limits.max_in);
    let Inbound::Call { call: got, .. } = node.on_frame(decoded.into_iter().next().unwrap(), now, || ()) else {
        panic!()
    };
    assert_eq!(got.metadata.get("authorization"), Some("Bearer s3cret"));

    // A peer that did not offer the feature never gets a metadata frame.
    let mut old = CallerState::<_, ()>::new(Negotiated { features: Features::NONE, ..limits });
    let err = old.start_call(with_token, now, ()).unwrap_err();
    assert!(err.to_string().contains("does not take call metadata"), "{err}");
    // Bounds are checked before sending.
    let mut huge = call("greet", b"{}", None);
    huge.metadata.insert("big", "x".repeat(70_000));
    assert!(matches!(caller.start_call(huge, now, ()), Err(Error::BadRequest { .. })));
}

#[test]
fn a_pinned_version_travels_with_the_call_and_is_not_left_in_its_metadata() {
    let (limits, node_limits) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<_, ()>::new(limits.clone());
    let mut pinned = call("greet", b"{}", None);
    pinned.version = Some("v2".into());
    pinned.metadata.insert("tenant", "acme");
    let (_, frame, _) = caller.start_call(pinned.clone(), now, ()).unwrap();
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    let mut node = ResponderState::<(), ()>::new(4, None, now);
    let decoded = decode_in_chunks(&wire, &[1, 7], node_limits.max_in);
    let Inbound::Call { call: got, .. } = node.on_frame(decoded.into_iter().next().unwrap(), now, || ()) else {
        panic!()
    };
    assert_eq!(got.version.as_deref(), Some("v2"));
    assert_eq!(got.metadata.iter().collect::<Vec<_>>(), vec![("tenant", "acme")], "only the caller's own entries");
    // A peer without metadata gets the call, unpinned (it could not pass the pin on).
    let mut old = CallerState::<_, ()>::new(Negotiated { features: Features::NONE, ..limits });
    pinned.metadata = Default::default();
    let (_, frame, _) = old.start_call(pinned, now, ()).unwrap();
    assert!(matches!(frame, Frame::Request { ref metadata, .. } if metadata.is_empty()));
}

#[test]
fn one_timer_serves_every_deadline_and_expired_calls_are_cancelled() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let at = |ms| now + Duration::from_millis(ms);
    let mut caller = CallerState::new(limits);
    assert_eq!(caller.next_deadline(), None, "no call, no timer");

    let a = caller.register("a", Some(at(300)), None).unwrap();
    assert!(a.rearm && a.alone, "the first deadline arms the timer");
    assert_eq!(caller.next_deadline(), Some(at(300)));
    let b = caller.register("b", Some(at(500)), None).unwrap();
    assert!(!b.rearm, "a later deadline needs no re-arming");
    let c = caller.register("c", Some(at(100)), None).unwrap();
    assert!(c.rearm, "a sooner one does");
    let d = caller.register("d", None, None).unwrap();
    assert!(!d.rearm, "no deadline, no timer");
    assert_eq!(caller.next_deadline(), Some(at(100)));

    // `c` is answered: the timer's next stop skips it.
    assert!(matches!(caller.on_frame(response(c.id, Ok(Reply::Ok(Bytes::new()))), || ()), Incoming::Answer("c", ..)));
    assert_eq!(caller.next_deadline(), Some(at(300)));
    assert!(caller.expire(at(299)).is_empty(), "nothing is due before its deadline");

    // At 300 ms only `a` is due: its waiter is handed back with a cancel for the peer.
    let expired = caller.expire(at(300));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, Some("a"));
    assert!(matches!(expired[0].2, Frame::Cancel { id } if id == a.id));
    assert!(matches!(caller.on_frame(response(a.id, Ok(Reply::Ok(Bytes::new()))), || ()), Incoming::Nothing));
    assert_eq!(caller.in_flight(), 2);
    assert_eq!(caller.next_deadline(), Some(at(500)));
    let expired = caller.expire(at(10_000));
    assert_eq!(expired.iter().map(|e| e.0).collect::<Vec<_>>(), [Some("b")]);
    assert_eq!(caller.next_deadline(), None, "`d` waits without a deadline");
}

#[test]
fn deadlines_of_answered_calls_are_not_kept() {
    // A million calls answered within their deadline leave the deadline heap bounded by
    // the calls in flight, not by the calls made.
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::new(limits);
    let slow = caller.register(0, Some(now + Duration::from_secs(30)), None).unwrap();
    for i in 1..1_000_000u32 {
        let r = caller.register(i, Some(now + Duration::from_secs(30)), None).unwrap();
        assert!(matches!(caller.on_frame(response(r.id, Ok(Reply::Ok(Bytes::new()))), || ()), Incoming::Answer(..)));
    }
    assert!(caller.deadlines_held() <= 2 * caller.in_flight() + 65, "held {}", caller.deadlines_held());
    assert_eq!(caller.next_deadline(), Some(now + Duration::from_secs(30)));
    assert_eq!(caller.expire(now + Duration::from_secs(30)).len(), 1);
    let _ = slow;
}

/// Drives one stream call between the two states through encoded bytes, as the shells
/// do: the node answers with a stream, sends items while it has credit, the caller's
/// reader consumes some and grants credit back.
#[test]
fn a_server_stream_flows_only_as_fast_as_its_reader_grants_credit() {
    use super::{item_cost, Spend, STREAM_WINDOW};
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<&str, &str>::new(limits);
    let (id, request, _) = caller.start_call(call("watch", b"{}", None), now, "w").unwrap();
    let mut node = ResponderState::<&str, &str>::new(16, None, now);
    let Inbound::Call { id: got, items: None, .. } = node.on_frame(wire(request), now, || "node") else { panic!() };
    node.started(got, "task");
    assert_eq!(node.answer_stream(got, "node", false), Some("node"));
    let opening = Frame::Response { id: got, status: Status::Stream, payload: Bytes::new() };
    assert!(matches!(caller.on_frame(wire(opening), || "caller"), Incoming::Opened("w", "caller")));
    // The node sends 100-byte items until its credit is spent.
    let item = Bytes::from(vec![b'1'; 100]);
    let mut sent = 0u32;
    while node.spend(got, item.len()) == Spend::Go {
        let Incoming::Item("caller", payload, cost) =
            caller.on_frame(wire(Frame::Item { id, payload: item.clone() }), || "x")
        else {
            panic!()
        };
        assert_eq!((payload.len(), cost), (100, item_cost(100)));
        sent += 1;
    }
    assert_eq!(sent, STREAM_WINDOW / item_cost(100), "the sender stops when its credit is spent");
    // An item past the credit is a violation the caller refuses.
    assert!(matches!(caller.on_frame(Frame::Item { id, payload: item.clone() }, || "x"), Incoming::Violation(_)));
    // The reader consumes a quarter of the window: one credit frame goes back (the stream
    // has the connection to itself: a quarter-window step of the whole window), and the
    // node may go on.
    let mut credit = None;
    for _ in 0..sent / 4 + 1 {
        credit = credit.or(caller.consumed(id, item_cost(100)));
    }
    let Some(credit @ Frame::Credit { bytes, .. }) = credit else { panic!("no credit granted") };
    assert!(bytes >= STREAM_WINDOW / 4);
    // Another call on the connection: later grants keep the stream to the shared window.
    let (other, ..) = caller.start_call(call("greet", b"{}", None), now, "w2").unwrap();
    let mut shared = 0;
    for _ in 0..sent / 2 {
        if let Some(Frame::Credit { bytes, .. }) = caller.consumed(id, item_cost(100)) {
            shared += bytes;
        }
    }
    assert_eq!(shared, 0, "the node still holds more than half the shared window");
    caller.cancel(other);
    assert!(matches!(node.on_frame(wire(credit), now, || "x"), Inbound::Credit("node")));
    assert_eq!(node.spend(got, item.len()), Spend::Go);
    // The node ends the stream; the caller hears a clean end and forgets the call.
    let end = super::end(got, Ok(None));
    node.finished(got);
    assert!(matches!(caller.on_frame(wire(end), || "x"), Incoming::End("caller", None)));
    assert_eq!((caller.in_flight(), node.in_flight()), (0, 0));
}

/// A call beside open streams is still alone (its request is written at once and it reads
/// its own answer); beside another call it is not.
#[test]
fn a_call_beside_streams_alone_is_alone() {
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<&str, &str>::new(limits);
    let (stream, _, alone) = caller.start_call(call("watch", b"{}", None), now, "w").unwrap();
    assert!(alone);
    let opening = Frame::Response { id: stream, status: Status::Stream, payload: Bytes::new() };
    assert!(matches!(caller.on_frame(wire(opening), || "s"), Incoming::Opened("w", "s")));
    let (first, _, alone) = caller.start_call(call("greet", b"{}", None), now, "a").unwrap();
    assert!(alone, "a stream beside it does not count");
    let (_, _, alone) = caller.start_call(call("greet", b"{}", None), now, "b").unwrap();
    assert!(!alone, "another call does");
    // The first answered and the stream ended: a new call is alone again, and then the
    // only call at all.
    assert!(matches!(caller.on_frame(response(first, Ok(Reply::Ok(Bytes::new()))), || "x"), Incoming::Answer(..)));
    let (second, ..) = caller.start_call(call("greet", b"{}", None), now, "c").unwrap();
    let _ = caller.cancel(second);
    assert!(matches!(caller.on_frame(wire(super::end(stream, Ok(None))), || "x"), Incoming::End("s", None)));
    assert_eq!(caller.in_flight(), 1);
}

/// Items in runs (feature `ITEM_RUNS`) cost the credit they would one by one: a run that
/// fits the credit is taken, the caller's reader sees every item, and a run past the
/// credit is refused like an item past it.
#[test]
fn a_run_of_items_costs_what_its_items_would_alone() {
    use super::{item_cost, RunWriter, STREAM_WINDOW};
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut caller = CallerState::<&str, &str>::new(limits);
    let (id, _, _) = caller.start_call(call("watch", b"{}", None), now, "w").unwrap();
    let opening = Frame::Response { id, status: Status::Stream, payload: Bytes::new() };
    assert!(matches!(caller.on_frame(wire(opening), || "caller"), Incoming::Opened("w", "caller")));
    // Runs of 32-byte items, at most 4 KiB a frame, until the credit is spent.
    let (item, per_run) = ([7u8; 32], 4096 / (32 + 4) - 1);
    let mut taken = 0u32;
    loop {
        let (mut out, mut runs) = (BytesMut::new(), RunWriter::default());
        for _ in 0..per_run {
            runs.push(id, &item, &mut out, 4096);
        }
        runs.close(&mut out);
        let run = Frame::decode(&mut out, 1 << 20).unwrap().unwrap();
        let fits = (taken + per_run as u32) * item_cost(32) <= STREAM_WINDOW;
        match caller.on_frame(run, || "x") {
            Incoming::Run("caller", mut run) if fits => {
                assert_eq!(run.cost(), per_run as u32 * item_cost(32));
                while let Some((payload, cost)) = run.next_item() {
                    assert_eq!((&payload[..], cost), (&item[..], item_cost(32)));
                    taken += 1;
                }
            }
            Incoming::Violation(why) if !fits => {
                assert!(why.to_string().contains("exceeds the sender's credit"), "{why}");
                break;
            }
            other => panic!("fits: {fits}, got {}", matches!(other, Incoming::Nothing)),
        }
    }
    assert_eq!(taken / per_run as u32, STREAM_WINDOW / item_cost(32) / per_run as u32);
}

#[test]
fn a_caller_sending_past_its_credit_loses_that_call_alone() {
    use super::{item_cost, STREAM_WINDOW};
    let (limits, _) = handshake(1 << 20, 1 << 20);
    let now = Instant::now();
    let mut node = ResponderState::<&str, &str>::new(16, None, now);
    let mut caller = CallerState::<&str, &str>::new(limits);
    let upload =
        call("upload", b"{}", None).with_input(crate::stream::encode(Codec::Json, crate::Stream::<u8>::empty()));
    let mut request = request(upload, now, caller.limits()).unwrap();
    let r = caller.register("w", None, Some("caller")).unwrap();
    request.set_request_id(r.id);
    let Inbound::Call { id, items: Some("node"), .. } = node.on_frame(wire(request), now, || "node") else { panic!() };
    node.started(id, "task");
    let big = Bytes::from(vec![b'x'; (STREAM_WINDOW / 2) as usize]);
    assert!(matches!(
        node.on_frame(Frame::Item { id, payload: big.clone() }, now, || "x"),
        Inbound::Item("node", _, _, _)
    ));
    // The second half-window item does not fit the 9-byte headers: refused, and the call
    // ends with a protocol error while others go on.
    assert!(item_cost(big.len()) * 2 > STREAM_WINDOW);
    let Inbound::Abort(Some("task"), Some("node"), Some(Frame::Response { status: Status::Failed, payload, .. })) =
        node.on_frame(Frame::Item { id, payload: big }, now, || "x")
    else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&payload).contains("exceeds the sender's credit"));
    assert_eq!(node.in_flight(), 0);
}

/// A frame through its encoding, as it crosses the wire.
fn wire(frame: Frame) -> Frame {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    Frame::decode(&mut buf, u32::MAX).unwrap().unwrap()
}

#[cfg(feature = "zstd")]
/// A 64 KiB JSON answer, as services send them (repetitive keys, varied values).
fn json_answer() -> Bytes {
    let rows: Vec<String> = (0..700)
        .map(|i| format!(r#"{{"id":{i},"name":"product {i}","price":{{"units":{},"nanos":0}}}}"#, i * 7))
        .collect();
    Bytes::from(format!("[{}]", rows.join(",")))
}

#[cfg(feature = "zstd")]
#[test]
fn large_answers_and_requests_go_compressed_and_come_back_whole() {
    let payload = json_answer();
    assert!(payload.len() > 32 * 1024);
    let answer = Frame::Response { id: 4, status: Status::Ok, payload: payload.clone() };
    let (mut plain, mut packed) = (BytesMut::new(), BytesMut::new());
    answer.encode(&mut plain);
    answer.encode_with(&mut packed, true);
    assert!(packed.len() * 4 < plain.len(), "{} → {} bytes", plain.len(), packed.len());
    assert_eq!(packed[13] & 0x80, 0x80, "flagged in the status byte");
    assert!(Frame::decode(&mut packed.clone(), 1 << 20).is_err(), "not taken without ZSTD negotiated");
    assert_eq!(Frame::decode_with(&mut packed, 1 << 20, true).unwrap(), Some(answer));
    // A request too, its codec byte flagged.
    let mut request =
        super::request(call("greet", b"{}", None), Instant::now(), &handshake(1 << 20, 1 << 20).0).unwrap();
    if let Frame::Request { payload: p, .. } = &mut request {
        *p = payload.clone();
    }
    let mut wire = BytesMut::new();
    request.encode_with(&mut wire, true);
    assert!(wire.len() < 16 * 1024);
    assert_eq!(Frame::decode_with(&mut wire, 1 << 20, true).unwrap(), Some(request));
    // Under 1 KiB, or not negotiated: the bytes `encode` writes.
    let small = Frame::Response { id: 4, status: Status::Ok, payload: Bytes::from(vec![b'a'; 1000]) };
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    small.encode(&mut a);
    small.encode_with(&mut b, true);
    assert_eq!(a, b);
    let mut c = BytesMut::new();
    answer_frame_of(&payload).encode_with(&mut c, false);
    assert_eq!(c.len(), plain.len());
}

#[cfg(feature = "zstd")]
fn answer_frame_of(payload: &Bytes) -> Frame {
    Frame::Response { id: 4, status: Status::Ok, payload: payload.clone() }
}

#[cfg(feature = "zstd")]
#[test]
fn a_compressed_payload_that_expands_past_the_frame_limit_is_refused() {
    // 4 MiB of zeros compress to a few hundred bytes: a frame far under the limit, that
    // expands past both the frame limit and 256 times its size.
    let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 1).unwrap();
    let flagged = |payload: Bytes| {
        let mut wire = BytesMut::new();
        Frame::Response { id: 1, status: Status::Ok, payload }.encode(&mut wire);
        wire[13] |= 0x80;
        wire
    };
    let e = Frame::decode_with(&mut flagged(Bytes::from(bomb.clone())), 1 << 20, true).unwrap_err();
    assert!(matches!(e, crate::Error::Protocol { .. }) && e.to_string().contains("compressed payload"), "{e}");
    // A streamed frame (its header names a window, not a size) is refused too.
    let mut streamed = Vec::new();
    {
        use std::io::Write;
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
        encoder.write_all(&vec![0u8; 4 << 20]).unwrap();
        encoder.finish().unwrap();
    }
    let e = Frame::decode_with(&mut flagged(Bytes::from(streamed)), 1 << 20, true).unwrap_err();
    assert!(matches!(e, crate::Error::Protocol { .. }), "{e}");
    // With room for it, still past 256 times its size (the decoder refuses the window its
    // header asks for, or the bytes past the bound).
    let e = Frame::decode_with(&mut flagged(Bytes::from(bomb)), 64 << 20, true).unwrap_err();
    assert!(matches!(e, crate::Error::Protocol { .. }), "{e}");
    // What a sender sends: within both bounds, it expands.
    let json = json_answer();
    let packed = super::compress::compress(&json).expect("JSON compresses");
    let Some(Frame::Response { payload, .. }) =
        Frame::decode_with(&mut flagged(Bytes::from(packed)), 1 << 20, true).unwrap()
    else {
        panic!()
    };
    assert_eq!(payload, json);
    // A sender sends plain what would compress more than that.
    assert!(super::compress::compress(&vec![0u8; 1 << 20]).is_none());
    // Garbage flagged as compressed is a protocol error, not a panic; so is a stream's end
    // flagged.
    let mut garbage = flagged(Bytes::from_static(b"not zstd at all"));
    assert!(matches!(Frame::decode_with(&mut garbage, 1 << 20, true), Err(crate::Error::Protocol { .. })));
    let mut end = BytesMut::new();
    Frame::End { id: 1, status: Status::Ok, payload: Bytes::new() }.encode(&mut end);
    end[13] |= 0x80;
    assert!(Frame::decode_with(&mut end, 1 << 20, true).is_err());
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_is_used_only_when_both_sides_offer_it() {
    let both = handshake(1 << 20, 1 << 20);
    assert!(both.0.features.contains(Features::ZSTD) && both.1.features.contains(Features::ZSTD));
    let node = NodeHandshake::new(1 << 20);
    let caller = CallerHandshake::new("c", 1 << 20).without(Features::ZSTD);
    let (mut hello, mut answer) = (BytesMut::new(), BytesMut::new());
    caller.hello(&mut hello);
    let at_node = node.receive(&mut hello, &mut answer).unwrap().unwrap();
    let at_caller = caller.receive(&mut answer).unwrap().unwrap();
    assert!(!at_node.features.contains(Features::ZSTD) && !at_caller.features.contains(Features::ZSTD));
    assert!(at_node.features.contains(Features::STREAMS), "the other features stay");
}
