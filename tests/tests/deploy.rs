//! Issue 7, what can be tested without a container engine: the binaries configured the
//! way the Compose file and the Kubernetes manifests configure them (environment only),
//! the health probe the image uses, and the manifests naming commands that exist.

use std::{process::Stdio, time::Duration};

use meshrpc_tests::harness::{eventually, free_port, http, terminate, Node};
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

/// The variables no flag carries reach a node as well (README, "Configuration"; the
/// binary reads them, the library none): the address it advertises, its services'
/// version, a log line per call, no counting of calls.
#[tokio::test(flavor = "multi_thread")]
async fn variables_without_a_flag_configure_the_node_too() {
    let tag = "deploy-vars";
    let env = [
        ("MESHRPC_LISTEN_ADDR", "0.0.0.0:0"),
        ("MESHRPC_ADVERTISE_IP", "127.0.0.2"),
        ("MESHRPC_CLUSTER_TAGNAME", tag),
        ("MESHRPC_SERVICE_VERSION", "v-env"),
        ("MESHRPC_REQUEST_LOG", "on"),
        ("MESHRPC_METRICS", "off"),
        ("RUST_LOG", "info"),
    ];
    let node = Node::start_logged_env(MESHRPC, &["example", "greeter"], &env).await;
    // It listens on every address and says, as it gossips, the one it was given.
    assert_eq!(node.addr.ip().to_string(), "127.0.0.2");
    let status = Command::new(MESHRPC)
        .args(["status", "--json", "--tag", tag, "--nodes", &node.addr.to_string()])
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let greeter = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "greeter").expect("greeter");
    assert!(greeter["versions"].get("v-env").is_some(), "{greeter}");
    let member = status["members"].as_array().unwrap().iter().find(|m| m["name"] == "greeter").expect("a member");
    assert_eq!(member["addr"], node.addr.to_string());

    let answer = http("POST", &format!("http://{}/greeter/greet", node.addr), r#"{"name":"Env"}"#, &[]).await;
    assert_eq!((answer.status, answer.json()["data"].as_str()), (200, Some("Hello, Env")));
    // (`meshrpc status` asked the node too: its `meshrpc.*` calls are lines of their own.)
    let line = node.logged("method=\"greet\"", Duration::from_secs(5)).await.expect("a request line of the call");
    assert!(line.contains("meshrpc::request"), "{line}");
    let metrics = http("GET", &format!("http://{}/metrics", node.addr), "", &[]).await;
    assert!(!metrics.body.contains("service=\"greeter\""), "calls counted with MESHRPC_METRICS=off");
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
    assert!(texts.contains("[\"meshrpc\", \"probe\"]"), "the image's health check");
    for var in ["MESHRPC_TLS_DIR", "MESHRPC_POLICY", "MESHRPC_ADMIN_ADDR", "MESHRPC_API_KEYS", "MESHRPC_HTTPS_CERT"] {
        assert!(texts.contains(var), "the deploy files run without {var}: not secure by default");
    }
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
        let missing = format!("{} (kubernetes-validate; ./test.sh installs it)", validator.display());
        meshrpc_tests::tier::cannot_run(&missing, true);
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

/// The deploy files' secure default, without a container engine: credentials from
/// `deploy/secrets.sh`, mounted the way Compose mounts them (one directory of files per
/// container), and the nodes configured only by the environment the Compose file gives
/// them. The seed's curls answer through the HTTPS gateway with the API key, and only
/// with it; operators reach the cluster with the caller-only identity.
#[tokio::test(flavor = "multi_thread")]
async fn the_secure_default_deployment_answers_only_with_credentials() {
    let root = std::env::temp_dir().join(format!("meshrpc-secure-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let secrets = root.join("secrets");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/secrets.sh");
    let made = Command::new(script).arg(&secrets).env("MESHRPC", MESHRPC).output().await.unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // What each container sees in /run/secrets (deploy/docker-compose.yml's `secrets:`).
    let mount = |role: &str, extra: &[(&str, &str)]| {
        let dir = root.join(format!("run-{role}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = vec![("ca/ca.pem", "ca.pem"), ("ca/gossip.key", "gossip.key"), ("policy.toml", "policy.toml")];
        let (cert, key) = (format!("{role}/node.pem"), format!("{role}/node.key"));
        files.extend([(cert.as_str(), "node.pem"), (key.as_str(), "node.key")]);
        files.extend_from_slice(extra);
        for (from, to) in files {
            std::fs::copy(secrets.join(from), dir.join(to)).unwrap();
        }
        dir
    };
    let api_dir = mount(
        "mesh-api",
        &[("https/https.pem", "https.pem"), ("https/https.key", "https.key"), ("api-keys", "api-keys")],
    );
    let greeter_dir = mount("greeter", &[]);
    let (http_port, mesh_port, admin_port) = (free_port(), free_port(), free_port());
    let mesh = format!("127.0.0.1:{mesh_port}");
    let run = |dir: &std::path::Path| {
        vec![
            ("MESHRPC_CLUSTER_TAGNAME", "example".to_string()),
            ("MESHRPC_TLS_DIR", dir.display().to_string()),
            ("MESHRPC_POLICY", dir.join("policy.toml").display().to_string()),
        ]
    };
    let mut api_env = run(&api_dir);
    api_env.extend([
        ("MESHRPC_LISTEN_ADDR", mesh.clone()),
        ("APP_HTTP_PORT", http_port.to_string()),
        ("MESHRPC_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
        ("MESHRPC_API_KEYS", api_dir.join("api-keys").display().to_string()),
        ("MESHRPC_HTTPS_CERT", api_dir.join("https.pem").display().to_string()),
        ("MESHRPC_HTTPS_KEY", api_dir.join("https.key").display().to_string()),
    ]);
    let _api = start(&["example", "mesh-api", "--http-host", "127.0.0.1"], &api_env).await;
    let mut greeter_env = run(&greeter_dir);
    greeter_env.extend([("MESHRPC_LISTEN_ADDR", "127.0.0.1:0".into()), ("MESHRPC_CLUSTER_NODES", mesh.clone())]);
    let _greeter = start(&["example", "greeter"], &greeter_env).await;

    let token = std::fs::read_to_string(secrets.join("api-key")).unwrap();
    let front = meshrpc_tests::front::Front::https(
        &format!("https://127.0.0.1:{http_port}"),
        &secrets.join("ca/ca.pem"),
        token.trim(),
    );
    let first = eventually(Duration::from_secs(15), || async {
        front.get("/greeter/greet/Max").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(first.expect("the gateway answers").1, "\"Hello, Max\"");
    let checked = front.get("/greeter/check").await.unwrap();
    assert!(checked.0 == 200 && checked.1.starts_with("All ok!"), "{checked:?}");
    assert_eq!(front.anonymous("GET", "/greeter/greet/Max", "").await.unwrap().0, 401);
    // Plain HTTP on the gateway's port gets no answer (a TLS alert, then closed).
    let plain = meshrpc_tests::front::Front::plain(&format!("http://127.0.0.1:{http_port}"));
    assert_eq!(plain.get("/greeter/greet/Max").await, None);
    // The admin port answers probes in plaintext; the mesh port takes none.
    assert!(probe(&format!("http://127.0.0.1:{admin_port}/ready")).await);
    assert!(!probe(&format!("http://{mesh}/__heartbeat__")).await, "the mesh port answered plaintext");
    // Operators: the caller-only identity calls; nothing else does.
    let cli = secrets.join("cli").display().to_string();
    let call = |tls: Option<String>| {
        let mesh = mesh.clone();
        async move {
            let mut args = vec!["call", "greeter.greet", r#"{"name":"Ops"}"#, "--nodes", &mesh, "--wait", "3"];
            let dir;
            if let Some(d) = tls {
                dir = d;
                args.extend(["--tls-dir", &dir]);
            }
            Command::new(MESHRPC).args(&args).output().await.unwrap()
        }
    };
    let by_ops = call(Some(cli)).await;
    assert!(by_ops.status.success(), "{}", String::from_utf8_lossy(&by_ops.stderr));
    assert_eq!(String::from_utf8_lossy(&by_ops.stdout).trim(), "\"Hello, Ops\"");
    assert!(!call(None).await.status.success(), "a caller without credentials got an answer");
    assert!(!secrets.join("cli/gossip.key").exists(), "the operators' identity holds the gossip key");
}

/// A node serving plaintext where others can reach it says so once, at start (issue 29);
/// on loopback (the demo) it does not.
#[tokio::test]
async fn a_plaintext_node_on_the_network_warns_at_start() {
    let labnode = env!("CARGO_BIN_EXE_labnode");
    let exposed =
        meshrpc_tests::harness::Node::start_logged(labnode, &["--listen", "0.0.0.0:0", "--tag", "warn"]).await;
    let warned = exposed.logged("serving without TLS on a non-loopback address", Duration::from_secs(5)).await;
    assert!(warned.is_some(), "{:?}", exposed.output());
    let local = meshrpc_tests::harness::Node::start_logged(labnode, &["--tag", "warn2"]).await;
    assert!(local.logged("serving without TLS", Duration::from_secs(1)).await.is_none(), "{:?}", local.output());
}
