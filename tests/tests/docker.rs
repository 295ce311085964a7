//! Issue 15: meshrpc in a real Docker engine. The runtime image builds offline
//! (`deploy/image.sh`: `FROM scratch`, no registry) and runs a mesh: a gateway and two
//! greeter replicas on a network of their own answer the seed's curl through the
//! published port; the image runs as non-root, reports healthy, and drains on SIGTERM
//! (`docker stop` exits 0). Then the seed's walkthrough of deploy/docker-compose.yml,
//! once on Swarm (`docker stack deploy`) and once with `docker-compose`. Heavy tier, as
//! root; it starts `dockerd` if none runs.

use std::time::{Duration, Instant};

use meshrpc_tests::{
    docker::{build_image, calls_served, containers, docker, docker_here, now_utc, run, try_get, Cleanup, Front, Load},
    harness::{eventually, http},
};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const COMPOSE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/docker-compose.yml");
const SECRETS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/secrets.sh");

/// The deploy files' credentials, made once per run by `deploy/secrets.sh` as a user makes
/// them, and handed to Compose and Swarm through `MESHRPC_SECRETS`: where they are.
fn secrets() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("meshrpc-deploy-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = std::process::Command::new(SECRETS_SCRIPT).arg(&dir).env("MESHRPC", MESHRPC).output().unwrap();
        assert!(out.status.success(), "deploy/secrets.sh: {}", String::from_utf8_lossy(&out.stderr));
        std::env::set_var("MESHRPC_SECRETS", &dir);
        dir
    })
}
/// Requests the walkthroughs' load keeps in flight (the most a killed replica can fail).
const IN_FLIGHT: usize = 8;

