//! Issue 2: a trait becomes a remote service. Every test runs a real `labnode` process
//! and drives it over loopback with the generated client or a real HTTP client.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use greeter::{GreetError, Greeter, GreeterClient, Postcard};
use meshrpc::{Codec, Error};
use meshrpc_tests::{
    harness::{eventually, http, Node},
    lab::{Lab, LabClient, LabError, Nested, Shape},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

async fn lab() -> Node {
    Node::start(LABNODE, &[]).await
}

async fn lab_client(node: &Node) -> LabClient {
    LabClient::new(meshrpc::connect(node.addr).await.unwrap())
}

fn nested() -> Nested {
    Nested {
        label: "root".into(),
        children: vec![Nested { label: "leaf".into(), children: vec![], shape: Some(Shape::Circle { radius: 1.5 }) }],
        shape: Some(Shape::Poly(vec![(1, 2), (-3, 4)])),
    }
}

#[tokio::test]
async fn generated_client_is_the_trait_generic_and_dyn() {
    let node = lab().await;
    let client = GreeterClient::new(meshrpc::connect(node.addr).await.unwrap());

    async fn generic(g: &impl Greeter) -> String {
        g.greet("Max".into()).await.unwrap()
    }
    assert_eq!(generic(&client).await, "Hello, Max");
    assert_eq!(generic(&greeter::MyGreeter::default()).await, "Hello, Max");

    let dynamic: Arc<dyn Greeter> = Arc::new(client.clone());
    let card =
        Postcard { picture_url: "p".into(), address: "World".into(), recipient: "Max".into(), message: "Hi".into() };
    dynamic.send_postcard(card.clone()).await.unwrap();
    // The service's own error type comes back typed.
    let err = dynamic.send_postcard(Postcard { recipient: String::new(), ..card }).await.unwrap_err();
    assert_eq!(err, GreetError::NoRecipient);
}

#[tokio::test]
async fn every_supported_shape_round_trips_in_both_codecs() {
    let node = lab().await;
    for codec in [Codec::Json, Codec::Postcard] {
        let lab = lab_client(&node).await.with_codec(codec);
        let g: HashMap<String, Nested> = [("k".to_string(), nested())].into();
        let sent = (7u8, -9_000_000_000i64, 2.5f64, true, Some("opt".to_string()), vec![1u32, 2, 3], g, Shape::Dot);
        let got = lab
            .many(sent.0, sent.1, sent.2, sent.3, sent.4.clone(), sent.5.clone(), sent.6.clone(), sent.7.clone())
            .await
            .unwrap();
        assert_eq!(got, sent, "{codec:?}");
        let none =
            lab.many(0, 0, 0.0, false, None, vec![], HashMap::new(), Shape::Circle { radius: 0.0 }).await.unwrap();
        assert_eq!(none.4, None);
        lab.nothing().await.unwrap();
        assert_eq!(lab.echo(nested()).await.unwrap(), nested());
        assert_eq!(lab.refuse("no".into()).await.unwrap_err(), LabError::Refused("no".into()));
    }
}

#[tokio::test]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let node = lab().await;
    let client = GreeterClient::new(meshrpc::connect(node.addr).await.unwrap());
    let calls = (0..1000).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { (i, client.greet(format!("n{i}")).await) })
    });
    let mut ok = 0;
    for call in calls {
        let (i, answer) = call.await.unwrap();
        assert_eq!(answer.unwrap(), format!("Hello, n{i}"));
        ok += 1;
    }
    assert_eq!(ok, 1000);
}

#[tokio::test]
async fn dropping_the_call_future_cancels_the_server_handler() {
    let node = lab().await;
    let lab = lab_client(&node).await;
    let slow = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(10_000).await }
    });
    eventually(Duration::from_secs(5), || async { (lab.stats().await.unwrap().started == 1).then_some(()) })
        .await
        .expect("handler started");
    slow.abort(); // drops the client future
    let stats = eventually(Duration::from_secs(5), || async {
        let s = lab.stats().await.unwrap();
        (s.dropped == 1).then_some(s)
    })
    .await
    .expect("server handler was not cancelled");
    assert_eq!(stats.finished, 0);
}

