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

/// Removes what the test made, even when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = docker(&args);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_offline_and_runs_a_mesh() {
    if std::env::var("MESHRPC_HEAVY").is_err() {
        assert!(std::env::var("CI").is_err(), "CI runs the heavy tier: ./test.sh --heavy");
        eprintln!("skipped: Docker is in the heavy tier (./test.sh --heavy)");
        return;
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let has_docker = Command::new("docker").arg("--version").output().is_ok_and(|o| o.status.success());
    if !root || !has_docker || !engine() {
        assert!(std::env::var("CI").is_err(), "CI must run the Docker test (root: {root}, docker: {has_docker})");
        eprintln!("skipped: needs root and a Docker engine (apt-get install docker.io)");
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
