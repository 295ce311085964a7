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
    Stream { n: u32 },
}

#[derive(Clone)]
struct Clients {
    ledger: LedgerClient,
    greeter: GreeterClient,
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
                let op = match rng.below(10) {
                    0..=2 => Op::Deposit,
                    3..=5 => Op::Look,
                    6..=7 => Op::Greet,
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
        let op = match ok_in_a_row % 4 {
            0 => Op::Deposit,
            1 => Op::Look,
            2 => Op::Greet,
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
    if op == Op::Deposit {
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
            shared.violation(format!(
                "{who}: {} s after the faults stopped it sees {} of {} nodes serving: {serving:?}",
                CONVERGENCE.as_secs(),
                serving.len(),
                shared.config.nodes
            ));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
