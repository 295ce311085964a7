//! An atomic versioned rollout of the whole boutique (examples/boutique), under load:
//! v1 runs (three groups, one process) behind a gateway with an application split of
//! v1=100; the load generator (`boutique-load`, open loop) shops through the frontend; v2
//! starts beside v1 (a changed payment contract) and the split moves to 50/50, then to
//! v2=100. Every request is served by one version end to end — the gateway names the
//! version it pinned, the pages name the frontend's, each order its checkout's and its
//! payment's — and no request fails.

use std::time::{Duration, Instant};

use meshrpc_tests::harness::{http, Node};
use tokio::io::AsyncBufReadExt;

const BOUTIQUE: &str = env!("CARGO_BIN_EXE_boutique-example");
const LOAD: &str = env!("CARGO_BIN_EXE_boutique-load");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const THREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/boutique/placements/three.toml");

/// The load generator's run, seconds; each phase waits for what it needs within it.
const LOAD_SECONDS: u64 = 24;
const READY_WITHIN: Duration = Duration::from_secs(20);

/// `meshrpc split --app …` through the app's seed; its output.
async fn split(seed: &str, tag: &str, shares: &[&str]) -> String {
    let mut args = vec!["split", "--app"];
    args.extend_from_slice(shares);
    args.extend(["--nodes", seed, "--tag", tag]);
    let out = tokio::process::Command::new(MESHRPC).args(&args).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "meshrpc {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The load generator's per-second lines until its summary.
struct Load {
    lines: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    seconds: Vec<serde_json::Value>,
    _child: tokio::process::Child,
}

impl Load {
    fn start(gateway: &str) -> Load {
        let url = format!("http://{gateway}");
        let args = ["--url", &url, "--rate", "40", "--duration-s", &LOAD_SECONDS.to_string(), "--users", "60"];
        let mut child = tokio::process::Command::new(LOAD)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Load { lines, seconds: Vec::new(), _child: child }
    }

    /// Reads seconds until one satisfies `what` (its versions), within the run.
    async fn until(&mut self, why: &str, what: impl Fn(&serde_json::Value) -> bool) {
        let within = Duration::from_secs(LOAD_SECONDS);
        let found = tokio::time::timeout(within, async {
            while let Some(line) = self.lines.recv().await {
                let hit = line.get("second").is_some() && what(&line["versions"]);
                self.seconds.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "{why}: never seen; seconds so far: {:?}", self.seconds);
    }

    /// The summary (the rest of the seconds are kept).
    async fn summary(&mut self) -> serde_json::Value {
        let within = Duration::from_secs(LOAD_SECONDS + 20);
        let summary = tokio::time::timeout(within, async {
            while let Some(line) = self.lines.recv().await {
                match line.get("summary") {
                    Some(summary) => return Some(summary.clone()),
                    None => self.seconds.push(line),
                }
            }
            None
        })
        .await;
        summary.ok().flatten().expect("the load generator's summary")
    }
}

fn count(versions: &serde_json::Value, version: &str) -> u64 {
    versions[version].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_split_moves_whole_requests_from_v1_to_v2_under_load() {
    let started = Instant::now();
    let tag = format!("rollout-{}", std::process::id());
    let app = |version: &'static str, seed: Option<&str>| {
        let mut args =
            vec!["--placement", THREE, "--listen-addr", "127.0.0.1:0", "--tag", &tag, "--app-version", version];
        if let Some(seed) = seed {
            args.extend(["--nodes", seed]);
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move { Node::start(BOUTIQUE, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let v1 = app("v1", None).await;
    assert!(v1.line("ready", READY_WITHIN).await.is_some(), "v1 not ready: {:?}", v1.output());
    let seed = v1.addr.to_string();
    let gateway_args =
        ["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", &tag, "--nodes", &seed];
    let gateway = Node::start(MESHRPC, &gateway_args).await;
    // Pin every request before a second version exists: from here on, each request gets
    // its version at the gateway.
    split(&seed, &tag, &["v1=100"]).await;
    let pinned = meshrpc_tests::harness::eventually(READY_WITHIN, || async {
        let body = r#"{"session": {"user_id": "probe", "currency": "USD"}}"#;
        let answer = http("POST", &gateway.url("/frontend/home"), body, &[("content-type", "application/json")]).await;
        let version = answer.headers.get("meshrpc-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (answer.status == 200 && version.as_deref() == Some("v1")).then_some(())
    })
    .await;
    assert!(pinned.is_some(), "the gateway never pinned a request to v1");

    let mut load = Load::start(&gateway.addr.to_string());
    load.until("a second of v1 only", |v| count(v, "v1") > 0 && count(v, "v2") == 0).await;
    // v2 beside v1: the split still sends everything to v1.
    let v2 = app("v2", Some(&seed)).await;
    assert!(v2.line("ready", READY_WITHIN).await.is_some(), "v2 not ready: {:?}", v2.output());
    load.until("v1 only with v2 running", |v| count(v, "v1") > 0 && count(v, "v2") == 0).await;
    split(&seed, &tag, &["v1=50", "v2=50"]).await;
    load.until("a second served by both", |v| count(v, "v1") > 0 && count(v, "v2") > 0).await;
    let status =
        tokio::process::Command::new(MESHRPC).args(["status", "--nodes", &seed, "--tag", &tag]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("APPLICATION VERSIONS  split v1=50 v2=50"), "{status}");
    assert!(status.contains("50 % of new requests"), "{status}");
    // A node's own HTTP port is a front door too: a v1 node pins what enters through it
    // by the same rule, and hands the v2 half to v2 through the mesh.
    let through_node = tokio::process::Command::new(LOAD)
        .args(["--url", &format!("http://{seed}"), "--rate", "20", "--duration-s", "3", "--users", "20"])
        .output()
        .await
        .unwrap();
    let node_summary = String::from_utf8_lossy(&through_node.stdout)
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("summary").cloned())
        .expect("a summary of the load through the node");
    eprintln!("through the v1 node's port at 50/50: {node_summary}");
    assert_eq!((node_summary["failed"].as_u64(), node_summary["mixed"].as_u64()), (Some(0), Some(0)), "{node_summary}");
    let versions = &node_summary["versions"];
    assert!(count(versions, "v1") > 0 && count(versions, "v2") > 0, "{node_summary}");
    split(&seed, &tag, &["v2=100"]).await;
    load.until("a second of v2 only", |v| count(v, "v2") > 0 && count(v, "v1") == 0).await;
    let summary = load.summary().await;
    eprintln!("rollout in {:?}: {summary}", started.elapsed());
    for second in &load.seconds {
        eprintln!("  {second}");
    }
    // No request saw two versions, and none failed.
    assert_eq!(summary["mixed"], 0, "{summary}");
    assert_eq!((summary["failed"].as_u64(), summary["unfinished"].as_u64()), (Some(0), Some(0)), "{summary}");
    assert!(count(&summary["versions"], "v1") > 0 && count(&summary["versions"], "v2") > 0, "{summary}");
    // Once v2 took every new request, v1 served none.
    let last = load.seconds.iter().rev().find(|s| s.get("second").is_some()).expect("seconds");
    assert_eq!(count(&last["versions"], "v1"), 0, "{last}");
    // A shopper moved to v2 between adding to the cart and checking out finds the cart
    // empty (carts are in memory, per version): counted apart, the order itself was served
    // by one version.
    eprintln!("shoppers moved between versions mid-checkout: {}", summary["moved"]);
}
