//! Issue 29: the cluster's shared state under attack from inside the host and the cluster
//! — unsealed gossip slipped into a node's sockets, rules written by identities that may
//! not write them (a node of another service, a holder of `gossip.key` alone, a forged
//! setter), and a replica that cannot prove its service trying to capture a split. Real
//! node processes with mutual TLS on loopback; the impostors are gossip nodes of meshrpc's
//! own engine told to say whatever the test wants.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use meshrpc::Cluster;
use meshrpc_tests::{
    harness::{eventually, http, unix_ms, Node},
    impostor::{gossip_key, udp_ports, Impostor},
    lab::{Lab, LabClient},
    tls::Pki,
};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

/// A labnode with TLS credentials `dir` (and more flags), its log captured.
async fn tls_node(tag: &str, name: &str, dir: &Path, extra: &[&str]) -> (Node, SocketAddr) {
    let mut args =
        vec!["--tag", tag, "--name", name, "--tls-dir", dir.to_str().unwrap(), "--admin-addr", "127.0.0.1:0"];
    args.extend(extra);
    let node = Node::start_logged(LABNODE, &args).await;
    let admin = node.line("admin on ", Duration::from_secs(5)).await.expect("admin address").parse().unwrap();
    (node, admin)
}

/// A counter from a node's admin `/metrics`.
async fn counter(admin: SocketAddr, name: &str) -> u64 {
    let text = http("GET", &format!("http://{admin}/metrics"), "", &[]).await.body;
    let line = text.lines().find_map(|l| l.strip_prefix(&format!("{name}_total ")));
    line.unwrap_or_else(|| panic!("no {name} in\n{text}")).parse().unwrap()
}

/// A caller-only identity in this process, following the view of the node at `seed`.
async fn follower(tag: &str, seed: SocketAddr, dir: &Path) -> Cluster {
    Cluster::builder("watcher").tag(tag).seeds([seed.to_string()]).tls_dir(dir.to_path_buf()).start().await.unwrap()
}

async fn members(cluster: &Cluster, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let seen = eventually(Duration::from_secs(10), || async {
        let names: BTreeSet<String> = cluster.view().members.iter().map(|m| m.name.clone()).collect();
        (names == want).then_some(())
    })
    .await;
    assert!(seen.is_some(), "members {:?}, want {want:?}", cluster.view().members);
}

async fn meshrpc(args: &[&str]) -> (bool, String, String) {
    let run = tokio::process::Command::new(MESHRPC).args(args).output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.expect("meshrpc hung").unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn unsealed_gossip_from_this_host_changes_no_view() {
    let tag = "state1";
    let pki = Pki::new(MESHRPC, "inject", tag);
    let (lab1, admin1) = tls_node(tag, "lab1", &pki.issue("lab1", "lab1", &["lab"], &[]), &[]).await;
    let seed = lab1.addr.to_string();
    let (lab2, admin2) = tls_node(tag, "lab2", &pki.issue("lab2", "lab2", &["lab"], &[]), &["--nodes", &seed]).await;
    let ops = pki.issue_caller("ops", "ops");
    let (view1, view2) = (follower(tag, lab1.addr, &ops).await, follower(tag, lab2.addr, &ops).await);
    members(&view1, &["lab1", "lab2", "watcher"]).await;
    members(&view2, &["lab1", "lab2", "watcher"]).await;

    // Well-formed gossip, unsealed, to every UDP port either node has open: a member
    // claiming to serve `lab`, and a split rule sending all of it to a version of its own.
    let mut seeds: Vec<SocketAddr> = Vec::new();
    for node in [&lab1, &lab2] {
        let ports = udp_ports(node.child.id().unwrap());
        assert!(!ports.is_empty(), "a TLS node has its gossip port");
        seeds.extend(ports.into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))));
    }
    let split = format!("{} ops fake=100", unix_ms());
    let kv = [
        ("name", "lab"),
        ("addr", "127.0.0.1:9"),
        ("state", "serving"),
        ("svc:lab", "fp #digest fake"),
        ("split:lab", split.as_str()),
    ];
    let forged_before = counter(admin1, "meshrpc_gossip_forged").await + counter(admin2, "meshrpc_gossip_forged").await;
    let impostor = Impostor::start(tag, &seeds, &kv, None).await;
    // Thirty gossip rounds of the impostor's.
    tokio::time::sleep(Duration::from_secs(3)).await;

    for view in [&view1, &view2] {
        let names: BTreeSet<String> = view.view().members.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["lab1", "lab2", "watcher"].map(String::from).into(), "{:?}", view.view().members);
        assert!(view.view().split("lab").is_none(), "{:?}", view.view().split("lab"));
    }
    let forged =
        counter(admin1, "meshrpc_gossip_forged").await + counter(admin2, "meshrpc_gossip_forged").await - forged_before;
    println!("impostor's datagrams dropped: {forged} at the gossip ports");
    assert!(forged > 0, "nothing counted at the gossip ports");
    assert!(lab1.logged("not sealed with the cluster's gossip key", Duration::from_secs(1)).await.is_some());
    drop(impostor);
    // The nodes still answer.
    let lab = LabClient::new(view1.client(LabClient::SPEC));
    assert!(["lab1", "lab2"].contains(&lab.whoami().await.unwrap().as_str()));
}

/// Everyone may call; only `ops` may write rules, and only for `lab`.
const POLICY: &str = r#"
[[allow]]
from = ["ops", "lab1", "lab2"]
to = ["*", "rule:split/lab", "rule:mirror/lab"]
"#;

