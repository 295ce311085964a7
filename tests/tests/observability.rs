//! Issue 14: seeing the mesh — golden metrics on every node, `meshrpc top`, the live
//! dashboard in a real browser, a real Prometheus scraping the mesh.

use std::time::Duration;

use meshrpc::{cluster::Resilience, Cluster};
use meshrpc_tests::{
    browser::{chromium, Browser},
    faults::{Faulty, FaultyClient},
    harness::{eventually, http, tool, Node},
};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

use meshrpc_tests::tier::heavy;

/// A client-only node of the test that sees `replicas` replicas of `faulty`, with no
/// retries (so each replica serves exactly its round-robin share).
async fn caller(tag: &str, seed: &Node, replicas: usize) -> Cluster {
    let cluster = Cluster::builder("observer")
        .tag(tag)
        .seeds([seed.addr.to_string()])
        .resilience(Resilience::off())
        .start()
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(15), || async {
        (cluster.view().replicas("faulty", None).count() == replicas).then_some(())
    })
    .await;
    assert!(seen.is_some(), "never saw {replicas} replicas");
    cluster
}

/// The value of the sample of `metric` whose labels include all of `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    scrape.samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            ref other => panic!("{other:?}"),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_golden_metrics_and_top_gathers_them() {
    let tag = "observe-golden";
    let a = Node::start(LABNODE, &["--tag", tag, "--name", "alpha", "--fail-percent", "10"]).await;
    let seed = a.addr.to_string();
    let b = Node::start(LABNODE, &["--tag", tag, "--name", "beta", "--fail-percent", "10", "--nodes", &seed]).await;
    let cluster = caller(tag, &a, 2).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let mut failed = 0;
    for i in 0..200 {
        if client.read(i).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 20, "every 10th call of each replica fails");

    // Each replica: 100 calls from the `observer` node, 90 ok, 10 internal.
    for node in [&a, &b] {
        let text = http("GET", &node.url("/metrics"), "", &[]).await.body;
        let inbound = [("direction", "inbound"), ("service", "faulty"), ("method", "read"), ("peer", "observer")];
        let count = |code: &str| {
            let mut labels = inbound.to_vec();
            labels.push(("code", code));
            sample(&text, "meshrpc_calls_total", &labels)
        };
        assert_eq!((count("ok"), count("internal")), (Some(90.0), Some(10.0)), "{text}");
        assert_eq!(sample(&text, "meshrpc_call_duration_seconds", &inbound), Some(100.0), "the histogram's count");
        assert_eq!(sample(&text, "meshrpc_calls_in_flight", &inbound), Some(0.0));
        assert_eq!(sample(&text, "meshrpc_members", &[("state", "serving")]), Some(2.0), "{text}");
        // It has been gossiping with the other replica and the caller: both ways, counted.
        for direction in ["sent", "received"] {
            let bytes = sample(&text, "meshrpc_gossip_bytes_total", &[("direction", direction)]).unwrap_or(0.0);
            let datagrams = sample(&text, "meshrpc_gossip_datagrams_total", &[("direction", direction)]);
            assert!(bytes > 0.0 && datagrams.unwrap_or(0.0) > 0.0, "{text}");
        }
        assert!(sample(&text, "meshrpc_connections_open", &[]).unwrap_or(0.0) >= 1.0);
        assert!(sample(&text, "meshrpc_concurrency_limit", &[]).is_some());
    }
    // The caller counted the same calls as outbound, by replica node.
    let mine = meshrpc::metrics::node_stats();
    let outbound: u64 = mine
        .series
        .iter()
        .filter(|s| s.direction == meshrpc::metrics::Direction::Outbound && s.service == "faulty" && s.method == "read")
        .filter(|s| s.peer == "alpha" || s.peer == "beta")
        .map(|s| s.calls())
        .sum();
    assert_eq!(outbound, 200);

    // `meshrpc top` while calls flow: requests/s and the success rate the traffic made.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..4000u64 {
                let _ = client.read(i).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let top = tokio::process::Command::new(MESHRPC)
        .args(["top", "--json", "--once", "--interval", "1.5", "--tag", tag, "--nodes", &seed])
        .output()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&top.stdout).unwrap_or_else(|e| {
        panic!("top --json: {e}: {}{}", String::from_utf8_lossy(&top.stdout), String::from_utf8_lossy(&top.stderr))
    });
    let read = json["methods"].as_array().unwrap().iter().find(|m| m["method"] == "read").expect("faulty.read in top");
    assert!(read["rps"].as_f64().unwrap() > 0.0, "{json}");
    let success = read["success_rate"].as_f64().unwrap();
    assert!((0.85..=0.95).contains(&success), "about 90 % succeed: {json}");
    assert!(read["p99"].as_f64().is_some());
    // (This caller is client-only: nobody can gather its side; the dashboard test sees the
    // gateway's calls to the replicas as edges.)
    assert!(json["edges"].is_array(), "{json}");

    // A scrape while calls flow answers (the timeout is only a guard against a hang).
    let scraped = tokio::time::timeout(Duration::from_secs(5), http("GET", &a.url("/metrics"), "", &[])).await;
    assert_eq!(scraped.expect("a scrape under load answers").status, 200);

    // A node that stops answering is shown as unreachable, and top does not hang on it.
    let mut watch = tokio::process::Command::new(MESHRPC)
        .args(["top", "--json", "--interval", "0.5", "--tag", tag, "--nodes", &seed])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    lines.next_line().await.unwrap().expect("a first refresh");
    let pid = b.child.id().unwrap().to_string();
    tokio::process::Command::new("kill").args(["-STOP", &pid]).status().await.unwrap();
    let shown = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            if json["unreachable"].as_array().unwrap().iter().any(|u| u[0] == "beta") {
                return Some(json);
            }
        }
        None
    })
    .await;
    tokio::process::Command::new("kill").args(["-CONT", &pid]).status().await.unwrap();
    let shown = shown.expect("top kept refreshing").expect("top showed beta as unreachable");
    println!("top with a stopped node: {shown}");
    load.abort();
}

