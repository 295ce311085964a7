//! Issue 4: the gateway in front of the mesh, driven over HTTP as a user would.

use std::time::Duration;

use meshrpc_tests::harness::{http, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

/// The example gateway (mesh-api) and three greeter replicas, all on free ports.
struct Mesh {
    gateway: Node,
    mesh: String,
    replicas: Vec<Node>,
}

async fn mesh(tag: &str) -> Mesh {
    let gateway = Node::start(
        MESHRPC,
        &[
            "example",
            "mesh-api",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--listen-addr",
            "127.0.0.1:0",
            "--tag",
            tag,
        ],
    )
    .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            // Request lines are off by default: these tests read them.
            Node::start_env(
                MESHRPC,
                &["example", "greeter", "--nodes", &mesh, "--listen-addr", "127.0.0.1:0", "--tag", tag],
                &[("MESHRPC_REQUEST_LOG", "on")],
            )
            .await,
        );
    }
    let gw = gateway.url("/healthz");
    // Ready once the gateway sees itself and the three replicas.
    let ready = meshrpc_tests::harness::eventually(Duration::from_secs(15), || async {
        let h = http("GET", &gw, "", &[]).await;
        (h.status == 200 && h.json()["members"] == 4).then_some(())
    })
    .await;
    assert!(ready.is_some(), "gateway never saw 3 replicas");
    Mesh { gateway, mesh, replicas }
}

/// `meshrpc gateway` on free ports with `extra` flags, and the lab node behind it.
async fn generic_gateway(tag: &str, extra: &[&str]) -> (Node, Node) {
    let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag];
    args.extend_from_slice(extra);
    let gateway = Node::start(MESHRPC, &args).await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let lab = Node::start(LABNODE, &["--tag", tag, "--nodes", &mesh, "--name", "lab1"]).await;
    (gateway, lab)
}