/// The rogue node's own policy lets it write any rule itself: it gossips what it writes,
/// signed with its own (real) key.
const ROGUE_POLICY: &str = r#"
[[allow]]
from = ["ops", "billing"]
to = ["*", "rule:*"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_followed_only_from_writers_the_policy_allows() {
    let tag = "state2";
    let pki = Pki::new(MESHRPC, "rules", tag);
    let policy = pki.root.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let rogue_policy = pki.root.join("rogue.toml");
    std::fs::write(&rogue_policy, ROGUE_POLICY).unwrap();
    let policy_flags = ["--policy", policy.to_str().unwrap()];
    let lab1_dir = pki.issue("lab1", "lab1", &["lab"], &[]);
    let (lab1, admin1) =
        tls_node(tag, "lab1", &lab1_dir, &[&policy_flags[..], &["--service-version", "v1"]].concat()).await;
    let seed = lab1.addr.to_string();
    let join = ["--nodes", seed.as_str()];
    let (lab2, admin2) = tls_node(
        tag,
        "lab2",
        &pki.issue("lab2", "lab2", &["lab"], &[]),
        &[&policy_flags[..], &join, &["--service-version", "v2"]].concat(),
    )
    .await;
    // A node of another service, with a real certificate and the gossip key: it runs `lab`
    // too, as version `rogue`, and writes a split and a mirror rule for `lab` itself.
    let billing = pki.issue("billing", "billing", &["billing"], &[]);
    let rogue_flags = [
        "--policy",
        rogue_policy.to_str().unwrap(),
        "--service-version",
        "rogue",
        "--write-split",
        "lab rogue=100",
        "--write-mirror",
        "lab rogue=100",
    ];
    let (rogue, _) = tls_node(tag, "billing", &billing, &[&rogue_flags[..], &join].concat()).await;
    assert!(rogue.logged("wrote split: Ok", Duration::from_secs(5)).await.is_some(), "{:?}", rogue.output());
    let ops_dir = pki.issue_caller("ops", "ops");
    let ops = follower(tag, lab1.addr, &ops_dir).await;
    members(&ops, &["lab1", "lab2", "billing", "watcher"]).await;

    // The rogue's rules reach both nodes by gossip, and neither follows them.
    let refused = eventually(Duration::from_secs(10), || async {
        let (a, b) = (counter(admin1, "meshrpc_rules_rejected").await, counter(admin2, "meshrpc_rules_rejected").await);
        (a >= 2 && b >= 2).then_some((a, b))
    })
    .await;
    assert!(refused.is_some(), "the rogue's split and mirror were not refused on both nodes");
    assert!(lab1.logged("rule refused", Duration::from_secs(1)).await.is_some());

    // A holder of the gossip key alone: an unsigned rule, and one claiming `ops` wrote it.
    let later = unix_ms() + 1_000;
    let (unsigned, forged) = (format!("{later} ops v2=100"), format!("{} ops v2=100 ~1027.AAAA.AAAA", later + 1));
    let kv = [("name", "ops"), ("split:lab", unsigned.as_str()), ("mirror:lab", forged.as_str())];
    let before = counter(admin1, "meshrpc_rules_rejected").await;
    let impostor = Impostor::start(tag, &[lab1.addr, lab2.addr], &kv, Some(gossip_key(&lab1_dir))).await;
    let counted = eventually(Duration::from_secs(10), || async {
        (counter(admin1, "meshrpc_rules_rejected").await >= before + 2).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the impostor's rules were not refused");
    let view = ops.view();
    assert!(
        view.split("lab").is_none() && view.mirror("lab").is_none(),
        "{:?} {:?}",
        view.split("lab"),
        view.mirror("lab")
    );
    drop(impostor);

    // None of it moved a call, and nothing was mirrored.
    let lab = LabClient::new(ops.client(LabClient::SPEC));
    let mut answered = BTreeSet::new();
    for _ in 0..100 {
        answered.insert(lab.whoami().await.expect("every call answers"));
    }
    assert_eq!(answered, ["lab1", "lab2"].map(String::from).into());
    assert_eq!(ops.mirror_stats().mirrored, 0);

    // The rogue's identity, through the CLI: refused at once, saying why.
    let cli = |dir: &PathBuf, rule: &'static str| {
        let dir = dir.display().to_string();
        let seed = seed.clone();
        async move { meshrpc(&["split", "lab", rule, "--nodes", &seed, "--tag", tag, "--tls-dir", &dir]).await }
    };
    let (ok, _, err) = cli(&billing, "rogue=100").await;
    assert!(!ok && err.contains("permission denied") && err.contains("rule:split/lab"), "{err}");

    // An allowed writer's rule for a version only the unproven replica runs: it cannot
    // capture the calls (the certificate is checked before the version is chosen).
    let (ok, out, err) = cli(&ops_dir, "rogue=100").await;
    assert!(ok, "{err}");
    assert!(out.contains("set by ops"), "{out}");
    let split = eventually(Duration::from_secs(5), || async { ops.view().split("lab").cloned() }).await.unwrap();
    assert_eq!((split.set_by.as_str(), split.weights[0].0.as_str()), ("ops", "rogue"));
    let mut answered = BTreeSet::new();
    for _ in 0..100 {
        answered.insert(lab.whoami().await.expect("every call answers"));
    }
    assert!(!answered.contains("billing"), "{answered:?}");
    // And a rule that is the allowed writer's own is followed.
    assert!(cli(&ops_dir, "v2=100").await.0);
    let followed = eventually(Duration::from_secs(5), || async {
        ops.view().split("lab").is_some_and(|s| s.weights[0].0 == "v2").then_some(())
    })
    .await;
    assert!(followed.is_some());
    for _ in 0..50 {
        assert_eq!(lab.whoami().await.unwrap(), "lab2");
    }
    let _ = (lab2, rogue);
}