/// The walkthroughs both publish port 8282: one at a time.
static PORT_8282: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_offline_and_runs_a_mesh() {
    if !docker_here(&[]) {
        return;
    }
    let id = std::process::id();
    let tag = format!("meshrpc-test:{id}");
    let net = format!("meshrpc-test-{id}");
    println!("{}", build_image(MESHRPC, &tag));
    let mut cleanup = Cleanup::default();
    cleanup.docker(&["image", "rm", "-f", &tag]);
    assert!(docker(&["network", "create", &net]).0);
    cleanup.docker(&["network", "rm", &net]);
    let (ok, user) = docker(&["image", "inspect", "-f", "{{.Config.User}}", &tag]);
    assert!(ok && user == "10001:10001", "runs as non-root: {user}");

    let start = |name: &str, alias: &str, args: &[&str], publish: bool| {
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
        cleanup.docker(&["rm", "-f", name]);
    }
    start(&names[0], "gateway", &["gateway", "--listen", "0.0.0.0:8282", "--require", "greeter"], true);
    start(&names[1], "greeter", &["example", "greeter"], false);
    start(&names[2], "greeter", &["example", "greeter"], false);
    let (_, port) = docker(&["port", &names[0], "8282/tcp"]);
    let base = format!("http://{}", port.lines().next().unwrap_or_default());
    let started = Instant::now();
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

/// Where the walkthrough runs: the same compose file on Swarm or with `docker-compose`.
#[derive(Clone, Copy, PartialEq)]
enum Orchestrator {
    Swarm,
    Compose,
}

impl Orchestrator {
    fn project(self) -> &'static str {
        match self {
            Orchestrator::Swarm => "meshrpc-walk",
            Orchestrator::Compose => "meshrpc-compose",
        }
    }

    fn compose(self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["-p", self.project(), "-f", COMPOSE_FILE];
        all.extend_from_slice(args);
        run("docker-compose", &all)
    }

    /// Deploys the stack; removes it (and a swarm it started) when `cleanup` runs.
    fn deploy(self, cleanup: &mut Cleanup) {
        let project = self.project();
        match self {
            Orchestrator::Swarm => {
                let (_, state) = docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"]);
                if state != "active" {
                    let (ok, out) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                    assert!(ok, "{out}");
                    cleanup.docker(&["swarm", "leave", "--force"]);
                }
                remove_stack(project); // left over from a run that was killed
                let (ok, out) = docker(&["stack", "deploy", "-c", COMPOSE_FILE, project]);
                assert!(ok, "{out}");
                cleanup.then(move || remove_stack(project));
            }
            Orchestrator::Compose => {
                let _ = self.compose(&["down", "--timeout", "5"]);
                let (ok, out) = self.compose(&["up", "-d", "--no-build"]);
                assert!(ok, "{out}");
                cleanup.then(move || {
                    let _ = Orchestrator::Compose.compose(&["down", "--timeout", "5"]);
                });
            }
        }
    }

    fn scale_greeters(self, n: usize) {
        let (ok, out) = match self {
            Orchestrator::Swarm => {
                docker(&["service", "scale", "--detach", &format!("{}_greeter={n}", self.project())])
            }
            Orchestrator::Compose => self.compose(&["up", "-d", "--no-build", "--scale", &format!("greeter={n}")]),
        };
        assert!(ok, "{out}");
    }

    /// The running greeter containers.
    fn greeters(self) -> Vec<String> {
        match self {
            Orchestrator::Swarm => containers(&[&format!("com.docker.swarm.service.name={}_greeter", self.project())]),
            Orchestrator::Compose => containers(&[
                &format!("com.docker.compose.project={}", self.project()),
                "com.docker.compose.service=greeter",
            ]),
        }
    }

    fn gateway_logs(self) -> String {
        match self {
            Orchestrator::Swarm => docker(&["service", "logs", &format!("{}_mesh-api", self.project())]).1,
            Orchestrator::Compose => self.compose(&["logs", "--no-color", "mesh-api"]).1,
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

/// The seed's README on Swarm: `docker stack deploy`, the curls, `docker service scale
/// greeter=5` (all five serve), then under load: down to 2 (no failed request), and a
/// replica `docker kill`ed (failed requests ≤ those in flight, none hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_swarm_walkthrough() {
    walkthrough(Orchestrator::Swarm).await
}

/// The same with `docker-compose up` and `--scale greeter=5`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_compose_walkthrough() {
    walkthrough(Orchestrator::Compose).await
}

async fn walkthrough(on: Orchestrator) {
    if !docker_here(if on == Orchestrator::Compose { &["docker-compose"] } else { &[] }) {
        return;
    }
    let _port = PORT_8282.lock().await;
    println!("{}", build_image(MESHRPC, "meshrpc:latest"));
    let mut cleanup = Cleanup::default();
    // Secure by default: the stack runs with the credentials `deploy/secrets.sh` made;
    // its front door is HTTPS (a certificate of the cluster CA) behind an API key.
    let secrets = secrets();
    let token = std::fs::read_to_string(secrets.join("api-key")).unwrap();
    let front = Front::https("https://127.0.0.1:8282", &secrets.join("ca/ca.pem"), token.trim());
    let started = Instant::now();
    on.deploy(&mut cleanup);
    let first = eventually(Duration::from_secs(90), || async {
        (try_get(&front, "/greeter/greet/Max").await?.0 == 200).then_some(())
    })
    .await;
    assert!(first.is_some(), "no 200 within 90 s: {}", on.gateway_logs());
    println!("deploy → first 200: {:.1} s", started.elapsed().as_secs_f64());
    // The seed's curls, with the token; without it, 401.
    let got = front.get("/greeter/greet/Max").await.expect("an answer");
    assert_eq!(got, (200, "\"Hello, Max\"".to_owned()));
    let posted = front.request("POST", "/greeter/greet", r#"{"name":"Max"}"#).await.expect("an answer");
    let data = serde_json::from_str::<serde_json::Value>(&posted.1).unwrap()["data"].clone();
    assert_eq!((posted.0, data), (200, serde_json::json!("Hello, Max")));
    let anonymous = front.anonymous("GET", "/greeter/greet/Max", "").await.expect("an answer");
    assert_eq!(anonymous.0, 401, "{anonymous:?}");

    // Scale to five: every replica serves calls (their summary log lines say how many).
    on.scale_greeters(5);
    let five = eventually(Duration::from_secs(60), || async {
        let (status, body) = try_get(&front, "/healthz").await?;
        let health: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && health["members"] == 6 && on.greeters().len() == 5).then_some(())
    })
    .await;
    assert!(five.is_some(), "the gateway never saw five replicas");
    let since = now_utc();
    let load = Load::start(&front, "/greeter/greet/W", IN_FLIGHT);
    let counts = eventually(Duration::from_secs(40), || async {
        let counts = calls_served(&on.greeters(), "greet", &since);
        (counts.values().filter(|n| **n > 0).count() >= 5).then_some(counts)
    })
    .await;
    let counts = counts.expect("all five replicas served calls");
    println!("calls per replica after scaling to 5: {counts:?}");

    // Down to two under load: nothing fails.
    load.take();
    on.scale_greeters(2);
    let two = eventually(Duration::from_secs(60), || async { (on.greeters().len() == 2).then_some(()) }).await;
    assert!(two.is_some(), "five replicas never became two");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok_down, failed_down) = load.take();
    println!("scale 5 → 2 under load: {ok_down} answered, {failed_down} failed");
    assert_eq!(failed_down, 0, "requests failed while scaling down");
    assert!(ok_down > 0);

    // docker kill one of the two under load: at most the requests in flight on it fail,
    // and none waits longer than the documented bound for a vanished peer (keepalive
    // notices in 2 s; a connect to it gives up after 1 s), however many queue behind it.
    let victim = on.greeters()[0].clone();
    load.slowest_ms();
    let (killed, out) = docker(&["kill", &victim]);
    assert!(killed, "{out}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let slowest = load.slowest_ms();
    let (ok_kill, failed_kill) = load.stop().await;
    println!(
        "docker kill of a replica under load: {ok_kill} answered, {failed_kill} failed (≤ {IN_FLIGHT} in flight), slowest {slowest} ms"
    );
    assert!(failed_kill <= IN_FLIGHT as u64, "{failed_kill} requests failed with {IN_FLIGHT} in flight");
    assert!(ok_kill > 0);
}
