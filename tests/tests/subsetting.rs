//! Issue 35, connection subsetting: callers of one name keep to deterministic subsets of
//! a service's replicas, every replica gets a near-equal share of callers, connections
//! stay bounded, and a replica killed out of a caller's subset is stood in for. The
//! replicas are processes of their own; the callers are cluster nodes of this process.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use meshrpc::Cluster;
use meshrpc_tests::{
    harness::{eventually, Node},
    hostile::gauge,
    lab::{Lab, LabClient},
};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

#[tokio::test(flavor = "multi_thread")]
async fn callers_keep_to_even_subsets_and_stand_in_for_a_killed_replica() {
    const REPLICAS: usize = 8;
    const CALLERS: usize = 8;
    const SUBSET: usize = 2;
    let tag = "subset";
    let first = Node::start(LABNODE, &["--tag", tag, "--name", "r0"]).await;
    let seed = first.addr.to_string();
    let mut replicas = vec![first];
    for i in 1..REPLICAS {
        replicas.push(Node::start(LABNODE, &["--tag", tag, "--nodes", &seed, "--name", &format!("r{i}")]).await);
    }
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let caller = Cluster::builder("caller").tag(tag).seeds([seed.clone()]).subset(SUBSET).start().await.unwrap();
        callers.push(caller);
    }
    for caller in &callers {
        let whole = eventually(Duration::from_secs(20), || async {
            let view = caller.view();
            let callers = view.members.iter().filter(|m| m.name == "caller").count();
            (view.replicas("lab", None).count() == REPLICAS && callers == CALLERS).then_some(())
        })
        .await;
        assert!(whole.is_some(), "a caller never saw the whole mesh: {:?}", caller.members());
    }

    // 40 calls from each caller, round robin within its subset.
    let mut per_caller: Vec<BTreeSet<String>> = vec![BTreeSet::new(); CALLERS];
    let mut per_replica: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for (i, caller) in callers.iter().enumerate() {
        let lab = LabClient::new(caller.channel());
        for _ in 0..40 {
            let who = lab.whoami().await.unwrap();
            per_caller[i].insert(who.clone());
            per_replica.entry(who.clone()).or_default().insert(i);
            *calls.entry(who).or_default() += 1;
        }
    }
    eprintln!("subsets of {SUBSET}: callers per replica {per_replica:?}; calls per replica {calls:?}");
    for (i, used) in per_caller.iter().enumerate() {
        assert_eq!(used.len(), SUBSET, "caller {i} used {used:?}");
    }
    // 8 replicas in subsets of 2: four callers make a round, and the two rounds cover
    // every replica twice.
    assert_eq!(per_replica.len(), REPLICAS, "every replica is in some subset: {per_replica:?}");
    for (replica, callers) in &per_replica {
        assert_eq!(callers.len(), CALLERS * SUBSET / REPLICAS, "{replica} is in the subsets of {callers:?}");
    }
    // Each replica holds the connections of its callers, not of all eight (the scrape's
    // own connection counts too).
    for replica in &replicas {
        let open = gauge(replica.addr, "meshrpc_connections_open").await;
        assert!(open <= (CALLERS * SUBSET / REPLICAS + 1) as u64, "{open} connections open on a replica");
    }

    // A call with a sticky key goes to the key's replica, which may be outside the
    // caller's subset: the connection it opened there is given back once unused (10 s),
    // so what a caller holds comes back to its subsets.
    let lab0 = LabClient::new(callers[0].channel());
    let mut outside = None;
    for k in 0..64 {
        let key = format!("user-{k}");
        let who = lab0.with_key(key.as_str()).whoami().await.unwrap();
        if !per_caller[0].contains(&who) {
            outside = Some((key, who));
            break;
        }
    }
    let (key, outside) = outside.expect("no key of 64 lands outside caller 0's subset");
    let node = &replicas[outside.trim_start_matches('r').parse::<usize>().unwrap()];
    let opened = eventually(Duration::from_secs(5), || async { callers[0].peer_latency(node.addr) }).await;
    assert!(opened.is_some(), "the keyed call left no open connection to {outside}");
    let keyed_at = Instant::now();
    let given_back = eventually(Duration::from_secs(30), || async {
        let open = gauge(node.addr, "meshrpc_connections_open").await;
        let closed = callers[0].peer_latency(node.addr).is_none();
        (closed && open <= (CALLERS * SUBSET / REPLICAS + 1) as u64).then_some(open)
    })
    .await;
    eprintln!(
        "a keyed call to {outside}: its connection given back after {:?} ({given_back:?} open there)",
        keyed_at.elapsed()
    );
    assert!(given_back.is_some(), "the connection to {outside}, outside caller 0's subset, was never closed");
    // Given back is not broken: the key still lands on its replica, over a new connection.
    assert_eq!(lab0.with_key(key.as_str()).whoami().await.unwrap(), outside, "the key moved after the give-back");
    for name in &per_caller[0] {
        let member = &replicas[name.trim_start_matches('r').parse::<usize>().unwrap()];
        assert!(
            callers[0].peer_latency(member.addr).is_some(),
            "caller 0's connection to {name}, in its subset, was closed"
        );
    }

    // Kill a replica of caller 0's subset: its calls go on, to the other member of its
    // subset and a stand-in, never to the dead one.
    let victim = per_caller[0].iter().next().unwrap().clone();
    let index: usize = victim.trim_start_matches('r').parse().unwrap();
    replicas[index].kill().await;
    let killed = Instant::now();
    let lab = LabClient::new(callers[0].channel());
    let mut after = BTreeSet::new();
    let mut replaced = None;
    for _ in 0..40 {
        let who = lab.whoami().await.expect("a call after the kill failed");
        assert_ne!(who, victim, "the killed replica answered");
        after.insert(who);
        if after.len() == SUBSET && replaced.is_none() {
            replaced = Some(killed.elapsed());
        }
    }
    eprintln!("after killing {victim}: caller 0 used {after:?}, its stand-in answering {replaced:?} after the kill");
    assert_eq!(after.len(), SUBSET, "{after:?}");
    let kept: Vec<_> = per_caller[0].iter().filter(|r| **r != victim).collect();
    assert!(kept.iter().all(|r| after.contains(*r)), "the live member of the subset was kept: {after:?}");
}
