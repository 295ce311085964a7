//! Issue 15 (first part): the runtime image builds offline (`deploy/image.sh`: `FROM
//! scratch`, no registry) and runs a mesh in a real Docker engine: a gateway and two
//! greeter replicas on a network of their own answer the seed's curl through the
//! published port; the image runs as non-root, reports healthy, and drains on SIGTERM
//! (`docker stop` exits 0). Heavy tier, as root; it starts `dockerd` if none runs.

use std::{process::Command, time::Duration};

use meshrpc_tests::harness::{eventually, http};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("running docker");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

/// A Docker engine to talk to: the running one, or a `dockerd` started here.
fn engine() -> bool {
    if docker(&["info"]).0 {
        return true;
    }
    let _ = Command::new("dockerd").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
    for _ in 0..60 {
        if docker(&["info"]).0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Whether the Docker tests run: the heavy tier, as root, with a Docker engine (started
/// here if needed). Otherwise they say they skipped and why; under CI they fail instead.
fn docker_here() -> bool {
    if std::env::var("MESHRPC_HEAVY").is_err() {
        assert!(std::env::var("CI").is_err(), "CI runs the heavy tier: ./test.sh --heavy");
        eprintln!("skipped: Docker is in the heavy tier (./test.sh --heavy)");
        return false;
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let has_docker = Command::new("docker").arg("--version").output().is_ok_and(|o| o.status.success());
    if !root || !has_docker || !engine() {
        assert!(std::env::var("CI").is_err(), "CI must run the Docker tests (root: {root}, docker: {has_docker})");
        eprintln!("skipped: needs root and a Docker engine (apt-get install docker.io)");
        return false;
    }
    true
}

/// Removes what the test made, even when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match args.as_slice() {
                ["stack", "rm", stack] => remove_stack(stack),
                _ => {
                    let _ = docker(&args);
                }
            }
        }
    }
}