#[tokio::test]
async fn a_short_deadline_times_out_in_time_and_stops_the_handler() {
    let node = lab().await;
    let lab = lab_client(&node).await;
    let start = Instant::now();
    // 10 s is a guard against hanging; the 5 s handler must be cut at the 200 ms deadline.
    let bounded = lab.with_timeout(Duration::from_millis(200));
    let err =
        tokio::time::timeout(Duration::from_secs(10), bounded.sleep(5_000)).await.expect("the call hung").unwrap_err();
    println!("a 200 ms deadline ended the call after {:?}", start.elapsed());
    assert_eq!(err, LabError::Rpc(Error::Timeout));
    let stats = eventually(Duration::from_secs(3), || async {
        let s = lab.stats().await.unwrap();
        (s.dropped == 1).then_some(s)
    })
    .await;
    assert!(stats.is_some(), "the server did not drop the expired handler");
}

#[tokio::test]
async fn the_deadline_travels_and_is_passed_on_by_a_handler() {
    let a = lab().await;
    let b = lab().await;
    let lab = lab_client(&a).await.with_timeout(Duration::from_secs(3));
    let left = lab.deadline_left().await.unwrap().expect("server sees a deadline");
    assert!(left <= 3000 && left > 2000, "{left}");
    // A's handler calls B without passing anything: B sees A's remaining deadline,
    // not the 30 s default of a fresh call.
    let (mine, theirs) = lab.relay_deadline(b.addr.to_string()).await.unwrap();
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    assert!(theirs <= mine && mine <= 3000, "a={mine} b={theirs}");
}

#[tokio::test]
async fn killing_the_server_fails_every_pending_call_quickly() {
    let mut node = lab().await;
    let lab = lab_client(&node).await;
    let pending: Vec<_> = (0..20)
        .map(|_| {
            let lab = lab.clone();
            tokio::spawn(async move { lab.with_timeout(Duration::from_secs(20)).sleep(15_000).await })
        })
        .collect();
    eventually(Duration::from_secs(5), || async { (lab.stats().await.ok()?.started == 20).then_some(()) })
        .await
        .unwrap();
    let start = Instant::now();
    node.kill().await;
    for call in pending {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, LabError::Rpc(Error::Unavailable { .. })), "{err:?}");
    }
    // `unavailable`, not `timeout`: they failed with the connection, not at their 20 s deadline.
    println!("20 calls pending on a killed node failed within {:?}", start.elapsed());
    // A new call on the dead connection fails at once too.
    assert!(matches!(lab.nothing().await, Err(LabError::Rpc(Error::Unavailable { .. }))));
}

#[tokio::test]
async fn garbage_and_oversized_frames_do_not_hurt_the_server() {
    let node = Node::start(LABNODE, &["--max-frame", "65536"]).await;
    let good = lab_client(&node).await;
    good.nothing().await.unwrap();

    // Garbage without a preface: the HTTP side answers 400 and closes.
    let mut raw = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    raw.write_all(b"\x00\x01\x02garbage\r\n\r\n\xff\xfe").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&answer));

    // After a valid hello (wire versions 2..=2, no features, 1 MiB frames, caller name)
    // the server answers (version 2, no features, its frame limit), then closes the
    // connection on garbage, and on a header claiming 1 GiB before buffering it.
    for bad in [&b"\x00\x00\x00\x09\x63garbage!"[..], b"\x40\x00\x00\x00\x01"] {
        let mut raw = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        raw.write_all(b"MESHRPC22\x00\x00\x00\x00\x00\x10\x00\x00\x04test").await.unwrap();
        raw.write_all(bad).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, b"MESHRPC2\x00\x00\x00\x00\x00\x01\x00\x00", "hello, then closed");
    }
    // A caller of wire version 1 is refused with the versions the node speaks, and a reason.
    let mut raw = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    raw.write_all(b"MESHRPC1\x04test").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("MESHRPC022"), "{answer:?}");
    assert!(answer.contains("no common wire version: the caller speaks 1..=1, this node 2..=2"), "{answer:?}");

    // A too-large call from a generated client is refused locally with a typed error.
    let big = Nested { label: "x".repeat(100_000), children: vec![], shape: None };
    let err = good.echo(big).await.unwrap_err();
    assert!(matches!(err, LabError::Rpc(Error::TooLarge { .. })), "{err:?}");

    // Through all of that, the original connection and new ones keep working.
    good.nothing().await.unwrap();
    lab_client(&node).await.nothing().await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_and_the_node_lives() {
    let node = lab().await;
    let lab = lab_client(&node).await;
    let err = lab.panic().await.unwrap_err();
    let LabError::Rpc(Error::Internal { message, .. }) = err else { panic!("{err:?}") };
    assert!(message.contains("on purpose"), "{message}");
    lab.nothing().await.unwrap();
}

