//! Issue 11: the zero-trust mesh, driven as users drive it — credentials made with the
//! `meshrpc` command, real node processes with mutual TLS on loopback, strangers and
//! rogues knocking.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use meshrpc::{
    call::Call,
    transport::{ConnectOptions, Connection},
    Error, TlsConfig,
};
use meshrpc_tests::{
    harness::{http, Caller, Node},
    tls::{client_config, client_config_alpn, https, Pki},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const LABCALL: &str = env!("CARGO_BIN_EXE_labcall");

async fn meshrpc(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), tokio::process::Command::new(MESHRPC).args(args).output())
        .await
        .expect("meshrpc hung")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// A labnode with TLS credentials `dir` (and more flags), its log captured.
async fn tls_node(tag: &str, name: &str, dir: &Path, extra: &[&str]) -> Node {
    let mut args =
        vec!["--tag", tag, "--name", name, "--tls-dir", dir.to_str().unwrap(), "--admin-addr", "127.0.0.1:0"];
    args.extend(extra);
    Node::start_logged(LABNODE, &args).await
}

async fn admin(node: &Node) -> SocketAddr {
    node.line("admin on ", Duration::from_secs(5)).await.expect("admin address").parse().unwrap()
}

/// A counter from the node's admin `/metrics`.
async fn counter(admin: SocketAddr, name: &str) -> u64 {
    let text = http("GET", &format!("http://{admin}/metrics"), "", &[]).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_total ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

async fn mesh_call(conn: &Connection, service: &'static str, method: &'static str) -> Result<String, Error> {
    let pending = conn.send_call(Call::new(service, method, bytes::Bytes::from_static(b"{}")))?;
    match pending.answer().await? {
        meshrpc::call::Reply::Ok(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
        meshrpc::call::Reply::AppError(e) => Ok(format!("app error {}", String::from_utf8_lossy(&e))),
        meshrpc::call::Reply::Stream(_) => Ok("a stream".into()),
    }
}

async fn connect_with(addr: SocketAddr, dir: &Path) -> Result<Connection, Error> {
    let tls = TlsConfig::from_dir(dir)?;
    Connection::connect(addr, ConnectOptions::default().tls(tls)).await
}

#[tokio::test]
async fn certificates_say_who_what_and_until_when() {
    let pki = Pki::new(MESHRPC, "show", "shop");
    let dir = pki.issue("g1", "greeter-1", &["greeter", "billing"], &[]);
    let (code, out, err) = meshrpc(&["cert", "show", dir.join("node.pem").to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node      greeter-1"), "{out}");
    assert!(out.contains("cluster   shop"), "{out}");
    assert!(out.contains("services  greeter, billing"), "{out}");
    assert!(out.contains("expiry    in 364d") || out.contains("expiry    in 365d"), "{out}");
    let expired = pki.issue("old", "old", &["greeter"], &["--valid-from", "2020-01-01T00:00:00Z", "--days", "1"]);
    let (_, out, _) = meshrpc(&["cert", "show", "--json", expired.join("node.pem").to_str().unwrap()]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["expired"], true, "{v}");
    assert_eq!(v["not_after"], "2020-01-02T00:00:00Z", "{v}");
    // The files a node reads, the secrets private.
    for f in ["ca.pem", "node.pem", "node.key", "gossip.key"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("node.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "node.key is readable by others: {mode:o}");
    }
    // A second CA in the same place is refused, not overwritten.
    let (code, _, err) = meshrpc(&["ca", "init", "--dir", pki.ca().to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not overwriting"), "{err}");
}

#[tokio::test]
async fn mutual_tls_admits_the_cluster_and_refuses_strangers() {
    let pki = Pki::new(MESHRPC, "mtls", "sec1");
    let node_dir = pki.issue("lab1", "lab1", &["lab", "greeter", "labhttp"], &[]);
    let cli = pki.issue("cli", "cli", &[], &[]);
    let expired = pki.issue("expired", "cli", &[], &["--valid-from", "2020-01-01T00:00:00Z", "--days", "1"]);
    let future = pki.issue("future", "cli", &[], &["--valid-from", "2099-01-01T00:00:00Z"]);
    let foreign = Pki::new(MESHRPC, "mtls-foreign", "sec1").issue("x", "cli", &[], &[]);
    let node = tls_node("sec1", "lab1", &node_dir, &["--header-timeout-ms", "1000"]).await;
    let admin = admin(&node).await;

    // A member of the cluster calls, over the mesh and over HTTPS.
    let conn = connect_with(node.addr, &cli).await.expect("a cluster certificate is admitted");
    assert_eq!(mesh_call(&conn, "lab", "whoami").await.unwrap(), "\"lab1\"");
    assert_eq!(conn.peer_identity().unwrap().node, "lab1");
    let config = client_config(&cli.join("ca.pem"), Some(&cli));
    let answer = https(config, node.addr, "meshrpc", "POST", "/greeter/greet", r#"{"name":"tls"}"#, &[]).await.unwrap();
    assert_eq!((answer.status, answer.json()["data"].as_str()), (200, Some("Hello, tls")), "{answer:?}");
    let (code, out, err) = meshrpc(&[
        "call",
        "greeter.greet",
        r#"{"name":"Max"}"#,
        "-N",
        &node.addr.to_string(),
        "-T",
        "sec1",
        "--tls-dir",
        cli.to_str().unwrap(),
    ])
    .await;
    assert_eq!((code, out.trim()), (0, "\"Hello, Max\""), "{err}");

    // Strangers: each refused with a TLS error naming why, counted, logged.
    let refused_before = counter(admin, "meshrpc_tls_handshakes_refused").await;
    let plain = meshrpc::connect(node.addr).await.unwrap_err();
    assert!(matches!(&plain, Error::Tls { message, .. } if message.contains("plaintext")), "{plain:?}");
    let plain_http = http("POST", &node.url("/greeter/greet"), r#"{"name":"x"}"#, &[]).await;
    assert_eq!(
        (plain_http.status, plain_http.json()["errors"][0]["code"].as_str()),
        (400, Some("tls")),
        "{plain_http:?}"
    );
    for (what, dir) in [("foreign CA", &foreign), ("expired", &expired), ("not yet valid", &future)] {
        let conn = connect_with(node.addr, dir).await;
        let e = match conn {
            // TLS 1.3: the client may finish first; the refusal then arrives on first use.
            Ok(conn) => mesh_call(&conn, "lab", "whoami").await.unwrap_err(),
            Err(e) => e,
        };
        assert!(matches!(e, Error::Tls { .. }), "{what}: {e:?}");
    }
    let no_cert = client_config(&cli.join("ca.pem"), None);
    let anonymous = https(no_cert, node.addr, "meshrpc", "POST", "/greeter/greet", "{}", &[]).await;
    assert!(anonymous.is_err() || anonymous.as_ref().unwrap().status >= 400, "{anonymous:?}");

    // A ClientHello's first bytes, then silence: closed at the handshake timeout.
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    silent.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent ClientHello was not closed: {closed:?}");
    // Garbage instead of a ClientHello: closed at once.
    let mut garbage = TcpStream::connect(node.addr).await.unwrap();
    garbage.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "garbage was not closed: {closed:?}");

    let refused = counter(admin, "meshrpc_tls_handshakes_refused").await - refused_before;
    assert!(refused >= 7, "refusals counted: {refused}");
    assert!(node.logged("TLS handshake refused", Duration::from_secs(5)).await.is_some());
    // ...and the node kept serving the cluster throughout, on the connection it had:
    // large answers (many TLS records each) and many calls at once.
    let calls: Vec<_> = (0..32u64)
        .map(|i| {
            let payload = bytes::Bytes::from(format!(r#"{{"len":{}}}"#, 100_000 + i * 50_000));
            conn.send_call(Call::new("lab", "blob", payload)).unwrap()
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let meshrpc::call::Reply::Ok(blob) = call.answer().await.unwrap() else { panic!("an application error") };
        assert_eq!(blob.len(), 100_000 + i * 50_000 + 2, "answer {i}"); // a JSON string: quoted
    }
    assert_eq!(mesh_call(&conn, "lab", "whoami").await.unwrap(), "\"lab1\"");
}

#[tokio::test]
async fn a_replica_must_prove_its_service() {
    let pki = Pki::new(MESHRPC, "rogue", "sec2");
    let good = pki.issue("good", "good", &["lab", "greeter", "labhttp"], &[]);
    // Valid credentials and gossip key, but a certificate for `greeter` only: it gossips
    // `lab` too (labnode publishes it), and must never be called for it.
    let rogue = pki.issue("rogue", "rogue", &["greeter"], &[]);
    let cli = pki.issue("cli", "cli", &[], &[]);
    let good_node = tls_node("sec2", "good", &good, &[]).await;
    let seed = good_node.addr.to_string();
    let rogue_node = tls_node("sec2", "rogue", &rogue, &["--nodes", &seed]).await;
    // No credentials at all: its gossip is not sealed, so nobody even hears of it.
    let stranger = Node::start(LABNODE, &["--tag", "sec2", "--name", "stranger", "--nodes", &seed]).await;
    let mut caller = Caller::start(
        LABCALL,
        &[
            "--nodes",
            &seed,
            "--tag",
            "sec2",
            "--tls-dir",
            cli.to_str().unwrap(),
            "--calls",
            "1000",
            "--concurrency",
            "8",
            "--replicas",
            "2",
        ],
    );
    caller.calling().await;
    let report = caller.report().await;
    assert_eq!(report["ok"], 1000, "{report}");
    assert_eq!(report["per_node"]["good"], 1000, "{report}");
    assert!(report["per_node"].get("rogue").is_none() && report["per_node"].get("stranger").is_none(), "{report}");
    let unproven: Vec<&str> = report["unproven"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(unproven.iter().any(|u| u.starts_with("rogue") && u.ends_with("/lab")), "{report}");
    // The stranger's datagrams were dropped and counted by the members it gossiped to.
    let (good_admin, rogue_admin) = (admin(&good_node).await, admin(&rogue_node).await);
    let counted = meshrpc_tests::harness::eventually(Duration::from_secs(5), || async {
        let forged =
            counter(good_admin, "meshrpc_gossip_forged").await + counter(rogue_admin, "meshrpc_gossip_forged").await;
        (forged > 0).then_some(forged)
    })
    .await;
    drop(stranger);
    assert!(counted.is_some(), "no forged gossip counted");
}

const POLICY: &str = r#"
[[allow]]
from = "cli"
to = "greeter.*"

[[allow]]
from = "service:billing"
to = ["lab.whoami"]

[[allow]]
from = "cli"
to = ["meshrpc.stats", "labhttp.*"]
"#;

#[tokio::test]
async fn the_policy_allows_what_it_names_denies_the_rest_and_reloads() {
    let pki = Pki::new(MESHRPC, "policy", "sec3");
    let node_dir = pki.issue("lab1", "lab1", &["lab", "greeter", "labhttp"], &[]);
    let cli = pki.issue("cli", "cli", &[], &[]);
    let billing = pki.issue("billing", "b1", &["billing"], &[]);
    let policy = pki.root.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();

    // A malformed policy keeps the node from starting, naming the line.
    let bad = pki.root.join("bad.toml");
    std::fs::write(&bad, "[[allow]]\nfrom = \"cli\"\nto = \"greeter\"\n").unwrap();
    let out = tokio::process::Command::new(LABNODE)
        .args(["--tag", "sec3", "--tls-dir", node_dir.to_str().unwrap(), "--policy", bad.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a malformed policy");
    assert!(err.contains("bad.toml:3:"), "{err}");

    let node = tls_node("sec3", "lab1", &node_dir, &["--policy", policy.to_str().unwrap()]).await;
    let admin = admin(&node).await;
    let conn = connect_with(node.addr, &cli).await.unwrap();
    assert_eq!(mesh_call(&conn, "greeter", "greet").await.unwrap_err().code(), "bad_request"); // allowed: reached the handler
    let denied = mesh_call(&conn, "lab", "whoami").await.unwrap_err();
    assert!(matches!(&denied, Error::PermissionDenied { message } if message.contains("node:cli")), "{denied:?}");
    let billing_conn = connect_with(node.addr, &billing).await.unwrap();
    assert_eq!(mesh_call(&billing_conn, "lab", "whoami").await.unwrap(), "\"lab1\"");
    assert_eq!(mesh_call(&billing_conn, "greeter", "greet").await.unwrap_err().code(), "permission_denied");
    // Over HTTPS: 403 with the usual JSON body.
    let config = client_config(&cli.join("ca.pem"), Some(&cli));
    let answer = https(config.clone(), node.addr, "meshrpc", "POST", "/lab/whoami", "{}", &[]).await.unwrap();
    assert_eq!((answer.status, answer.json()["errors"][0]["code"].as_str()), (403, Some("permission_denied")));
    // What the mesh port shows and publishes over HTTP follows the policy too: `/metrics`
    // as `meshrpc.stats`, `/openapi.json` as `meshrpc.schema`, a router as `name.http`.
    let billing_https = client_config(&billing.join("ca.pem"), Some(&billing));
    for path in ["/metrics", "/openapi.json", "/labhttp/echo"] {
        let answer = https(billing_https.clone(), node.addr, "meshrpc", "GET", path, "", &[]).await.unwrap();
        assert_eq!((answer.status, answer.json()["errors"][0]["code"].as_str()), (403, Some("permission_denied")));
    }
    for (path, status) in [("/metrics", 200), ("/openapi.json", 403), ("/labhttp/echo", 200)] {
        let answer = https(config.clone(), node.addr, "meshrpc", "GET", path, "", &[]).await.unwrap();
        assert_eq!(answer.status, status, "cli: {path}: {answer:?}");
    }
    // The admin port stays the scrapers' place.
    assert_eq!(http("GET", &format!("http://{admin}/metrics"), "", &[]).await.status, 200);
    assert!(counter(admin, "meshrpc_calls_denied").await >= 3);
    assert!(node.logged("call denied by policy", Duration::from_secs(5)).await.is_some());

    // The file changes: the new policy is in force on the same connection.
    std::fs::write(&policy, format!("{POLICY}\n[[allow]]\nfrom = \"cli\"\nto = \"lab.*\"\n")).unwrap();
    let start = Instant::now();
    while mesh_call(&conn, "lab", "whoami").await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the changed policy was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken edit: logged, and the policy in force stays.
    std::fs::write(&policy, "[[allow]]\nfrom = 7\n").unwrap();
    assert!(node.logged("policy reload failed", Duration::from_secs(10)).await.is_some());
    assert_eq!(mesh_call(&conn, "lab", "whoami").await.unwrap(), "\"lab1\"");
}

#[tokio::test]
async fn gossip_is_sealed_against_forgery_and_replay() {
    let pki = Pki::new(MESHRPC, "gossip", "sec4");
    let dir = pki.issue("lab1", "lab1", &["lab"], &[]);
    // The node gossips to a "seed" that is this test: it catches one sealed datagram.
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seed = catcher.local_addr().unwrap().to_string();
    let node = tls_node("sec4", "lab1", &dir, &["--nodes", &seed]).await;
    let admin = admin(&node).await;
    let mut sealed = vec![0u8; 65_536];
    let (len, _) =
        tokio::time::timeout(Duration::from_secs(10), catcher.recv_from(&mut sealed)).await.unwrap().unwrap();
    sealed.truncate(len);
    assert!(!String::from_utf8_lossy(&sealed).contains("meshrpc/sec4"), "gossip went out in clear text");

    let forged_before = counter(admin, "meshrpc_gossip_forged").await;
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..20u8 {
        attacker.send_to(&[i; 200], node.addr).await.unwrap();
    }
    let mut flipped = sealed.clone();
    flipped[len / 2] ^= 0x40;
    attacker.send_to(&flipped, node.addr).await.unwrap();
    // Replayed: the first copy is news to the node, the second a replay.
    attacker.send_to(&sealed, node.addr).await.unwrap();
    attacker.send_to(&sealed, node.addr).await.unwrap();
    let start = Instant::now();
    loop {
        let forged = counter(admin, "meshrpc_gossip_forged").await - forged_before;
        let replayed = counter(admin, "meshrpc_gossip_replayed").await;
        if forged >= 21 && replayed >= 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "forged {forged}, replayed {replayed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node still answers its admin port, and is (or becomes: the whole test may take
    // less time than the node needs to start serving) ready.
    let ready = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        (http("GET", &format!("http://{admin}/ready"), "", &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the node never became ready after the forged gossip");
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_call() {
    let pki = Pki::new(MESHRPC, "rotate", "sec5");
    let dirs: Vec<_> = ["lab1", "lab2"].iter().map(|n| pki.issue(n, n, &["lab"], &[])).collect();
    let cli = pki.issue("cli", "cli", &[], &[]);
    let a = tls_node("sec5", "lab1", &dirs[0], &[]).await;
    let seed = a.addr.to_string();
    let b = tls_node("sec5", "lab2", &dirs[1], &["--nodes", &seed]).await;
    let mut caller = Caller::start(
        LABCALL,
        &[
            "--nodes",
            &seed,
            "--tag",
            "sec5",
            "--tls-dir",
            cli.to_str().unwrap(),
            "--duration-ms",
            "4000",
            "--concurrency",
            "4",
            "--replicas",
            "2",
        ],
    );
    caller.calling().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = std::fs::read_to_string(dirs[0].join("node.pem")).unwrap();
    for (name, dir) in [("lab1", &dirs[0]), ("lab2", &dirs[1]), ("cli", &cli)] {
        pki.issue(
            dir.file_name().unwrap().to_str().unwrap(),
            name,
            if name == "cli" { &[] } else { &["lab"] },
            &["--days", "30"],
        );
    }
    assert_ne!(before, std::fs::read_to_string(dirs[0].join("node.pem")).unwrap());
    let report = caller.report().await;
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    // New connections present the new certificate: a fresh caller sees 30 days left.
    let conn = connect_with(a.addr, &cli).await.unwrap();
    let left = conn.peer_identity().unwrap().expires_in(std::time::SystemTime::now()).unwrap();
    assert!(left < Duration::from_secs(31 * 86_400), "still the old certificate: {left:?}");
    // And the cluster gossips it (meshrpc status shows each node's expiry).
    let (code, out, err) =
        meshrpc(&["status", "--json", "-N", &seed, "-T", "sec5", "--tls-dir", cli.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let members = status["members"].as_array().unwrap();
    let lab1 = members.iter().find(|m| m["name"] == "lab1").expect("lab1 in status");
    let not_after = lab1["cert_not_after"].as_u64().expect("an expiry");
    let now = meshrpc_tests::harness::unix_ms() / 1000;
    assert!(not_after > now && not_after < now + 31 * 86_400, "{lab1}");
    drop(b);
}

#[tokio::test]
async fn a_node_warns_before_its_certificate_expires() {
    let pki = Pki::new(MESHRPC, "expiry", "sec6");
    let dir = pki.issue("lab1", "lab1", &["lab"], &["--days", "2"]);
    let node = tls_node("sec6", "lab1", &dir, &[]).await;
    let line = node.logged("certificate expires soon", Duration::from_secs(10)).await;
    assert!(line.is_some_and(|l| l.contains("expires_in_secs")), "no expiry warning");
}

/// A JWT for `sub`, expiring at `exp` (Unix s), signed with `alg` and `key`.
/// A token from the issuer `idp` for the audience `meshrpc`, as the gateways below expect.
fn jwt(sub: &str, exp: u64, alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    jwt_claims(serde_json::json!({ "sub": sub, "exp": exp, "iss": "idp", "aud": "meshrpc" }), alg, key)
}

fn jwt_claims(claims: serde_json::Value, alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
}

const GATEWAY_POLICY: &str = r#"
[[allow]]
from = "user:alice"
to = "greeter.*"

[[allow]]
from = "user:bob"
to = "lab.whoami"

[[allow]]
from = "gw"
to = "*"
"#;

#[tokio::test]
async fn the_gateway_serves_https_and_authorizes_bearer_tokens() {
    let pki = Pki::new(MESHRPC, "gateway", "sec7");
    let lab = pki.issue("lab1", "lab1", &["lab", "greeter", "labhttp"], &[]);
    let gw = pki.issue("gw", "gw", &[], &[]);
    let policy = pki.root.join("policy.toml");
    std::fs::write(&policy, GATEWAY_POLICY).unwrap();
    let keys = pki.root.join("keys");
    let alice_key = "alice-key-0123456789abcdef";
    std::fs::write(&keys, format!("# subject:token\nalice:{alice_key}\n")).unwrap();
    let secret = pki.root.join("secret");
    std::fs::write(&secret, "an HS256 secret of at least thirty-two bytes").unwrap();
    let node = tls_node("sec7", "lab1", &lab, &["--policy", policy.to_str().unwrap()]).await;
    let seed = node.addr.to_string();
    let (dir, policy) = (gw.to_str().unwrap(), policy.to_str().unwrap());
    let (cert, key) = (gw.join("node.pem"), gw.join("node.key"));
    let common = ["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--nodes", &seed, "-T", "sec7"];
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "--tls-dir",
        dir,
        "--policy",
        policy,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    args.extend(["--api-keys", keys.to_str().unwrap(), "--jwt-hs256-secret", secret.to_str().unwrap()]);
    args.extend(["--jwt-issuer", "idp", "--jwt-audience", "meshrpc"]);
    let gateway = Node::start_logged(MESHRPC, &args).await;
    let ca = gw.join("ca.pem");
    let h1 = client_config(&ca, None);
    let call = |path: &'static str, token: Option<String>| {
        let config = h1.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            https(config, gateway.addr, "meshrpc", "POST", path, r#"{"name":"Ann"}"#, &headers).await.unwrap()
        }
    };
    // Health stays open; the gateway sees the replica.
    let health = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        let h = https(h1.clone(), gateway.addr, "meshrpc", "GET", "/healthz", "", &[]).await.ok()?;
        (h.status == 200 && h.json()["members"].as_u64() >= Some(2)).then_some(h)
    })
    .await;
    assert!(health.is_some(), "the gateway never saw the cluster");

    let anonymous = call("/greeter/greet", None).await;
    assert_eq!((anonymous.status, anonymous.json()["errors"][0]["code"].as_str()), (401, Some("unauthenticated")));
    assert_eq!(anonymous.headers.get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(call("/greeter/greet", Some("not-a-key".into())).await.status, 401);
    let hs = jsonwebtoken::EncodingKey::from_secret(b"an HS256 secret of at least thirty-two bytes");
    let expired = call("/greeter/greet", Some(jwt("bob", 1_000_000_000, jsonwebtoken::Algorithm::HS256, &hs))).await;
    assert_eq!(expired.status, 401);
    assert!(expired.json()["errors"][0]["message"].as_str().unwrap().contains("Expired"), "{expired:?}");

    // alice (API key) may greet, not ask lab; bob (JWT) the other way round.
    let greeted = call("/greeter/greet", Some(alice_key.into())).await;
    assert_eq!((greeted.status, greeted.json()["data"].as_str()), (200, Some("Hello, Ann")), "{greeted:?}");
    let denied = call("/lab/whoami", Some(alice_key.into())).await;
    assert_eq!((denied.status, denied.json()["errors"][0]["code"].as_str()), (403, Some("permission_denied")));
    let bob = jwt("bob", 4_102_444_800, jsonwebtoken::Algorithm::HS256, &hs);
    assert_eq!(call("/lab/whoami", Some(bob.clone())).await.json()["data"], "lab1");
    // A token with no issuer, or for another audience, or none: refused, saying which claim.
    let hs256 = jsonwebtoken::Algorithm::HS256;
    for (claims, missing) in [
        (serde_json::json!({ "sub": "bob", "exp": 4_102_444_800u64, "aud": "meshrpc" }), "iss"),
        (serde_json::json!({ "sub": "bob", "exp": 4_102_444_800u64, "iss": "idp", "aud": "other" }), "Audience"),
        (serde_json::json!({ "sub": "bob", "exp": 4_102_444_800u64, "iss": "idp" }), "aud"),
    ] {
        let refused = call("/lab/whoami", Some(jwt_claims(claims, hs256, &hs))).await;
        let message = refused.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(refused.status, 401, "{refused:?}");
        assert!(message.contains(missing), "{message}");
    }
    // A large body with no token gets its 401, over both protocols, not a reset.
    let big = "x".repeat(200_000);
    let h2 = client_config_alpn(&ca, None, b"h2");
    for config in [h1.clone(), h2.clone()] {
        for _ in 0..20 {
            let answer = https(config.clone(), gateway.addr, "meshrpc", "POST", "/greeter/greet", &big, &[]).await;
            assert_eq!(answer.map(|a| a.status), Ok(401));
        }
    }
    assert_eq!(call("/greeter/greet", Some(bob.clone())).await.status, 403);
    // HTTP/2 by ALPN, same answers.
    let auth = format!("Bearer {bob}");
    let over_h2 =
        https(h2, gateway.addr, "meshrpc", "POST", "/lab/whoami", "{}", &[("authorization", &auth)]).await.unwrap();
    assert_eq!(over_h2.headers.get("x-test-version").unwrap(), "HTTP/2.0");
    assert_eq!(over_h2.json()["data"], "lab1");
    // Plain HTTP on the HTTPS port: refused at once (a TLS alert, then closed), not hung.
    let mut plain = TcpStream::connect(gateway.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "plain HTTP on the HTTPS port hung");
    assert!(!got.starts_with(b"HTTP/1.1 200"), "plain HTTP answered on the HTTPS port");

    // RS256: a second gateway verifies with a public key.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut args: Vec<&str> = common.to_vec();
    let public = format!("{fixtures}/jwt-rs256-public.pem");
    args.extend([
        "--tls-dir",
        dir,
        "--policy",
        policy,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    args.extend(["--jwt-rs256-key", &public]);
    let rs_gateway = Node::start_logged(MESHRPC, &args).await;
    let private = std::fs::read(format!("{fixtures}/jwt-rs256-private.pem")).unwrap();
    let rs = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let alice = format!("Bearer {}", jwt("alice", 4_102_444_800, jsonwebtoken::Algorithm::RS256, &rs));
    let answer = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        let config = client_config(&ca, None);
        let a = https(
            config,
            rs_gateway.addr,
            "meshrpc",
            "POST",
            "/greeter/greet",
            r#"{"name":"Rs"}"#,
            &[("authorization", &alice)],
        )
        .await
        .ok()?;
        (a.status == 200).then_some(a)
    })
    .await;
    assert_eq!(answer.expect("RS256 token accepted").json()["data"], "Hello, Rs");
    let forged = format!("Bearer {}", jwt("alice", 4_102_444_800, jsonwebtoken::Algorithm::HS256, &hs));
    let refused = https(
        client_config(&ca, None),
        rs_gateway.addr,
        "meshrpc",
        "POST",
        "/greeter/greet",
        "{}",
        &[("authorization", &forged)],
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn the_tls_demo_answers_curl_and_refuses_plaintext_callers() {
    let (http_port, mesh_port) = (meshrpc_tests::harness::free_port(), meshrpc_tests::harness::free_port());
    let mut demo = tokio::process::Command::new(MESHRPC)
        .args([
            "demo",
            "--tls",
            "--replicas",
            "2",
            "--http-port",
            &http_port.to_string(),
            "--mesh-port",
            &mesh_port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(demo.stdout.take().unwrap());
    let cli = tokio::time::timeout(Duration::from_secs(60), async {
        let mut line = String::new();
        loop {
            line.clear();
            if tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await.unwrap() == 0 {
                panic!("the demo exited");
            }
            if let Some(i) = line.find("--tls-dir ") {
                return line[i + "--tls-dir ".len()..].trim().to_owned();
            }
        }
    })
    .await
    .expect("the demo printed how to call it over TLS");
    tokio::spawn(async move {
        let mut sink = String::new();
        while tokio::io::AsyncBufReadExt::read_line(&mut out, &mut sink).await.is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    // curl through the gateway: the gateway calls the greeters over mutual TLS.
    let greet = http("GET", &format!("http://127.0.0.1:{http_port}/greeter/greet/Max"), "", &[]).await;
    assert_eq!((greet.status, greet.body.as_str()), (200, "\"Hello, Max\""), "{greet:?}");
    let check = http("GET", &format!("http://127.0.0.1:{http_port}/greeter/check"), "", &[]).await;
    assert!(check.body.starts_with("All ok!"), "{check:?}");
    let seed = format!("127.0.0.1:{mesh_port}");
    let (code, stdout, err) =
        meshrpc(&["call", "greeter.greet", r#"{"name":"Max"}"#, "-N", &seed, "--tls-dir", &cli]).await;
    assert_eq!((code, stdout.trim()), (0, "\"Hello, Max\""), "{err}");
    let (code, _, err) = meshrpc(&["call", "greeter.greet", r#"{"name":"Max"}"#, "-N", &seed, "--wait", "1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--tls-dir"), "{err}");
    meshrpc_tests::harness::terminate(&mut demo, Duration::from_secs(20)).await;
}

/// docs/security.md: a peer whose certificate names another cluster tag is refused — even
/// one from a CA this node trusts (two CAs in `ca.pem`, as during a CA rotation).
#[tokio::test]
async fn a_certificate_of_another_cluster_tag_is_refused() {
    let ours = Pki::new(MESHRPC, "tag-ours", "sec9");
    let theirs = Pki::new(MESHRPC, "tag-theirs", "sec9-other");
    let dir = ours.issue("lab1", "lab1", &["lab"], &[]);
    // The node trusts both CAs.
    let both = std::fs::read_to_string(ours.ca().join("ca.pem")).unwrap()
        + &std::fs::read_to_string(theirs.ca().join("ca.pem")).unwrap();
    std::fs::write(dir.join("ca.pem"), both).unwrap();
    let node = tls_node("sec9", "lab1", &dir, &[]).await;
    let admin = admin(&node).await;
    let refused_before = counter(admin, "meshrpc_tls_handshakes_refused").await;
    let stranger = theirs.issue_caller("cli", "cli");
    let mut stranger_ca = std::fs::read_to_string(stranger.join("ca.pem")).unwrap();
    stranger_ca += &std::fs::read_to_string(ours.ca().join("ca.pem")).unwrap();
    std::fs::write(stranger.join("ca.pem"), stranger_ca).unwrap();
    let outcome = match connect_with(node.addr, &stranger).await {
        Ok(conn) => mesh_call(&conn, "lab", "whoami").await,
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "a certificate of cluster `sec9-other` was served: {outcome:?}");
    let refused = meshrpc_tests::harness::eventually(Duration::from_secs(5), || async {
        (counter(admin, "meshrpc_tls_handshakes_refused").await > refused_before).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the refusal was not counted");
    // A caller of this cluster still gets in.
    let ok = connect_with(node.addr, &ours.issue_caller("ops", "ops")).await.unwrap();
    assert_eq!(mesh_call(&ok, "lab", "whoami").await.unwrap(), "\"lab1\"");
}

/// docs/security.md: SIGHUP reloads the policy (here the file's time is left as it was,
/// so only the signal can make the node read it again).
#[tokio::test]
async fn sighup_reloads_the_policy() {
    let pki = Pki::new(MESHRPC, "sighup", "sec10");
    let dir = pki.issue("lab1", "lab1", &["lab"], &[]);
    let cli = pki.issue_caller("cli", "cli");
    let policy = pki.root.join("policy.toml");
    std::fs::write(&policy, "[[allow]]\nfrom = \"cli\"\nto = \"greeter.*\"\n").unwrap();
    let mut node = tls_node("sec10", "lab1", &dir, &["--policy", policy.to_str().unwrap()]).await;
    let conn = connect_with(node.addr, &cli).await.unwrap();
    assert_eq!(mesh_call(&conn, "lab", "whoami").await.unwrap_err().code(), "permission_denied");
    let stamp = std::fs::metadata(&policy).unwrap().modified().unwrap();
    std::fs::write(&policy, "[[allow]]\nfrom = \"cli\"\nto = \"lab.*\"\n").unwrap();
    std::fs::File::options().write(true).open(&policy).unwrap().set_modified(stamp).unwrap();
    // The file looks unchanged: the node keeps its policy (it looks once a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(mesh_call(&conn, "lab", "whoami").await.unwrap_err().code(), "permission_denied");
    let pid = node.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let reloaded = meshrpc_tests::harness::eventually(Duration::from_secs(5), || async {
        mesh_call(&conn, "lab", "whoami").await.ok()
    })
    .await;
    assert_eq!(reloaded.as_deref(), Some("\"lab1\""), "the policy was not reloaded on SIGHUP");
    node.kill().await;
}

/// A node forwards a call of a service it does not publish — with mutual TLS only under
/// a policy of its own, which must admit the caller first: otherwise any certificate of
/// the cluster could reach, as that node, what the replicas' policies refuse it.
#[tokio::test]
async fn with_tls_a_node_forwards_only_under_its_own_policy() {
    let pki = Pki::new(MESHRPC, "forward", "sec11");
    let lab = pki.issue("lab1", "lab1", &["lab"], &[]);
    let gw = pki.issue("gw", "gw", &[], &[]);
    let cli = pki.issue_caller("cli", "cli");
    // The replica lets the gateway node call it, and nobody else.
    let policy = pki.root.join("lab.toml");
    std::fs::write(&policy, "[[allow]]\nfrom = \"gw\"\nto = \"lab.*\"\n").unwrap();
    let node = tls_node("sec11", "lab1", &lab, &["--policy", policy.to_str().unwrap()]).await;
    let seed = node.addr.to_string();
    let gateway = |extra: &[&str]| {
        let mut args = vec!["example", "mesh-api", "--listen-addr", "127.0.0.1:0", "--http-host", "127.0.0.1"];
        args.extend(["--http-port", "0", "-T", "sec11", "-N", &seed, "--tls-dir", gw.to_str().unwrap()]);
        args.extend(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Node::start_logged(MESHRPC, &args).await
        }
    };
    let call_through = |node: &Node| {
        let (cli, node_line) = (cli.clone(), node.output());
        async move {
            let mesh = node_line.iter().find_map(|l| l.strip_prefix("mesh on ")).expect("mesh address").to_owned();
            let conn = connect_with(mesh.parse().unwrap(), &cli).await.unwrap();
            meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
                match mesh_call(&conn, "lab", "whoami").await {
                    Err(e) if e.code() == "unknown_service" => None, // not in its view yet, or refused
                    other => Some(other),
                }
            })
            .await
        }
    };
    // No policy on the gateway node: it does not forward (cli may not call lab itself).
    let open = gateway(&[]).await;
    assert!(open.line("mesh on ", Duration::from_secs(5)).await.is_some());
    assert!(call_through(&open).await.is_none(), "forwarded without a policy of its own");
    // Under a policy that admits cli for lab: forwarded, as the gateway node.
    let gw_policy = pki.root.join("gw.toml");
    std::fs::write(&gw_policy, "[[allow]]\nfrom = \"cli\"\nto = \"lab.*\"\n").unwrap();
    let ruled = gateway(&["--policy", gw_policy.to_str().unwrap()]).await;
    assert!(ruled.line("mesh on ", Duration::from_secs(5)).await.is_some());
    let answer = call_through(&ruled).await.expect("forwarded under the gateway's policy");
    assert_eq!(answer.unwrap(), "\"lab1\"");
}