/// Removes a stack and waits until its network is gone (`docker stack rm` returns before).
fn remove_stack(stack: &str) {
    let _ = docker(&["stack", "rm", stack]);
    for _ in 0..60 {
        let (_, networks) =
            docker(&["network", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]);
        if networks.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_offline_and_runs_a_mesh() {
    if !docker_here() {
        return;
    }
    let id = std::process::id();
    let tag = format!("meshrpc-test:{id}");
    let net = format!("meshrpc-test-{id}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/image.sh");
    let built = Command::new(script).arg(&tag).env("MESHRPC_BIN", MESHRPC).output().unwrap();
    let said = String::from_utf8_lossy(&built.stdout).into_owned();
    assert!(built.status.success(), "{said}{}", String::from_utf8_lossy(&built.stderr));
    println!("{said}");
    let mut cleanup = Cleanup(vec![vec!["image".into(), "rm".into(), "-f".into(), tag.clone()]]);
    assert!(docker(&["network", "create", &net]).0);
    cleanup.0.push(vec!["network".into(), "rm".into(), net.clone()]);
    let (ok, user) = docker(&["image", "inspect", "-f", "{{.Config.User}}", &tag]);
    assert!(ok && user == "10001:10001", "runs as non-root: {user}");

    let run = |name: &str, alias: &str, args: &[&str], publish: bool| {
        let mut cmd = vec!["run", "-d", "--name", name, "--network", &net, "--network-alias", alias];
        cmd.extend(["-e", "MESHRPC_CLUSTER_NODES=gateway", "-e", "MESHRPC_CLUSTER_TAGNAME=docker-test"]);
        if publish {
            cmd.extend(["-p", "127.0.0.1::8282"]);
        }
        cmd.push(&tag);
        cmd.extend(args);
        let (ok, out) = docker(&cmd);
        assert!(ok, "docker run {name}: {out}");
    };
    let names: Vec<String> = ["gateway", "greeter-1", "greeter-2"].iter().map(|n| format!("{n}-{id}")).collect();
    for name in &names {
        cleanup.0.push(vec!["rm".into(), "-f".into(), name.clone()]);
    }
    run(&names[0], "gateway", &["gateway", "--listen", "0.0.0.0:8282", "--require", "greeter"], true);
    run(&names[1], "greeter", &["example", "greeter"], false);
    run(&names[2], "greeter", &["example", "greeter"], false);
    let (_, port) = docker(&["port", &names[0], "8282/tcp"]);
    let base = format!("http://{}", port.lines().next().unwrap_or_default());
    let started = std::time::Instant::now();
    let ready = eventually(Duration::from_secs(60), || async {
        (http("GET", &format!("{base}/healthz"), "", &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never reported the greeter ready: {}", docker(&["logs", &names[0]]).1);
    println!("from docker run to /healthz 200: {:.1} s", started.elapsed().as_secs_f64());
    // The seed's curl, through the published port.
    let greet = http("POST", &format!("{base}/greeter/greet"), r#"{"name":"Docker"}"#, &[]).await;
    assert_eq!((greet.status, greet.json()["data"].as_str()), (200, Some("Hello, Docker")), "{}", greet.body);
    // The health check runs the binary's own probe.
    let healthy = eventually(Duration::from_secs(30), || async {
        let (_, state) = docker(&["inspect", "-f", "{{.State.Health.Status}}", &names[1]]);
        (state == "healthy").then_some(())
    })
    .await;
    assert!(healthy.is_some(), "the replica never reported healthy");
    // SIGTERM drains and exits 0; the other replica answers.
    let (stopped, out) = docker(&["stop", "-t", "20", &names[1]]);
    assert!(stopped, "{out}");
    let (_, code) = docker(&["inspect", "-f", "{{.State.ExitCode}}", &names[1]]);
    assert_eq!(code, "0", "a drained node exits 0: {}", docker(&["logs", &names[1]]).1);
    for _ in 0..20 {
        let again = http("POST", &format!("{base}/greeter/greet"), r#"{"name":"Still"}"#, &[]).await;
        assert_eq!(again.status, 200, "{}", again.body);
    }
}

/// `docker stack deploy` of deploy/docker-compose.yml, as the seed's README walks it: the
/// curls, `docker service scale greeter=5` (all five serve), scaling down to 2 under load
/// (no failed request, none hanging). Publishes port 8282 on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_swarm_walkthrough() {
    if !docker_here() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/image.sh");
    let built = Command::new(script).arg("meshrpc:latest").env("MESHRPC_BIN", MESHRPC).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    println!("{}", String::from_utf8_lossy(&built.stdout).trim());
    let (_, state) = docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"]);
    let mut cleanup = Cleanup(Vec::new());
    if state != "active" {
        let (ok, out) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(ok, "{out}");
        cleanup.0.push(vec!["swarm".into(), "leave".into(), "--force".into()]);
    }
    let stack = "meshrpc-walk";
    remove_stack(stack); // left over from a run that was killed
    let compose = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/docker-compose.yml");
    let started = std::time::Instant::now();
    let (ok, out) = docker(&["stack", "deploy", "-c", compose, stack]);
    assert!(ok, "{out}");
    cleanup.0.push(vec!["stack".into(), "rm".into(), stack.into()]);
    let base = "http://127.0.0.1:8282";
    let first = eventually(Duration::from_secs(90), || async {
        (try_get(&format!("{base}/greeter/greet/Max")).await?.0 == 200).then_some(())
    })
    .await;
    assert!(first.is_some(), "no 200 within 90 s: {}", docker(&["service", "logs", &format!("{stack}_mesh-api")]).1);
    println!("docker stack deploy → first 200: {:.1} s", started.elapsed().as_secs_f64());
    // The seed's curls.
    let got = http("GET", &format!("{base}/greeter/greet/Max"), "", &[]).await;
    assert_eq!(got.body, "\"Hello, Max\"");
    let posted = http("POST", &format!("{base}/greeter/greet"), r#"{"name":"Max"}"#, &[]).await;
    assert_eq!((posted.status, posted.json()["data"].as_str()), (200, Some("Hello, Max")));

    // Scale to five: every replica serves calls (their summary log lines say how many).
    let service = format!("{stack}_greeter");
    assert!(docker(&["service", "scale", &format!("{service}=5")]).0);
    let five = eventually(Duration::from_secs(60), || async {
        let (status, body) = try_get(&format!("{base}/healthz")).await?;
        let health: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && health["members"] == 6).then_some(())
    })
    .await;
    assert!(five.is_some(), "the gateway never saw five replicas");
    let since = chrono_free_now();
    let load = Load::start(base, 8);
    let counts = eventually(Duration::from_secs(40), || async {
        let (_, logs) = docker(&["service", "logs", "--since", &since, &service]);
        let mut per_task = std::collections::BTreeMap::<String, u64>::new();
        for line in logs.lines().filter(|l| l.contains("meshrpc::summary") && l.contains("method=\"greet\"")) {
            let task = line.split_whitespace().next().unwrap_or_default().to_owned();
            let calls =
                line.split("calls=").nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
            *per_task.entry(task).or_default() += calls;
        }
        (per_task.values().filter(|n| **n > 0).count() >= 5).then_some(per_task)
    })
    .await;
    let counts = counts.expect("all five replicas served calls");
    println!("calls per replica after scaling to 5: {counts:?}");
    // Down to two under load: nothing fails.
    assert!(docker(&["service", "scale", &format!("{service}=2")]).0);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (ok_down, failed_down) = load.take();
    println!("scale 5 → 2 under load: {ok_down} answered, {failed_down} failed");
    assert_eq!(failed_down, 0, "requests failed while scaling down");
    let (ok_left, failed_left) = load.stop().await;
    assert_eq!(failed_left, 0, "{ok_left} answered after scaling down, {failed_left} failed");
    // (`docker kill` of a replica under load is not asserted here yet: see the closing note
    // of issue 15's first part — under Swarm it made the gateway's connections fail.)
}

/// A GET whose connection may fail (a task starting, a port not yet open): `None` then.
async fn try_get(url: &str) -> Option<(u16, String)> {
    let url = url.to_owned();
    let answer = tokio::spawn(async move { http("GET", &url, "", &[]).await }).await.ok()?;
    Some((answer.status, answer.body))
}

/// Now, for `docker service logs --since` (RFC 3339, UTC).
fn chrono_free_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Requests from `workers` tasks, each with a 10 s guard (none may hang): answered and
/// failed counts since the last take.
struct Load {
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, workers: usize) -> Load {
        use std::sync::{atomic::*, Arc};
        let (ok, failed, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let tasks = (0..workers)
            .map(|w| {
                let (ok, failed, stop, url) =
                    (ok.clone(), failed.clone(), stop.clone(), format!("{base}/greeter/greet/W{w}"));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = tokio::time::timeout(Duration::from_secs(10), try_get(&url)).await;
                        match answer {
                            Ok(Some((200, _))) => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(other) => {
                                eprintln!("failed: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(_) => panic!("a request hung for 10 s"),
                        };
                    }
                })
            })
            .collect();
        Load { ok, failed, stop, tasks }
    }

    fn take(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (self.ok.swap(0, Ordering::Relaxed), self.failed.swap(0, Ordering::Relaxed))
    }

    async fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("no load task hung");
        }
        self.take()
    }
}