/// The demo's pieces, each its own process: a gateway and three greeter replicas.
struct Demo {
    gateway: Node,
    replicas: Vec<Node>,
}

async fn demo(tag: &str) -> Demo {
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let mesh = mesh.trim_start_matches("mesh on ").to_owned();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Node::start(
                MESHRPC,
                &["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", &mesh],
            )
            .await,
        );
    }
    Demo { gateway, replicas }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_mesh_live_in_a_real_browser() {
    if !heavy("the dashboard in a real browser") || chromium().is_none() {
        return;
    }
    let mut demo = demo("observe-dashboard").await;
    let greet = demo.gateway.url("/greeter/greet");
    let up = eventually(Duration::from_secs(15), || async {
        (http("POST", &greet, r#"{"name":"Ada"}"#, &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(up.is_some());
    let load = tokio::spawn(async move {
        loop {
            let _ = http("POST", &greet, r#"{"name":"Ada"}"#, &[]).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut browser = Browser::open(&demo.gateway.url("/dashboard"), 1280, 900).await;
    let js = |what: &str| match what {
        "replicas" => r#"document.querySelectorAll('.node[data-services~="greeter"][data-state="serving"]').length"#,
        "rps" => {
            r#"Number((document.querySelector('.service[data-name="greeter"]') || {dataset: {rps: 0}}).dataset.rps)"#
        }
        "draining" => r#"document.querySelectorAll('.node[data-services~="greeter"][data-state="draining"]').length"#,
        _ => unreachable!(),
    };
    let mut seen = None;
    for _ in 0..100 {
        let (replicas, rps) = (browser.eval(js("replicas")).await, browser.eval(js("rps")).await);
        if replicas == 3 && rps.as_f64().unwrap_or(0.0) > 0.0 {
            seen = Some(rps);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rps = seen.expect("the dashboard never showed three greeter replicas with traffic");
    println!("the dashboard shows 3 greeter replicas, {rps} req/s");
    if let Ok(path) = std::env::var("MESHRPC_DASHBOARD_SCREENSHOT") {
        // A few updates in, so the charts have a line.
        for _ in 0..100 {
            if browser.eval("Number(document.getElementById('status').dataset.updates)").await.as_u64() >= Some(8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::fs::write(&path, browser.screenshot().await).unwrap();
    }
    assert!(browser.eval("document.querySelectorAll('.edge').length").await.as_u64().unwrap_or(0) >= 1);
    // Every label of the topology lies inside the drawing (the bottom one was cut off).
    let clipped = r#"(() => { const svg = document.getElementById('topology'), v = svg.viewBox.baseVal;
        return [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBBox()])
            .filter(([, b]) => b.x < v.x || b.y < v.y || b.x + b.width > v.width || b.y + b.height > v.height)
            .map(([text]) => text); })()"#;
    assert_eq!(browser.eval(clipped).await, serde_json::json!([]), "labels cut off at the drawing's edge");
    // A page opened now draws the last seconds at once: more values than it was sent updates
    // (the gateway has gathered a few seconds' worth by now).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = Browser::open(&demo.gateway.url("/dashboard"), 1280, 900).await;
    let row = r#"(() => { const r = document.querySelector('.service[data-name="greeter"]');
        return r ? [Number(r.dataset.history), Number(document.getElementById('status').dataset.updates)] : null; })()"#;
    let mut drawn = None;
    for _ in 0..100 {
        drawn = late.eval(row).await.as_array().cloned();
        if drawn.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drawn = drawn.expect("the late page drew the greeter");
    let (values, updates) = (drawn[0].as_u64(), drawn[1].as_u64());
    let (Some(values), Some(updates)) = (values, updates) else { panic!("[values, updates] {drawn:?}") };
    assert!(values > updates, "[values, updates] {drawn:?}");
    // SIGTERM: the replica drains, and the page says so while it does.
    let replica = &mut demo.replicas[0];
    let pid = replica.child.id().unwrap().to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    let mut draining = false;
    for _ in 0..60 {
        if browser.eval(js("draining")).await == 1 {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(draining, "the dashboard never showed the replica draining");
    load.abort();
    // The API page (issue 17), from embedded assets, lists the greeter's methods with types.
    let mut docs = Browser::open(&demo.gateway.url("/docs"), 1280, 900).await;
    let expression = r#"[...document.querySelectorAll('.method .sig')].map(m => m.textContent).join('\n')"#;
    let mut listed = String::new();
    for _ in 0..150 {
        listed = docs.eval(expression).await.as_str().unwrap_or_default().to_owned();
        if listed.contains("/greeter/greet") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(listed.contains("/greeter/greet  (name: string) → string  ·  error: GreetError"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_are_bounded_and_one_that_leaves_frees_its_place() {
    let tag = "observe-bound";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let open = |addr: std::net::SocketAddr| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /dashboard/events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut head = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await.expect("an answer").unwrap();
        (String::from_utf8_lossy(&head[..n]).into_owned(), s)
    };
    let mut streams = Vec::new();
    for _ in 0..16 {
        let (head, s) = open(gateway.addr).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        streams.push(s);
    }
    let (refused, _) = open(gateway.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "the 17th is refused: {refused}");
    // Browsers that leave mid-stream free their places (and stop their gatherings).
    drop(streams);
    let again = eventually(Duration::from_secs(10), || async {
        let (head, _s) = open(gateway.addr).await;
        head.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(again.is_some(), "the places of closed dashboards were never freed");
    assert_eq!(http("GET", &gateway.url("/dashboard"), "", &[]).await.status, 200);
}

/// decisions.md's gossip budget: what a node gossips about itself is a few dozen bytes per
/// service, whatever the service's size — the README's greeter at most 100 bytes, lab
/// nodes with six services (one of 200 methods) and an HTTP router under 1 KiB — and
/// method lists are fetched over the mesh once per distinct list, not once per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gossips_under_one_kib_about_itself_and_method_lists_are_fetched_once() {
    let tag = "observe-budget";
    let greeter = Node::start(MESHRPC, &["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", tag]).await;
    let seed = greeter.addr.to_string();
    let gateway = Node::start(
        MESHRPC,
        &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", &seed],
    )
    .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let lab = Node::start(LABNODE, &["--tag", tag, "--name", "budget", "--nodes", &seed, "--wide"]).await;
    let gossiped = |node: &Node| {
        let url = node.url("/metrics");
        async move {
            // Published services are advertised just after the port opens: wait for them.
            eventually(Duration::from_secs(10), || async {
                let text = http("GET", &url, "", &[]).await.body;
                let bytes = sample(&text, "meshrpc_gossip_state_bytes", &[])? as u64;
                (bytes > 60).then_some(bytes)
            })
            .await
        }
    };
    let greeter_bytes = gossiped(&greeter).await.expect("the greeter reports no gossip state");
    let lab_bytes = gossiped(&lab).await.expect("the lab node reports no gossip state");
    println!("the greeter gossips {greeter_bytes} bytes about itself, the lab node {lab_bytes}");
    assert!(greeter_bytes <= 100, "the greeter gossips {greeter_bytes} bytes about itself");
    assert!(lab_bytes < 1024, "the lab node gossips {lab_bytes} bytes about itself");

    // The 200-method service is callable through the gateway, by its first and last methods.
    let call = |method: &'static str| {
        let url = gateway.url(&format!("/wide/{method}"));
        async move {
            eventually(Duration::from_secs(15), || async {
                let answer = http("POST", &url, r#"{"value":41}"#, &[]).await;
                (answer.status == 200).then(|| answer.json()["data"].clone())
            })
            .await
        }
    };
    assert_eq!(call("m000").await, Some(serde_json::json!(42)));
    assert_eq!(call("m199").await, Some(serde_json::json!(42)));

    // A second node with the same five services adds no fetch: one per distinct list
    // (lab, faulty, greeter, streamer, wide), whichever member advertises it.
    let _twin = Node::start(LABNODE, &["--tag", tag, "--name", "twin", "--nodes", &mesh, "--wide"]).await;
    let both = eventually(Duration::from_secs(15), || async {
        let view = http("GET", &gateway.url("/healthz"), "", &[]).await.json();
        (view["members"] == 4).then_some(())
    })
    .await;
    assert!(both.is_some(), "the gateway never saw the second lab node");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = http("GET", &format!("http://{mesh}/metrics"), "", &[]).await.body;
    let fetched = sample(&text, "meshrpc_method_lists_fetched_total", &[]);
    let kept = sample(&text, "meshrpc_method_lists", &[]);
    assert_eq!((fetched, kept), (Some(5.0), Some(5.0)), "lists fetched and kept by the gateway");
}

/// Every open dashboard is served by one gathering a second: four dashboards cost a node
/// the `meshrpc.stats` calls of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_share_one_gathering() {
    let tag = "observe-shared";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let node = Node::start(LABNODE, &["--tag", tag, "--name", "shared", "--nodes", &mesh]).await;
    let seen = eventually(Duration::from_secs(15), || async {
        (http("GET", &gateway.url("/healthz"), "", &[]).await.json()["members"] == 2).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the gateway never saw the node");
    let asked = || async {
        let text = http("GET", &node.url("/metrics"), "", &[]).await.body;
        let stats = [("direction", "inbound"), ("service", "meshrpc"), ("method", "stats"), ("code", "ok")];
        sample(&text, "meshrpc_calls_total", &stats).unwrap_or(0.0) as u64
    };
    let before = asked().await;
    let mut dashboards = Vec::new();
    for _ in 0..4 {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        s.write_all(b"GET /dashboard/events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        dashboards.push(s);
    }
    let opened = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = asked().await - before;
    let seconds = opened.elapsed().as_secs();
    drop(dashboards);
    // One gathering: one call to start it, then one a second (four apart would be four times that).
    assert!(calls >= 2 && calls <= seconds + 2, "{calls} stats calls in {seconds} s for four dashboards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_mesh() {
    if !heavy("Prometheus") || !tool("prometheus") {
        return;
    }
    let tag = "observe-prometheus";
    let a = Node::start(LABNODE, &["--tag", tag, "--name", "gamma", "--fail-percent", "10"]).await;
    let seed = a.addr.to_string();
    let _b = Node::start(LABNODE, &["--tag", tag, "--name", "delta", "--fail-percent", "10", "--nodes", &seed]).await;
    // Targets from `meshrpc status --json`, through file-based discovery.
    let status = eventually(Duration::from_secs(15), || async {
        let out = tokio::process::Command::new(MESHRPC)
            .args(["status", "--json", "--tag", tag, "--nodes", &seed])
            .output()
            .await
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let addrs: Vec<String> =
            json["members"].as_array()?.iter().filter_map(|m| m["addr"].as_str().map(str::to_owned)).collect();
        (addrs.len() == 2).then_some(addrs)
    })
    .await
    .expect("status lists both nodes");
    let dir = std::env::temp_dir().join(format!("meshrpc-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("targets.json"),
        serde_json::json!([{ "targets": status, "labels": { "job": "meshrpc" } }]).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: meshrpc\n    file_sd_configs:\n      - files: ['{}']\n",
            dir.join("targets.json").display()
        ),
    )
    .unwrap();
    let port = meshrpc_tests::harness::free_port();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting prometheus");
    // Prometheus takes a while to listen on a loaded machine: query it once it does.
    let listening = meshrpc_tests::harness::eventually(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    assert!(listening.is_some(), "prometheus never listened on 127.0.0.1:{port}");
    let cluster = caller(tag, &a, 2).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let query = |q: String| async move {
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={}", urlencode(&q));
        let answer = http("GET", &url, "", &[]).await;
        let json: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
    };
    // Calls flow while Prometheus scrapes: the rate of calls is non-zero.
    let mut rate = None;
    for round in 0..60u64 {
        for i in 0..20 {
            let _ = client.read(round * 20 + i).await;
        }
        rate = query(r#"sum(rate(meshrpc_calls_total{direction="inbound",service="faulty"}[5s]))"#.into())
            .await
            .filter(|r| *r > 0.0);
        if rate.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rate = rate.expect("Prometheus never saw calls of faulty");
    // Stop at a multiple of 20 calls (10 per replica): exactly 90 % succeeded.
    let calls = client_calls_so_far(&cluster);
    let ratio = eventually(Duration::from_secs(20), || {
        async move {
            let total = query(r#"sum(meshrpc_calls_total{direction="inbound",service="faulty",method="read"})"#.into()).await?;
            (total == calls as f64).then_some(())?;
            query(r#"sum(meshrpc_calls_total{direction="inbound",service="faulty",method="read",code="ok"}) / sum(meshrpc_calls_total{direction="inbound",service="faulty",method="read"})"#.into()).await
        }
    })
    .await
    .expect("Prometheus scraped every call");
    println!("Prometheus: {rate:.1} calls/s of faulty; per-method success rate {ratio}");
    assert!((ratio - 0.9).abs() < 1e-9, "{ratio}");
}

/// Calls of `faulty.read` this process made so far.
fn client_calls_so_far(_cluster: &Cluster) -> u64 {
    meshrpc::metrics::node_stats()
        .series
        .iter()
        .filter(|s| s.direction == meshrpc::metrics::Direction::Outbound && s.service == "faulty" && s.method == "read")
        .filter(|s| s.peer == "gamma" || s.peer == "delta")
        .map(|s| s.calls())
        .sum()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
