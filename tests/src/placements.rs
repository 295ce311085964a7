//! One test body, three placements of a [`meshrpc::app::App`]: (a) one process, one node
//! publishing every service (calls between services take the colocated path); (b) one
//! process, one node per service over real sockets on loopback (serialisation and the
//! mesh, without process boundaries); (c) one OS process per service, from the app's own
//! binary (any binary whose main is [`App::run_from_env`] or honours the same variables).

use std::{future::Future, time::Duration, time::Instant};

use meshrpc::{app::App, Cluster, ClusterBuilder};

use crate::harness::Node;

/// How long every node may take to reach the services it calls.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Where the app's services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// One process, one node publishing everything: calls between services stay in process.
    OneNode,
    /// One process, one node per service: every call between services crosses the mesh.
    NodePerService,
    /// One OS process per service.
    ProcessPerService,
}

impl Placed {
    /// All three, in the order [`three_placements`] runs them.
    pub const ALL: [Placed; 3] = [Placed::OneNode, Placed::NodePerService, Placed::ProcessPerService];
}

/// What runs an app in one placement; stopping it (drop) kills its processes.
pub struct Running {
    /// A node the test calls through: the app's own node in [`Placed::OneNode`], else a
    /// client-only node joined to the app.
    pub caller: Cluster,
    nodes: Vec<Cluster>,
    /// The app's processes ([`Placed::ProcessPerService`]).
    pub processes: Vec<Node>,
    file: Option<std::path::PathBuf>,
}

impl Running {
    /// Drains the in-process nodes (all at once) and kills the processes.
    pub async fn stop(mut self) {
        let drains: Vec<_> =
            self.nodes.drain(..).map(|node| tokio::spawn(async move { node.shutdown().await })).collect();
        for drain in drains {
            drain.await.unwrap();
        }
        for process in &mut self.processes {
            process.kill().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A node of the app in this process: tag `tag`, a free port on loopback.
fn node(tag: &str) -> ClusterBuilder {
    Cluster::builder("app").tag(tag).listen("127.0.0.1:0")
}

/// A client-only node that joins the app through `seed`.
async fn caller(tag: &str, seed: std::net::SocketAddr) -> Cluster {
    Cluster::builder("caller").tag(tag).seeds([seed.to_string()]).start().await.expect("the caller joins")
}

/// Starts `app` as `placed` (cluster tag `tag`), every node ready: each reaches the
/// services its group calls. `binary` runs one group of a placement file per process.
pub async fn start(app: &App, placed: Placed, binary: &str, tag: &str) -> Running {
    match placed {
        Placed::OneNode => {
            let placement = app.one_group();
            let node = app.start_group(&placement, 0, node(tag)).await.expect("the node starts");
            let serving = node.clone();
            tokio::spawn(async move { serving.serve().await });
            app.wait_ready(&placement, 0, &node, READY_WITHIN).await.expect("the node is ready");
            Running { caller: node.clone(), nodes: vec![node], processes: Vec::new(), file: None }
        }
        Placed::NodePerService => {
            let placement = app.group_each();
            let nodes = app.start_all(&placement, || node(tag)).await.expect("the nodes start");
            for node in &nodes {
                let node = node.clone();
                tokio::spawn(async move { node.serve().await });
            }
            app.wait_all_ready(&placement, &nodes, READY_WITHIN).await.expect("every node ready");
            let caller = caller(tag, nodes[0].local_addr().unwrap()).await;
            Running { caller, nodes, processes: Vec::new(), file: None }
        }
        Placed::ProcessPerService => {
            let placement = app.group_each();
            let file = std::env::temp_dir().join(format!("{tag}-placement.toml"));
            std::fs::write(&file, placement.to_string()).unwrap();
            let path = file.to_str().unwrap().to_owned();
            let mut processes: Vec<Node> = Vec::new();
            for (group, services) in placement.groups().iter().enumerate() {
                let group = group.to_string();
                let seed = processes.first().map(|first| first.addr.to_string());
                let mut env = vec![
                    ("MESHRPC_PLACEMENT", path.as_str()),
                    ("MESHRPC_PLACEMENT_GROUP", group.as_str()),
                    ("MESHRPC_LISTEN_ADDR", "127.0.0.1:0"),
                    ("MESHRPC_CLUSTER_TAGNAME", tag),
                ];
                // The first joins nobody; the others join through it.
                if let Some(seed) = &seed {
                    env.push(("MESHRPC_CLUSTER_NODES", seed.as_str()));
                }
                let process = Node::start_env(binary, &[], &env).await;
                // Each process says what it serves: its own group.
                let said = format!("{} serves {}", process.addr, services.join(", "));
                assert!(process.output().contains(&said), "{said:?} not in {:?}", process.output());
                processes.push(process);
            }
            for process in &processes {
                let ready = process.line("ready", READY_WITHIN).await;
                assert!(ready.is_some(), "{} not ready in {READY_WITHIN:?}: {:?}", process.addr, process.output());
            }
            let caller = caller(tag, processes[0].addr).await;
            Running { caller, nodes: Vec::new(), processes, file: Some(file) }
        }
    }
}

/// Runs `body` against `app` in each of the three placements in turn (each within
/// `within`), with a node to call through; `tag` names this test's clusters.
pub async fn three_placements<F, Fut>(app: &App, binary: &str, tag: &str, within: Duration, body: F)
where
    F: Fn(Placed, Cluster) -> Fut,
    Fut: Future<Output = ()>,
{
    for placed in Placed::ALL {
        let started = Instant::now();
        let tag = format!("{tag}-{placed:?}-{}", std::process::id());
        let running = start(app, placed, binary, &tag).await;
        let ready = started.elapsed();
        tokio::time::timeout(within, body(placed, running.caller.clone()))
            .await
            .unwrap_or_else(|_| panic!("{placed:?}: the body did not finish in {within:?}"));
        eprintln!("{placed:?}: ready after {ready:?}, body {:?}", started.elapsed() - ready);
        running.stop().await;
    }
}
