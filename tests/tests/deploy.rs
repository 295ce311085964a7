//! Issue 7, what can be tested without a container engine: the binaries configured the
//! way the Compose file and the Kubernetes manifests configure them (environment only),
//! the health probe the image uses, and the manifests naming commands that exist.

use std::{process::Stdio, time::Duration};

use meshrpc_tests::harness::{eventually, free_port, http, terminate};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// Starts `meshrpc args…` with only environment variables for configuration.
async fn start(args: &[&str], env: &[(&str, String)]) -> Child {
    let mut child = Command::new(MESHRPC)
        .args(args)
        .env_remove("MESHRPC_CLUSTER_NODES")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("listening on") {
                return;
            }
        }
    })
    .await
    .expect("never listened");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

async fn probe(url: &str) -> bool {
    Command::new(MESHRPC).args(["probe", url]).status().await.unwrap().success()
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_configured_by_environment_form_the_stack() {
    let (http_port, mesh_port) = (free_port(), free_port());
    let mesh = format!("127.0.0.1:{mesh_port}");
    let tag = ("MESHRPC_CLUSTER_TAGNAME", "deploy-env".to_string());
    let _api = start(
        &["example", "mesh-api", "--http-host", "127.0.0.1"],
        &[("MESHRPC_LISTEN_ADDR", mesh.clone()), ("APP_HTTP_PORT", http_port.to_string()), tag.clone()],
    )
    .await;
    let healthz = format!("http://127.0.0.1:{http_port}/healthz");
    // Not ready while its dependency is missing: the readiness probe fails.
    assert!(!probe(&healthz).await, "ready without a greeter");
    let mut greeters = Vec::new();
    for _ in 0..2 {
        greeters.push(
            start(
                &["example", "greeter"],
                &[
                    ("MESHRPC_LISTEN_ADDR", "127.0.0.1:0".into()),
                    ("MESHRPC_CLUSTER_NODES", format!("localhost:{mesh_port}")),
                    tag.clone(),
                ],
            )
            .await,
        );
    }
    let ready = eventually(Duration::from_secs(10), || async { probe(&healthz).await.then_some(()) }).await;
    assert!(ready.is_some(), "readiness probe never passed");
    assert!(probe(&format!("http://{mesh}/__heartbeat__")).await, "liveness probe on the mesh port");
    assert!(!probe(&format!("http://127.0.0.1:{http_port}/no/such/thing")).await);
    assert!(!probe("http://127.0.0.1:9/__heartbeat__").await);
    let answer = http("GET", &format!("http://127.0.0.1:{http_port}/greeter/greet/Env"), "", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "\"Hello, Env\""));

    // SIGTERM, as `docker stop` and Kubernetes send it: the node drains and exits 0.
    let status = terminate(&mut greeters[0], Duration::from_secs(10)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    let answer = http("GET", &format!("http://127.0.0.1:{http_port}/greeter/greet/Still"), "", &[]).await;
    assert_eq!(answer.status, 200, "the other replica answers");
}

#[tokio::test]
async fn manifests_use_commands_the_binary_has() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/");
    let mut texts = String::new();
    for f in ["Dockerfile", "docker-compose.yml", "k8s/meshrpc.yaml"] {
        texts += &std::fs::read_to_string(format!("{root}{f}")).unwrap();
    }
    for command in [["example", "greeter"], ["example", "mesh-api"]] {
        assert!(texts.contains(&format!("\"{}\", \"{}\"", command[0], command[1])), "{command:?}");
        let help = Command::new(MESHRPC).args(command).arg("--help").output().await.unwrap();
        assert!(help.status.success(), "{command:?} --help");
        let text = String::from_utf8_lossy(&help.stdout);
        for var in ["MESHRPC_CLUSTER_NODES", "MESHRPC_CLUSTER_TAGNAME", "MESHRPC_LISTEN_ADDR"] {
            assert!(text.contains(var), "{command:?} does not read {var}");
        }
    }
    assert!(texts.contains("\"probe\", \"http://127.0.0.1:11999/__heartbeat__\""));
    for var in ["MESHRPC_ADVERTISE_IP", "APP_HTTP_PORT"] {
        assert!(texts.contains(var), "{var}");
    }
}

/// The Kubernetes manifests validate against Kubernetes' own schemas, offline, with PyPI's
/// `kubernetes-validate` (test.sh installs it next to `MESHRPC_PYTHON`); a manifest with a
/// mistake does not (so the check is real). The PodMonitor is a CRD: no schema offline.
#[tokio::test]
async fn kubernetes_manifests_validate_offline() {
    let python = std::env::var("MESHRPC_PYTHON").unwrap_or_else(|_| "python3".into());
    let validator = std::path::Path::new(&python).with_file_name("kubernetes-validate");
    if !validator.exists() {
        assert!(
            std::env::var("MESHRPC_REQUIRE_TOOLS").is_err(),
            "{} is missing (./test.sh installs it)",
            validator.display()
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed (./test.sh installs it)");
        return;
    }
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/k8s/meshrpc.yaml");
    let out = Command::new(&validator).args(["--strict", manifests]).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    for resource in ["service/meshrpc-seeds", "service/mesh-api", "deployment/greeter", "deployment/mesh-api"] {
        assert!(said.contains(&format!("passed for resource {resource}")), "{resource}: {said}");
    }
    let broken = std::env::temp_dir().join(format!("meshrpc-broken-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(manifests).unwrap().replace("containerPort: 11999", "containerPort: eleven");
    std::fs::write(&broken, text).unwrap();
    let out = Command::new(&validator).args(["--strict"]).arg(&broken).output().await.unwrap();
    assert!(!out.status.success(), "a port that is not a number must not validate");
}
