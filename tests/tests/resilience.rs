//! Issue 16: what callers do when replicas fail, stall, hang or die, and what a node does
//! under more load than it can take — with real `labnode` processes told to misbehave
//! (`Faulty`), and real callers.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use meshrpc::{cluster::Resilience, Cluster, Error};
use meshrpc_tests::{
    faults::{FaultStats, Faulty, FaultyClient},
    harness::{eventually, http, Node},
};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// A lab node of cluster `tag` named `name`, with more flags.
async fn lab(tag: &str, name: &str, seed: Option<&Node>, more: &[&str]) -> Node {
    let seed = seed.map(|n| n.addr.to_string());
    let mut args = vec!["--tag", tag, "--name", name];
    if let Some(seed) = &seed {
        args.extend(["--nodes", seed.as_str()]);
    }
    args.extend(more);
    Node::start(LABNODE, &args).await
}

/// An empty directory of this test run.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshrpc-resilience-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client-only node of the test with `resilience`, once it sees `replicas` of `faulty`.
async fn caller(tag: &str, name: &str, seed: &Node, replicas: usize, resilience: Resilience) -> Cluster {
    let cluster =
        Cluster::builder(name).tag(tag).seeds([seed.addr.to_string()]).resilience(resilience).start().await.unwrap();
    let seen = eventually(Duration::from_secs(15), || async {
        (cluster.view().replicas("faulty", None).count() == replicas).then_some(())
    })
    .await;
    assert!(seen.is_some(), "never saw {replicas} faulty replicas");
    cluster
}

/// What the node at `node` saw, straight from it.
async fn stats(node: &Node) -> FaultStats {
    let direct = FaultyClient::new(meshrpc::connect(node.addr.to_string().as_str()).await.unwrap());
    direct.faults().await.unwrap()
}

