//! Issue 36: the dashboard tells a crash from a scale-down, and a page opened late sees the
//! recent past. Read as a browser reads it: the Server-Sent Events of `/dashboard/events`.
//! (The page itself, in a real browser: `the_dashboard_shows_the_mesh_live_in_a_real_browser`.)

use std::time::Duration;

use meshrpc_tests::harness::{eventually, generic_gateway, http, read_lines, Lines, Node};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// The next snapshot a dashboard gets (a guard against a hang, not a measure).
async fn snapshot(events: &mut Lines) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = events.recv().await.expect("the events stream ended");
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                    if json.get("nodes").is_some() {
                        return json;
                    }
                }
            }
        }
    })
    .await
    .expect("a snapshot within 20 s")
}

/// The greeter nodes a snapshot shows, by address: `(reachable, lost_s)`.
fn greeters(snapshot: &serde_json::Value) -> std::collections::BTreeMap<String, (bool, Option<u64>)> {
    snapshot["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] == "greeter")
        .map(|n| (n["addr"].as_str().unwrap().to_owned(), (n["reachable"] == true, n["lost_s"].as_u64())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_stays_on_the_dashboard_as_lost_and_a_new_page_sees_the_charts_past() {
    let tag = "dashboard-lost";
    let (gateway, mesh) = generic_gateway(MESHRPC, tag).await;
    let args = ["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", &mesh];
    let replica = || Node::start(MESHRPC, &args);
    let (mut doomed, mut leaving, _stays) = (replica().await, replica().await, replica().await);
    let members = || async { http("GET", &gateway.url("/healthz"), "", &[]).await.json()["members"].as_u64() };
    let seen = eventually(Duration::from_secs(15), || async { (members().await? == 4).then_some(()) }).await;
    assert!(seen.is_some(), "the gateway never saw three replicas");
    let greet = gateway.url("/greeter/greet");
    let load = tokio::spawn(async move {
        loop {
            http("POST", &greet, r#"{"name":"Ada"}"#, &[]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let (_first, mut events) = read_lines("GET", &gateway.url("/dashboard/events"), "", &[]).await;
    for _ in 0..4 {
        snapshot(&mut events).await;
    }
    // A page opened now draws the last seconds at once: the gateway kept them.
    let (second, mut late) = read_lines("GET", &gateway.url("/dashboard/events"), "", &[]).await;
    let at_once = snapshot(&mut late).await;
    let history = at_once["history"]["greeter"].as_array().map_or(0, Vec::len);
    assert!(history >= 3, "a new page got {history} values of the greeter's chart: {at_once}");
    second.abort();

    // kill -9: once the mesh has dropped it, the page still shows it, unreachable.
    let killed = doomed.addr.to_string();
    doomed.kill().await;
    let dropped = eventually(Duration::from_secs(30), || async { (members().await? == 3).then_some(()) }).await;
    assert!(dropped.is_some(), "the mesh never dropped the killed replica");
    let (mut lost, mut shown) = (None, 0);
    while lost.is_none() && shown < 30 {
        let now = snapshot(&mut events).await;
        lost = greeters(&now).get(&killed).filter(|(reachable, lost_s)| !reachable && lost_s.is_some()).copied();
        shown += 1;
    }
    let (_, lost_s) = lost.unwrap_or_else(|| panic!("the killed replica vanished from the dashboard"));
    println!("the killed replica is shown lost ({lost_s:?} s)");

    // SIGTERM: it drains and leaves, a scale-down: the page drops it.
    let left = leaving.addr.to_string();
    leaving.terminate(Duration::from_secs(30)).await.expect("the replica exits on SIGTERM");
    let gone = eventually(Duration::from_secs(30), || async { (members().await? == 2).then_some(()) }).await;
    assert!(gone.is_some(), "the mesh never dropped the drained replica");
    let mut dropped_from_page = false;
    for _ in 0..10 {
        let shown = greeters(&snapshot(&mut events).await);
        assert!(
            shown.get(&left).is_none_or(|(_, lost_s)| lost_s.is_none()),
            "a drained replica is not lost: {shown:?}"
        );
        assert!(shown.get(&killed).is_some_and(|(_, lost_s)| lost_s.is_some()), "{shown:?}");
        if !shown.contains_key(&left) {
            dropped_from_page = true;
            break;
        }
    }
    assert!(dropped_from_page, "the drained replica stayed on the page");
    load.abort();
}
