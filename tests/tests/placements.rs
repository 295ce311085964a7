//! `meshrpc::app`: one binary, its services placed into nodes by a file and the
//! environment (`App::run_from_env`), driven from outside as a user runs it.

use std::time::Duration;

use meshrpc_tests::{
    harness::Node,
    placements::{three_placements, Placed},
    relay::{app, Relay as _, RelayClient},
};

const RELAYAPP: &str = env!("CARGO_BIN_EXE_relayapp");

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_in_three_placements() {
    three_placements(&app(), RELAYAPP, "relay", Duration::from_secs(10), |placed, caller| async move {
        caller.wait_for(&app().specs(), Duration::from_secs(10)).await.expect("the app is reachable");
        let relay = RelayClient::new(caller.client(RelayClient::SPEC));
        let (said, pid) = relay.greet_twice("Ada".into()).await.expect("the relay answers");
        assert_eq!(said, ["Hello, Ada", "Hello, Ada"]);
        // In-process placements serve in this process; the third in the relay's own.
        let here = pid == std::process::id();
        assert_eq!(here, placed != Placed::ProcessPerService, "{placed:?}: served by process {pid}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_placement_every_service_runs_in_one_node() {
    let tag = format!("relay-one-{}", std::process::id());
    let node = Node::start_env(RELAYAPP, &[], &[("MESHRPC_CLUSTER_TAGNAME", &tag)]).await;
    let serves = format!("{} serves greeter, relay", node.addr);
    assert!(node.output().contains(&serves), "{serves:?} not in {:?}", node.output());
    assert!(node.line("ready", Duration::from_secs(10)).await.is_some(), "{:?}", node.output());
}

/// Runs `relayapp` with `env` to its exit (bounded); its status and what it printed.
async fn refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let run = tokio::process::Command::new(RELAYAPP).envs(env.iter().copied()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(10), run).await.expect("it exits at once").unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_placements_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("relay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let two = file("two.toml", "groups = [[\"relay\"], [\"greeter\"]]\n");
    let cases = [
        (
            vec![("MESHRPC_PLACEMENT", file("unknown.toml", "groups = [[\"greeter\", \"relay\", \"storefront\"]]"))],
            "relayapp: group 0: unknown service `storefront` (services: greeter, relay)",
        ),
        (
            vec![("MESHRPC_PLACEMENT", file("twice.toml", "groups = [[\"greeter\", \"relay\"], [\"relay\"]]"))],
            "relayapp: service `relay` is placed twice: in group 0 and in group 1",
        ),
        (
            vec![("MESHRPC_PLACEMENT", file("missing.toml", "groups = [[\"relay\"]]"))],
            "relayapp: services not placed in any group: greeter",
        ),
        (
            vec![("MESHRPC_PLACEMENT", two.clone()), ("MESHRPC_PLACEMENT_GROUP", "2".into())],
            "relayapp: no group 2: the placement has 2 groups (0 to 1)",
        ),
        (
            vec![("MESHRPC_PLACEMENT", two.clone()), ("MESHRPC_PLACEMENT_GROUP", "first".into())],
            "relayapp: MESHRPC_PLACEMENT_GROUP=`first`: expected a group's index (from 0)",
        ),
        (vec![("MESHRPC_PLACEMENT", dir.join("absent.toml").to_str().unwrap().to_owned())], "relayapp: reading "),
    ];
    for (env, expected) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, said) = refused(&env).await;
        assert_eq!(code, Some(1), "{env:?}: {said}");
        assert!(said.contains(expected), "{env:?}: expected {expected:?}, got {said:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
