//! The callers: client-only nodes that send steady traffic (unary calls of every kind and
//! streams) through the faults, check each call as it ends, then check that the mesh
//! healed: once the faults stop, every call succeeds again within [`CONVERGENCE`].

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use greeter::{Greeter, GreeterClient};
use meshrpc::cluster::Cluster;

use crate::{
    ledger::{Ledger, LedgerClient, LedgerError},
    Rng, Shared, CONVERGENCE, DEADLINE,
};

/// Calls each caller keeps in flight.
const WORKERS: u64 = 4;
/// A call that has not ended this long after its deadline hangs.
const HANG: Duration = Duration::from_secs(1);
/// An answer this late past the deadline broke it.
const LATE: Duration = Duration::from_millis(250);

/// The kinds of call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Deposit,
    Look,
    Greet,
    Stream {
        n: u32,
    },
    /// A deposit or a look (`idempotent`) through the gateway, as JSON over HTTP.
    Gateway {
        idempotent: bool,
    },
}

#[derive(Clone)]
struct Clients {
    ledger: LedgerClient,
    greeter: GreeterClient,
    /// The first caller also runs the gateway, on its own cluster node.
    gateway: Option<axum::Router>,
}

pub(crate) async fn caller(name: String, shared: Arc<Shared>) -> turmoil::Result {
    let ip = turmoil::lookup(name.as_str());
    let cluster = Cluster::builder(name.clone())
        .advertise_ip(ip)
        .seeds(shared.seeds())
        .network(Arc::new(crate::net::SimNet))
        .start()
        .await?;
    cluster.wait_for(&[LedgerClient::SPEC, GreeterClient::SPEC], Duration::from_secs(30)).await?;
    let clients = Clients {
        ledger: LedgerClient::new(cluster.client(LedgerClient::SPEC)).with_timeout(DEADLINE),
        greeter: GreeterClient::new(cluster.client(GreeterClient::SPEC)).with_timeout(DEADLINE),
        gateway: (name == "c0").then(|| meshrpc::Gateway::new(cluster.clone()).router()),
    };
    shared.log(format!("{name} joined"));
    // Traffic through the faults.
    let end = shared.faults_end();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (clients, shared, name) = (clients.clone(), shared.clone(), name.clone());
        let mut rng = Rng::new(shared.config.seed ^ (u64::from(name.as_bytes()[1]) << 8) ^ w);
        workers.push(tokio::spawn(async move {
            while turmoil::sim_elapsed().unwrap_or_default() < end {
                let op = match rng.below(12) {
                    0..=2 => Op::Deposit,
                    3..=5 => Op::Look,
                    6..=7 => Op::Greet,
                    8..=9 if clients.gateway.is_some() => Op::Gateway { idempotent: rng.below(2) == 0 },
                    _ => Op::Stream { n: rng.between(1, 40) as u32 },
                };
                call(&shared, &clients, &name, op, false).await;
                tokio::time::sleep(Duration::from_millis(rng.between(1, 30))).await;
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    // Healing: within CONVERGENCE of the last fault, calls of every kind succeed again.
    let healed_by = end + CONVERGENCE;
    let mut ok_in_a_row = 0;
    let mut rng = Rng::new(shared.config.seed ^ 0x4ea1);
    while ok_in_a_row < 12 {
        if turmoil::sim_elapsed().unwrap_or_default() > healed_by {
            shared
                .violation(format!("{name}: calls still failing {} s after the faults stopped", CONVERGENCE.as_secs()));
            break;
        }
        let op = match ok_in_a_row % 6 {
            0 => Op::Deposit,
            1 => Op::Look,
            2 => Op::Greet,
            3 | 4 if clients.gateway.is_some() => Op::Gateway { idempotent: ok_in_a_row % 6 == 3 },
            _ => Op::Stream { n: rng.between(1, 10) as u32 },
        };
        if call(&shared, &clients, &name, op, true).await {
            ok_in_a_row += 1;
        } else {
            ok_in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    converged(&cluster, &shared, &name).await;
    if name == "c0" {
        connections_bounded(&shared);
    }
    // The run ends once every node saw the whole mesh again (or the bound passed).
    // (A node checks every 100 ms: past the bound, wait for its report.)
    while shared.converged.lock().unwrap().len() < shared.config.nodes
        && turmoil::sim_elapsed().unwrap_or_default() <= healed_by + Duration::from_millis(300)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One call, checked: it ends by its deadline (a hang is a violation), with an answer or
/// an error code; a stream's items come in order with no gap, or it ends with an error.
/// Returns true if it succeeded.
async fn call(shared: &Shared, clients: &Clients, who: &str, op: Op, healing: bool) -> bool {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    if matches!(op, Op::Deposit | Op::Gateway { idempotent: false }) {
        shared.deposits.lock().unwrap().push(id);
    }
    shared.calls.fetch_add(1, Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(DEADLINE + HANG, async {
        match op {
            Op::Deposit => clients.ledger.deposit(id).await.map_err(code),
            Op::Look => clients.ledger.look(id).await.map_err(code),
            Op::Greet => clients.greeter.greet(format!("{id}")).await.map_err(|e| format!("{e:?}")),
            Op::Stream { n } => stream(clients, n).await,
            Op::Gateway { idempotent } => {
                let gateway = clients.gateway.clone().expect("the gateway's caller");
                through_gateway(gateway, if idempotent { "look" } else { "deposit" }, id).await
            }
        }
    })
    .await;
    let took = start.elapsed();
    let phase = if healing { " (healing)" } else { "" };
    let ok = match outcome {
        Err(_) => {
            shared.violation(format!("{who} call {id} {op:?} hung: no end {} ms past its deadline", HANG.as_millis()));
            false
        }
        Ok(result) => {
            if took > DEADLINE + LATE {
                shared.violation(format!(
                    "{who} call {id} {op:?} ended {} ms after it started, past its deadline",
                    took.as_millis()
                ));
            }
            match result {
                Ok(by) => {
                    shared.log(format!("{who} call {id} {op:?} ok {by} in {} ms{phase}", took.as_millis()));
                    true
                }
                Err(why) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    shared.log(format!("{who} call {id} {op:?} failed {why} in {} ms{phase}", took.as_millis()));
                    if let Some(what) = why.strip_prefix("BROKEN ") {
                        shared.violation(format!("{who} call {id} {op:?}: {what}"));
                    }
                    false
                }
            }
        }
    };
    ok
}

/// A stream of `n` items: they must be 0, 1, … n-1, or end early with an error.
async fn stream(clients: &Clients, n: u32) -> Result<String, String> {
    let mut items = clients.ledger.count(n, 10).await.map_err(code)?;
    let mut next = 0;
    while let Some(item) = items.next().await {
        match item {
            Ok(i) if i == next => next += 1,
            Ok(i) => return Err(format!("BROKEN item {i} came where {next} was due")),
            Err(e) => return Err(format!("{} after {next} items", code(e))),
        }
    }
    if next == n {
        Ok(format!("{n} items"))
    } else {
        Err(format!("BROKEN the stream ended after {next} of {n} items with no error"))
    }
}

/// Connections a node holds are bounded: at most two to each peer either way (one, and a
/// stream lane), however many restarts and reconnections the faults caused.
fn connections_bounded(shared: &Shared) {
    let hosts = shared.config.nodes + shared.config.callers;
    let bound = 4 * (hosts - 1);
    let mut counts = Vec::new();
    for n in 0..shared.config.nodes {
        let host = format!("n{n}");
        let held = turmoil::established_tcp_stream_count_on(host.as_str());
        counts.push(held);
        if held > bound {
            shared.violation(format!("{host} holds {held} connections, over its bound of {bound}"));
        }
    }
    shared.log(format!("connections held by each node: {counts:?}"));
}

/// A ledger call as JSON over HTTP through the gateway, with the callers' deadline.
async fn through_gateway(gateway: axum::Router, method: &str, id: u64) -> Result<String, String> {
    use tower::ServiceExt;
    let request = axum::http::Request::post(format!("/ledger/{method}"))
        .header("content-type", "application/json")
        .header("meshrpc-timeout-ms", DEADLINE.as_millis().to_string())
        .body(axum::body::Body::from(format!("{{\"id\":{id}}}")))
        .expect("a request");
    let answer = gateway.oneshot(request).await.map_err(|e| format!("BROKEN the gateway failed: {e}"))?;
    let status = answer.status();
    let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.map_err(|e| format!("body: {e}"))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(format!("http {status} {body}"))
    } else if status.is_server_error() || [404, 422, 429, 499].contains(&status.as_u16()) {
        Err(format!("http {}", status.as_u16()))
    } else {
        Err(format!("BROKEN the gateway answered {status}: {body}"))
    }
}

/// The error's code, as a caller sees it.
fn code(e: LedgerError) -> String {
    match e {
        LedgerError::Faulty(node) => format!("faulty({node})"),
        LedgerError::Rpc(e) => e.code().to_owned(),
    }
}

/// Waits until `cluster` sees every node serving, at most until [`CONVERGENCE`] after the
/// faults stopped; a view still short then is a violation. Returns true if it converged.
pub(crate) async fn converged(cluster: &Cluster, shared: &Shared, who: &str) -> bool {
    let bound = shared.faults_end() + CONVERGENCE;
    loop {
        let members = cluster.members();
        let current = shared.incarnations.lock().unwrap().clone();
        let serving: Vec<String> = members
            .iter()
            .filter(|m| m.addr.is_some() && m.state == meshrpc::cluster::MemberState::Serving)
            .map(|m| {
                let stale = current.get(&m.name) != Some(&m.started_ms);
                format!("{}{}", m.name, if stale { "(stale)" } else { "" })
            })
            .collect();
        let now = turmoil::sim_elapsed().unwrap_or_default();
        if serving.len() == shared.config.nodes && serving.iter().all(|s| !s.ends_with("(stale)")) {
            shared.log(format!("{who} sees all {} nodes serving", serving.len()));
            return true;
        }
        if now > bound {
            let others: Vec<String> = members
                .iter()
                .filter(|m| !(m.addr.is_some() && m.state == meshrpc::cluster::MemberState::Serving))
                .map(|m| format!("{} {} {:?}", m.name, m.id, m.state))
                .collect();
            shared.violation(format!(
                "{who}: {} s after the faults stopped it sees {} of {} nodes serving: {serving:?}; others: {others:?}",
                CONVERGENCE.as_secs(),
                serving.len(),
                shared.config.nodes
            ));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