#[tokio::test]
async fn http_on_the_same_port_speaks_the_envelope() {
    let node = lab().await;
    let post = |path: &str, body: &'static str| {
        let url = node.url(path);
        async move { http("POST", &url, body, &[]).await }
    };

    let ok = post("/greeter/greet", r#"{"name":"Max"}"#).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, r#"{"data":"Hello, Max","errors":[]}"#));
    assert_eq!(ok.headers["content-type"], "application/json");

    let unit = post("/lab/nothing", "").await;
    assert_eq!((unit.status, unit.body.as_str()), (200, r#"{"data":null,"errors":[]}"#));

    for path in ["/ping", "/__heartbeat__"] {
        assert_eq!(http("GET", &node.url(path), "", &[]).await.status, 204, "{path}");
    }

    let cases = [
        ("/greeter/greet", "{\"name\":", 400, "bad_request", "EOF"),
        ("/greeter/greet", r#"{"name":42}"#, 400, "bad_request", "name: invalid type: integer `42`, expected a string"),
        ("/greeter/greet", r#"{}"#, 400, "bad_request", "missing field `name`"),
        (
            "/greeter/send_postcard",
            r#"{"card":{"picture_url":"p","address":"a","recipient":7,"message":"m"}}"#,
            400,
            "bad_request",
            "card.recipient: invalid type",
        ),
        ("/nobody/greet", "{}", 404, "unknown_service", "unknown service `nobody`"),
        ("/greeter/shout", "{}", 404, "unknown_method", "unknown method `shout` on service `greeter`"),
        ("/lab/refuse", r#"{"reason":"nope"}"#, 422, "application", "the service returned an error"),
        ("/lab/panic", "", 500, "internal", "on purpose"),
    ];
    for (path, body, status, code, message) in cases {
        let answer = post(path, body).await;
        assert_eq!(answer.status, status, "{path} {body}: {}", answer.body);
        let json = answer.json();
        assert_eq!(json["data"], serde_json::Value::Null);
        assert_eq!(json["errors"][0]["code"], code, "{path}: {}", answer.body);
        let got = json["errors"][0]["message"].as_str().unwrap();
        assert!(got.contains(message), "{path}: {got}");
    }
    let refused = post("/lab/refuse", r#"{"reason":"nope"}"#).await.json();
    assert_eq!(refused["errors"][0]["detail"], serde_json::json!({"Refused": "nope"}));

    let slow = http("POST", &node.url("/lab/sleep"), r#"{"millis":3000}"#, &[("meshrpc-timeout-ms", "100")]).await;
    assert_eq!((slow.status, slow.json()["errors"][0]["code"].as_str()), (504, Some("timeout")));

    let get = http("GET", &node.url("/greeter/greet"), "", &[]).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.json()["errors"][0]["code"], "method_not_allowed");

    let nowhere = http("GET", &node.url("/a/b/c"), "", &[]).await;
    assert_eq!((nowhere.status, nowhere.json()["errors"][0]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn oversized_http_bodies_get_413() {
    let node = Node::start(LABNODE, &["--max-frame", "1024"]).await;
    let body = format!(r#"{{"name":"{}"}}"#, "x".repeat(5000));
    let answer = http("POST", &node.url("/greeter/greet"), body, &[]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["errors"][0]["code"], "too_large");
    let ok = http("POST", &node.url("/greeter/greet"), r#"{"name":"Max"}"#, &[]).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Full};
    let node = lab().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::post(node.url("/greeter/greet"))
        .body(Full::new(bytes::Bytes::from_static(br#"{"name":"Max"}"#)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, hyper::Version::HTTP_2));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"data":"Hello, Max","errors":[]}"#);
}

#[tokio::test]
async fn calls_over_the_in_flight_limit_are_refused_not_queued() {
    let node = Node::start(LABNODE, &["--max-in-flight", "4"]).await;
    let lab = lab_client(&node).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let lab = lab.clone();
            tokio::spawn(async move { lab.sleep(500).await })
        })
        .collect();
    let (mut ok, mut overloaded) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(500) => ok += 1,
            Err(LabError::Rpc(Error::Overloaded { .. })) => overloaded += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, overloaded), (4, 6));
    lab.nothing().await.unwrap();
}

#[tokio::test]
async fn the_greeter_example_client_runs_against_a_node() {
    let node = lab().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_greeter-client-example"))
        .args([&node.addr.to_string(), "Max"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout,
        "local:  Hello, Max / Hello, Max again\nremote: Hello, Max / Hello, Max again\npostcard sent to Max\n"
    );
}