/// Runs `calls` calls of `f` from `tasks` tasks at once; the answers in order of arrival.
async fn run<F, Fut>(calls: usize, tasks: usize, f: F) -> Vec<(Duration, Result<String, Error>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<String, Error>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (f, next) = (f.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls as u64 {
                    return out;
                }
                let start = Instant::now();
                let answer = f(i).await;
                out.push((start.elapsed(), answer));
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

/// `tasks` tasks calling `f` one call after another for `time`: every answer.
async fn run_for<F, Fut>(time: Duration, tasks: usize, f: F) -> Vec<(Duration, Result<String, Error>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<String, Error>> + Send,
{
    let f = Arc::new(f);
    let end = Instant::now() + time;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < end {
                    let start = Instant::now();
                    let answer = f().await;
                    out.push((start.elapsed(), answer));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

fn percentile(mut latencies: Vec<Duration>, p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_keeps_a_half_failing_replica_out() {
    let tag = "resilience-eject";
    let bad = lab(tag, "bad", None, &["--fail-percent", "50"]).await;
    let good1 = lab(tag, "good1", Some(&bad), &[]).await;
    let good2 = lab(tag, "good2", Some(&bad), &[]).await;
    let mut shares = Vec::new();
    for ejection in [true, false] {
        let mut resilience = Resilience::default();
        if !ejection {
            resilience.ejection = None;
        }
        let cluster = caller(tag, &format!("caller-{ejection}"), &bad, 3, resilience).await;
        let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
        let before = stats(&bad).await;
        let answers = run(2000, 4, move |i| {
            let client = client.clone();
            async move { client.read(i).await }
        })
        .await;
        let ok = answers.iter().filter(|(_, a)| a.is_ok()).count();
        let bad_calls = stats(&bad).await.calls - before.calls;
        let policy = cluster.resilience_stats();
        println!(
            "ejection {}: {ok}/2000 calls succeeded, the failing replica got {bad_calls} attempts, {} retries, {} ejections",
            if ejection { "on" } else { "off" },
            policy.retries,
            policy.ejections
        );
        assert!(ok as f64 >= 0.995 * 2000.0, "only {ok} of 2000 idempotent calls succeeded");
        if ejection {
            assert!(policy.ejections >= 1, "the failing replica was never ejected");
            assert!(bad_calls <= 100, "the ejected replica still got {bad_calls} of 2000 calls");
            let metrics = http("GET", &good1.url("/metrics"), "", &[]).await;
            assert_eq!(metrics.status, 200);
        } else {
            assert_eq!(policy.ejections, 0);
            assert!(bad_calls >= 400, "without ejection the failing replica should get its share, got {bad_calls}");
        }
        shares.push(bad_calls);
        cluster.shutdown().await;
    }
    assert!(shares[0] * 4 < shares[1], "ejection made no difference: {shares:?}");
    drop((good1, good2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_stays_within_the_budget() {
    let tag = "resilience-storm";
    let a = lab(tag, "a", None, &["--fail-percent", "100"]).await;
    let b = lab(tag, "b", Some(&a), &["--fail-percent", "100"]).await;
    let c = lab(tag, "c", Some(&a), &["--fail-percent", "100"]).await;
    let cluster = caller(tag, "caller", &a, 3, Resilience::default()).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let calls = 500;
    let answers = run(calls, 4, move |i| {
        let client = client.clone();
        async move { client.read(i).await }
    })
    .await;
    assert!(answers.iter().all(|(_, a)| matches!(a, Err(Error::Internal { .. }))), "every call fails as `internal`");
    let attempts: u64 = [stats(&a).await, stats(&b).await, stats(&c).await].iter().map(|s| s.calls).sum();
    let policy = cluster.resilience_stats();
    // The default budget: 20 % of the calls over 10 s, plus 10 per second of the window.
    let bound = (1.2 * calls as f64) as u64 + 100;
    println!(
        "{calls} calls made {attempts} attempts (bound {bound}); {} retries, {} refused",
        policy.retries, policy.retries_refused
    );
    assert!(attempts <= bound, "{attempts} attempts for {calls} calls: over the budget's {bound}");
    assert!(policy.retries_refused > 0, "the budget never refused a retry");
    assert!(attempts > calls as u64, "failed idempotent calls were never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_method_never_runs_twice_when_a_replica_is_killed() {
    let tag = "resilience-kill";
    let dir = scratch("kill");
    let logs: Vec<_> = (0..3).map(|i| dir.join(format!("writes-{i}"))).collect();
    // Writes take 20 ms and reads 5 ms, so both are under way when a replica dies.
    let flags = |i: usize| {
        ["--write-ms", "20", "--write-log", logs[i].to_str().unwrap(), "--stall-percent", "100", "--stall-ms", "5"]
    };
    let mut a = lab(tag, "a", None, &flags(0)).await;
    let b = lab(tag, "b", Some(&a), &flags(1)).await;
    let c = lab(tag, "c", Some(&a), &flags(2)).await;
    let cluster = caller(tag, "caller", &b, 3, Resilience::default()).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let writes = {
        let client = client.clone();
        tokio::spawn(run(600, 16, move |i| {
            let client = client.clone();
            // A write that succeeded answers with its id, to be found in the logs.
            async move { client.write(i).await.map(|_| i.to_string()) }
        }))
    };
    let reads = {
        let client = client.clone();
        tokio::spawn(run(600, 4, move |i| {
            let client = client.clone();
            async move { client.read(i).await }
        }))
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.kill().await;
    let (writes, reads) = (writes.await.unwrap(), reads.await.unwrap());
    let mut executions: HashMap<u64, usize> = HashMap::new();
    for log in &logs {
        // Every replica, the killed one too, created its log at start.
        for line in std::fs::read_to_string(log).expect("a replica's write log").lines() {
            *executions.entry(line.parse().unwrap()).or_default() += 1;
        }
    }
    let twice: Vec<_> = executions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "writes executed more than once: {twice:?}");
    // Every write that succeeded ran exactly once: it is in a log.
    let succeeded: Vec<u64> = writes.iter().filter_map(|(_, a)| a.as_ref().ok()?.parse().ok()).collect();
    assert!(succeeded.len() >= 500, "only {} of 600 writes succeeded", succeeded.len());
    let missing: Vec<&u64> = succeeded.iter().filter(|id| executions.get(id) != Some(&1)).collect();
    assert!(missing.is_empty(), "writes answered as done but not executed once: {missing:?}");
    let failed = writes.iter().filter(|(_, a)| a.is_err()).count();
    println!(
        "600 writes: {failed} failed with the killed replica, none ran twice; 600 reads: {} failed",
        reads.iter().filter(|(_, a)| a.is_err()).count()
    );
    assert!(
        writes.iter().all(|(_, a)| a.is_ok() || matches!(a, Err(Error::Unavailable { .. }))),
        "a write failed otherwise than unavailable"
    );
    let failed_reads: Vec<_> = reads.iter().filter(|(_, a)| a.is_err()).collect();
    assert!(
        failed_reads.is_empty(),
        "idempotent reads failed (they should have been retried elsewhere): {failed_reads:?}"
    );
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_the_tail_of_a_stalling_replica() {
    let tag = "resilience-hedge";
    let stalling = lab(tag, "stalling", None, &["--stall-percent", "5", "--stall-ms", "1000"]).await;
    let b = lab(tag, "b", Some(&stalling), &[]).await;
    let c = lab(tag, "c", Some(&stalling), &[]).await;
    let mut p99s = Vec::new();
    for hedging in [false, true] {
        let mut resilience = Resilience::default();
        resilience.hedging = hedging;
        let cluster = caller(tag, &format!("caller-{hedging}"), &stalling, 3, resilience).await;
        let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
        // Enough answers for the method's p95.
        for i in 0..40 {
            let _ = client.fetch(i).await;
        }
        let before = stats(&stalling).await;
        let answers = run(600, 4, move |i| {
            let client = client.clone();
            async move { client.fetch(i).await }
        })
        .await;
        assert!(answers.iter().all(|(_, a)| a.is_ok()));
        let p99 = percentile(answers.iter().map(|(d, _)| *d).collect(), 0.99);
        let after = stats(&stalling).await;
        let policy = cluster.resilience_stats();
        // The tail hedging exists to cut: answers that waited out a stall (1 s).
        let stalled_answers = answers.iter().filter(|(d, _)| *d >= Duration::from_millis(900)).count();
        let stalls = after.stalled - before.stalled;
        println!(
            "hedging {}: p99 {p99:?}; {stalls} stalls, {stalled_answers} answers took ≥ 0.9 s, {} hedges, {} won, {} stalled handlers cancelled",
            if hedging { "on" } else { "off" },
            policy.hedges,
            policy.hedge_wins,
            after.cancelled - before.cancelled
        );
        assert!(stalls > 0, "the replica never stalled: nothing to measure");
        if hedging {
            assert_eq!(stalled_answers, 0, "with hedging, {stalled_answers} callers still waited out a stall");
            assert!(policy.hedges > 0 && policy.hedge_wins > 0, "no hedge was sent or none won: {policy:?}");
            // The loser is cancelled: the stalled handler is dropped before its second.
            let cancelled = eventually(Duration::from_secs(5), || async {
                let s = stats(&stalling).await;
                (s.cancelled > before.cancelled).then_some(())
            })
            .await;
            assert!(cancelled.is_some(), "no stalled attempt was cancelled");
        } else {
            assert_eq!(policy.hedges, 0);
            assert!(stalled_answers > 0, "without hedging no caller waited out the {stalls} stalls");
        }
        p99s.push(p99);
        cluster.shutdown().await;
    }
    println!("p99 without hedging {:?}, with hedging {:?}", p99s[0], p99s[1]);
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_left_at_the_attempt_timeout() {
    let tag = "resilience-hang";
    // Writes take 300 ms everywhere: longer than the attempt timeout below.
    let hung = lab(tag, "hung", None, &["--hang", "--write-ms", "300"]).await;
    let b = lab(tag, "b", Some(&hung), &["--write-ms", "300"]).await;
    let mut resilience = Resilience::default();
    resilience.attempt_timeout = Some(Duration::from_millis(100));
    let cluster = caller(tag, "caller", &hung, 2, resilience).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let answers = run(40, 2, move |i| {
        let client = client.clone();
        async move { client.read(i).await }
    })
    .await;
    assert!(answers.iter().all(|(_, a)| a.as_deref() == Ok("b")), "{answers:?}");
    let policy = cluster.resilience_stats();
    assert!(policy.retries > 0);
    assert!(
        policy.ejected.iter().any(|(node, service)| node.starts_with("hung-") && service == "faulty"),
        "the hung replica is ejected: {policy:?}"
    );
    // A method that is not idempotent is not cut at the attempt timeout: a 300 ms write
    // under a 100 ms attempt timeout completes.
    let written = FaultyClient::new(cluster.client(FaultyClient::SPEC)).write(1).await;
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(stats(&b).await.writes + stats(&hung).await.writes, 1, "the write ran once");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_timeout_holds_every_caller() {
    let tag = "resilience-timeout";
    let node = lab(tag, "a", None, &[]).await;
    let direct = FaultyClient::new(meshrpc::connect(node.addr.to_string().as_str()).await.unwrap());
    assert_eq!(direct.bounded(10).await, Ok(10));
    // `#[meshrpc(timeout = "300ms")]`: the client's default of 30 s does not apply.
    assert_eq!(direct.bounded(2000).await, Err(Error::Timeout));
    // A caller may shorten it, never extend it.
    assert_eq!(direct.with_timeout(Duration::from_secs(60)).bounded(2000).await, Err(Error::Timeout));
    assert_eq!(direct.with_timeout(Duration::from_millis(50)).bounded(200).await, Err(Error::Timeout));
    // The node holds callers that know nothing of it (HTTP, the CLI).
    let answer = http("POST", &node.url("/faulty/bounded"), r#"{"ms":2000}"#, &[]).await;
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert_eq!(answer.json()["errors"][0]["code"], "timeout");
    // And it is advertised: `call --list` says so.
    let out = tokio::process::Command::new(MESHRPC)
        .args(["call", "--list", "--tag", tag, "--nodes", &node.addr.to_string()])
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("faulty.bounded(ms) (idempotent, timeout 300ms)"), "{listing}");
    assert!(listing.contains("faulty.fetch(key) (idempotent, hedged)"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_fast_and_the_queue_stays_bounded() {
    let offered = 40; // callers at once, against 4 workers: 10 times the capacity
    let mut peaks = Vec::new();
    for limit in ["adaptive", "off"] {
        let node = lab("resilience-overload", "a", None, &["--workers", "4", "--concurrency-limit", limit]).await;
        let channel = meshrpc::connect(node.addr.to_string().as_str()).await.unwrap();
        let client = FaultyClient::new(channel);
        // Each caller calls again at once after an answer, and 5 ms after a refusal.
        let load = |time: Duration| {
            let client = client.clone();
            run_for(time, offered, move || {
                let client = client.clone();
                async move {
                    let answer = client.work(20).await.map(|ms| ms.to_string());
                    if answer.is_err() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    answer
                }
            })
        };
        load(Duration::from_millis(1500)).await; // the limit finds its level
        stats(&node).await; // resets the peak
        let answers = load(Duration::from_secs(2)).await;
        let peak = stats(&node).await.peak_work;
        let (ok, overloaded): (Vec<_>, Vec<_>) = answers.iter().partition(|(_, a)| a.is_ok());
        assert!(
            overloaded.iter().all(|(_, a)| matches!(a, Err(Error::Overloaded { .. }))),
            "only `overloaded` refusals"
        );
        let p99 = |v: &Vec<&(Duration, Result<String, Error>)>| {
            (!v.is_empty()).then(|| percentile(v.iter().map(|(d, _)| *d).collect(), 0.99))
        };
        let metrics = http("GET", &node.url("/metrics"), "", &[]).await.body;
        let limit_now =
            metrics.lines().find(|l| l.starts_with("meshrpc_concurrency_limit ")).unwrap_or_default().to_owned();
        println!(
            "limit {limit}: {} accepted (p99 {:?}), {} refused (p99 {:?}); at most {peak} calls in the handler; {limit_now}",
            ok.len(),
            p99(&ok),
            overloaded.len(),
            p99(&overloaded),
        );
        if limit == "adaptive" {
            assert!(!overloaded.is_empty(), "10 times the capacity and nothing refused");
            assert!(!ok.is_empty());
            assert!(peak <= offered as u64 / 2, "{peak} calls queued in the handler of {offered} offered");
            // `meshrpc status` shows it, from gossip.
            let seen = eventually(Duration::from_secs(15), || async {
                let out = tokio::process::Command::new(MESHRPC)
                    .args(["status", "--json", "--tag", "resilience-overload", "--nodes", &node.addr.to_string()])
                    .output()
                    .await
                    .ok()?;
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let policies = status["members"].as_array()?.iter().find(|m| m["name"] == "a")?["policies"].clone();
                let shown =
                    policies["overloaded"].as_u64()? > 0 && policies["concurrency_limit"].as_u64()? < offered as u64;
                shown.then_some(policies)
            })
            .await;
            assert!(seen.is_some(), "meshrpc status never showed the limit and the refusals");
        } else {
            assert!(overloaded.is_empty());
        }
        peaks.push(peak);
    }
    assert_eq!(peaks[1], offered as u64, "without a limit every call queues");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_limits_a_client_over_its_rate_and_no_other() {
    let tag = "resilience-gateway";
    let node = lab(tag, "a", None, &[]).await;
    let keys = scratch("gateway").join("keys");
    std::fs::write(
        &keys,
        "alice:alice-token-0123456789\nbob:bob-token-0123456789ab\ncarol:carol-token-0123456789\ndave:dave-token-0123456789a\n",
    )
    .unwrap();
    let seed = node.addr.to_string();
    let gateway = Node::start(
        MESHRPC,
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--listen-addr",
            "127.0.0.1:0",
            "-T",
            tag,
            "-N",
            &seed,
            "--require",
            "faulty",
            "--api-keys",
            keys.to_str().unwrap(),
            "--rate-limit",
            "1/m:5",
            "--route-limit",
            "/faulty/bounded=1/m:2",
        ],
    )
    .await;
    let call = |token: &'static str, path: &'static str, body: &'static str| {
        let url = gateway.url(path);
        async move {
            let auth = format!("Bearer {token}");
            http("POST", &url, body, &[("authorization", auth.as_str()), ("content-type", "application/json")]).await
        }
    };
    // Probes are never limited (nor authenticated).
    let ready = eventually(Duration::from_secs(15), || async {
        (http("GET", &gateway.url("/healthz"), "", &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never reached faulty");
    // Alice: 5 at once, then 429 with Retry-After and the JSON error.
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(call("alice-token-0123456789", "/faulty/read", r#"{"key":1}"#).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429], "{:?}", answers.last());
    let refused = answers.last().unwrap();
    assert_eq!(refused.json()["errors"][0]["code"], "rate_limited");
    assert!(refused.body.contains("client user:alice is over its rate"), "{}", refused.body);
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Bob is unaffected.
    for _ in 0..5 {
        assert_eq!(call("bob-token-0123456789ab", "/faulty/read", r#"{"key":1}"#).await.status, 200);
    }
    // A route limit holds everyone together: 2 calls of `bounded`, whoever makes them.
    assert_eq!(
        call("alice-token-0123456789", "/faulty/bounded", r#"{"ms":1}"#).await.status,
        429,
        "alice is over her own rate"
    );
    assert_eq!(call("carol-token-0123456789", "/faulty/bounded", r#"{"ms":1}"#).await.status, 200);
    assert_eq!(call("dave-token-0123456789a", "/faulty/bounded", r#"{"ms":1}"#).await.status, 200);
    let third = call("carol-token-0123456789", "/faulty/bounded", r#"{"ms":1}"#).await;
    assert_eq!(third.status, 429);
    assert!(third.body.contains("route /faulty/bounded is over its rate"), "{}", third.body);
    assert_eq!(http("GET", &gateway.url("/ping"), "", &[]).await.status, 204);
    let metrics = http("GET", &gateway.url("/metrics"), "", &[]).await.body;
    assert!(metrics.contains("meshrpc_gateway_rate_limited_total{scope=\"client\"} 4"), "{metrics}");
    assert!(metrics.contains("meshrpc_gateway_rate_limited_total{scope=\"route\"} 1"), "{metrics}");
    assert!(metrics.contains("meshrpc_gateway_retry_budget_left"), "{metrics}");
}

/// Proxied HTTP goes through the same picker as mesh calls, outlier ejection included: a
/// replica whose router answers 5xx is left out after a few, and the others take its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_ejects_a_replica_whose_http_router_fails() {
    let tag = "resilience-http-eject";
    let bad = lab(tag, "bad", None, &["--http-status", "500"]).await;
    let good1 = lab(tag, "good1", Some(&bad), &[]).await;
    let good2 = lab(tag, "good2", Some(&bad), &[]).await;
    let seed = bad.addr.to_string();
    let gateway = Node::start(
        MESHRPC,
        &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "-T", tag, "-N", &seed],
    )
    .await;
    let health = gateway.url("/healthz");
    let seen = eventually(Duration::from_secs(15), || async {
        (http("GET", &health, "", &[]).await.json()["members"] == 4).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the gateway never saw the three replicas");
    let url = gateway.url("/labhttp/echo");
    let mut statuses = HashMap::<u16, usize>::new();
    for _ in 0..300 {
        *statuses.entry(http("GET", &url, "", &[]).await.status).or_default() += 1;
    }
    let failed = statuses.get(&500).copied().unwrap_or(0);
    println!("300 proxied requests, one replica of three failing: {statuses:?}");
    // Round robin alone would send it ~100; ejection stops it after a handful.
    assert!(failed <= 20, "the failing replica still got {failed} of 300 requests");
    assert_eq!(failed + statuses.get(&200).copied().unwrap_or(0), 300, "{statuses:?}");
    drop((good1, good2));
}

/// docs/resilience.md: ejection never takes the last replica, nor more than half of a
/// service's replicas — however badly they all answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_takes_the_last_replica_nor_more_than_half() {
    let tag = "resilience-eject-bounds";
    let first = lab(tag, "f0", None, &["--fail-percent", "100"]).await;
    let mut others = Vec::new();
    for i in 1..4 {
        others.push(lab(tag, &format!("f{i}"), Some(&first), &["--fail-percent", "100"]).await);
    }
    // Four replicas, every call failing: at most two are ever out.
    let cluster = caller(tag, "caller-4", &first, 4, Resilience::default()).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let mut most_ejected = 0;
    for round in 0..20u64 {
        let _ = run(20, 4, {
            let client = client.clone();
            move |i| {
                let client = client.clone();
                async move { client.read(round * 100 + i).await }
            }
        })
        .await;
        most_ejected = most_ejected.max(cluster.resilience_stats().ejected.len());
    }
    let policy = cluster.resilience_stats();
    println!("4 failing replicas: {} ejections, at most {most_ejected} out at once", policy.ejections);
    assert!(policy.ejections >= 1, "failing replicas were never ejected");
    assert!(most_ejected <= 2, "{most_ejected} of 4 replicas were out at once");
    cluster.shutdown().await;
    drop(others);

    // One replica left, failing every call: it is never ejected (callers still reach it).
    let tag = "resilience-eject-last";
    let alone = lab(tag, "alone", None, &["--fail-percent", "100"]).await;
    let cluster = caller(tag, "caller-1", &alone, 1, Resilience::default()).await;
    let client = FaultyClient::new(cluster.client(FaultyClient::SPEC));
    let before = stats(&alone).await.calls;
    let answers = run(200, 4, move |i| {
        let client = client.clone();
        async move { client.read(i).await }
    })
    .await;
    assert!(answers.iter().all(|(_, a)| matches!(a, Err(Error::Internal { .. }))));
    assert_eq!(cluster.resilience_stats().ejections, 0, "the last replica was ejected");
    assert!(stats(&alone).await.calls - before >= 200, "calls stopped reaching the last replica");
}