fn greets_served(node: &Node) -> usize {
    node.output().iter().filter(|l| l.contains("meshrpc::request") && l.contains("method=\"greet\"")).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_walkthrough_works_through_the_gateway() {
    let m = mesh("walkthrough").await;
    let gw = |p: &str| m.gateway.url(p);

    let greet = http("GET", &gw("/greeter/greet/Max"), "", &[]).await;
    assert_eq!((greet.status, greet.body.as_str()), (200, "\"Hello, Max\""));

    let rpc = http("POST", &gw("/greeter/greet"), r#"{"name":"Max"}"#, &[]).await;
    assert_eq!((rpc.status, rpc.body.as_str()), (200, r#"{"data":"Hello, Max","errors":[]}"#));

    let check = http("GET", &gw("/greeter/check"), "", &[]).await;
    assert_eq!(check.status, 200);
    let time = check.body.strip_prefix("All ok! ").unwrap_or_else(|| panic!("{}", check.body));
    assert!(time.len() == 20 && time.ends_with('Z') && &time[10..11] == "T", "not RFC 3339: {time}");

    let card = http("POST", &gw("/greeter/sendPostcard/Max/World/Hello"), "", &[]).await;
    assert_eq!((card.status, card.body.as_str()), (200, "\"Postcard sent to Max\""));
    let expected =
        r#"sending Postcard { picture_url: "", address: "World", recipient: "Max", message: "Hello" } to Max"#;
    let got = meshrpc_tests::harness::eventually(Duration::from_secs(5), || async {
        m.replicas.iter().any(|r| r.output().iter().any(|l| l == expected)).then_some(())
    })
    .await;
    assert!(got.is_some(), "no replica received the postcard struct");

    for i in 0..30 {
        let r = http("GET", &gw(&format!("/greeter/greet/n{i}")), "", &[]).await;
        assert_eq!(r.status, 200);
    }
    let served: Vec<usize> = m.replicas.iter().map(greets_served).collect();
    assert!(served.iter().all(|&n| n >= 5), "greets per replica: {served:?}");
    // Request logs name the calling node, as the seed's GIN lines named the client.
    // (Lines of `meshrpc.*` calls, such as method lists fetched, are not the point here.)
    let log = m.replicas[0]
        .output()
        .into_iter()
        .find(|l| l.contains("meshrpc::request") && l.contains("service=\"greeter\""))
        .unwrap();
    let fields = ["caller=mesh-api@127.0.0.1:", "service=\"greeter\"", "status=\"ok\"", "micros="];
    assert!(fields.iter().all(|f| log.contains(f)), "{log}");
    assert!(!m.mesh.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_precise_errors_and_the_gateway_lives() {
    let (gateway, mut lab) = generic_gateway("bad-input", &["--max-body", "2048", "--client-timeout", "1"]).await;
    let url = |p: &str| gateway.url(p);
    let known = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        (http("POST", &url("/lab/nothing"), "", &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(known.is_some(), "gateway never routed to lab");

    let cases: [(&str, String, u16, &str, &str); 6] = [
        ("/greeter/greet", "{\"name\":".into(), 400, "bad_request", "EOF while parsing"),
        ("/greeter/greet", r#"{"name":["Max"]}"#.into(), 400, "bad_request", "name: invalid type: sequence"),
        ("/billing/charge", "{}".into(), 404, "unknown_service", "unknown service `billing`"),
        ("/greeter/shout", "{}".into(), 404, "unknown_method", "unknown method `shout` on service `greeter`"),
        ("/greeter/greet", format!(r#"{{"name":"{}"}}"#, "x".repeat(4096)), 413, "too_large", "limit 2048"),
        ("/lab/refuse", r#"{"reason":"no"}"#.into(), 422, "application", "the service returned an error"),
    ];
    for (path, body, status, code, message) in cases {
        let a = http("POST", &url(path), body, &[]).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert_eq!(a.json()["errors"][0]["code"], code, "{path}: {}", a.body);
        let got = a.json()["errors"][0]["message"].as_str().unwrap().to_owned();
        assert!(got.contains(message), "{path}: {got}");
    }

    // A client that sends half its headers and stalls is cut off after the timeout.
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    slow.write_all(b"POST /greeter/greet HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow headers: connection not closed within 5 s");

    // A client that stalls in its body gets 408 with a JSON body.
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    slow.write_all(b"POST /greeter/greet HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("body_timeout"), "{text}");

    // A backend that dies mid-request: 503 with a JSON body, promptly.
    let slow_call = tokio::spawn({
        let u = url("/lab/sleep");
        async move { http("POST", &u, r#"{"millis":20000}"#, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.kill().await;
    let died = tokio::time::timeout(Duration::from_secs(5), slow_call).await.expect("hung").unwrap();
    assert_eq!(died.status, 503, "{}", died.body);
    assert_eq!(died.json()["errors"][0]["code"], "unavailable");

    // Through all of it the gateway kept serving.
    assert_eq!(http("GET", &url("/ping"), "", &[]).await.status, 204);
    let gone = http("POST", &url("/lab/nothing"), "", &[]).await;
    assert!([404, 503].contains(&gone.status), "{}", gone.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_and_count_requests() {
    let m = mesh("metrics").await;
    for _ in 0..7 {
        assert_eq!(http("POST", &m.gateway.url("/greeter/greet"), r#"{"name":"M"}"#, &[]).await.status, 200);
    }
    assert_eq!(http("POST", &m.gateway.url("/greeter/greet"), "nope", &[]).await.status, 400);
    let text = http("GET", &m.gateway.url("/metrics"), "", &[]).await.body;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let count = |status: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "meshrpc_gateway_requests_total"
                    && s.labels.get("service") == Some("greeter")
                    && s.labels.get("method") == Some("greet")
                    && s.labels.get("status") == Some(status)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            })
    };
    assert_eq!(count("200"), Some(7.0), "{text}");
    assert_eq!(count("400"), Some(1.0), "{text}");
    assert!(scrape.samples.iter().any(|s| s.metric.starts_with("meshrpc_gateway_request_duration_seconds")));
}

/// Load with a real external tool. `./test.sh` installs wrk and sets
/// `MESHRPC_REQUIRE_TOOLS=1`, under which a missing wrk is a failure, not a skip.
#[tokio::test(flavor = "multi_thread")]
async fn wrk_load_through_the_gateway_has_no_errors() {
    if !meshrpc_tests::harness::tool("wrk") {
        return;
    }
    let m = mesh("load").await;
    let script = std::env::temp_dir().join(format!("meshrpc-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, "wrk.method = \"POST\"\nwrk.body = '{\"name\":\"Max\"}'\n").unwrap();
    for (what, url, extra) in [
        ("GET /greeter/greet/Max", m.gateway.url("/greeter/greet/Max"), vec![]),
        ("POST /greeter/greet", m.gateway.url("/greeter/greet"), vec!["-s".to_owned(), script.display().to_string()]),
    ] {
        let out = tokio::process::Command::new("wrk")
            .args(["-t2", "-c32", "-d3s", "--latency", "--timeout", "5s"])
            .args(&extra)
            .arg(&url)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let pick =
            |prefix: &str| text.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or("").trim().to_owned();
        eprintln!("wrk {what}: {} | {} | {}", pick("Requests/sec"), pick("50%"), pick("99%"));
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("Non-2xx"), "{text}");
        assert!(!text.contains("Socket errors"), "{text}");
        let rps: f64 = pick("Requests/sec").split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rps > 0.0);
    }
    let _ = std::fs::remove_file(script);
}

#[tokio::test(flavor = "multi_thread")]
async fn meshed_http_handlers_get_the_whole_request_and_slow_ones_time_out() {
    let (gateway, _lab) = generic_gateway("proxy", &["--timeout", "1"]).await;
    let echo = gateway.url("/labhttp/echo?x=1&y=two");
    let seen = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        let a = http("PUT", &echo, vec![7u8; 100_000], &[("x-test", "kept")]).await;
        (a.status == 200).then_some(a.body)
    })
    .await;
    // Method, query, a custom header and the whole body arrive; the router is nested under
    // `/labhttp` on the node, so it sees its own path.
    assert_eq!(seen.as_deref(), Some("PUT /echo x=1&y=two kept 100000"));

    let start = std::time::Instant::now();
    let slow = http("GET", &gateway.url("/labhttp/slow?ms=5000"), "", &[]).await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert_eq!(slow.json()["errors"][0]["code"], "timeout");
    println!("a 5 s handler behind a 1 s gateway timeout answered 504 after {:?}", start.elapsed());
    assert_eq!(http("GET", &gateway.url("/labhttp/slow?ms=10"), "", &[]).await.body, "done");
}
