//! The live dashboard: `/dashboard` (one HTML page, embedded: it works offline) and
//! `/dashboard/events` (Server-Sent Events, one JSON snapshot a second): the nodes and
//! their states, the services each serves, the calls between nodes with their
//! requests/s, and each service's golden metrics, gathered from every node over the mesh.
//! One gathering a second serves every open dashboard: a mesh of N nodes costs N calls a
//! second however many watch it. It keeps going for [`LINGER`] after the last dashboard
//! closes, and remembers what a newly opened one should see at once: each service's
//! requests/s of the last two minutes, and the nodes that left without draining (a crash,
//! a `kill -9`, a stopped process), shown unreachable for [`LOST_FOR`] rather than
//! vanishing as if scaled down.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    routing::get,
    Router,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::{
    cluster::{edges, method_rates, Cluster, Edge, MemberState, MethodRates},
    http::error_response,
};

/// Dashboards open at once on one gateway (each holds a connection and a task).
pub(super) const MAX_DASHBOARDS: usize = 16;
/// How often a dashboard is told what changed.
const EVERY: Duration = Duration::from_secs(1);
/// How long a node may take to answer a gathering.
const NODE_TIMEOUT: Duration = Duration::from_millis(800);
/// How much chart history is kept (one value per gathering): two minutes.
const HISTORY: usize = 120;
/// How long a node that left without draining stays on the page, as unreachable: as long
/// as the charts show what it did.
pub(super) const LOST_FOR: Duration = Duration::from_secs(120);
/// How long the gathering goes on after the last dashboard closed (a reload, another tab
/// opened later, finds the history).
pub(super) const LINGER: Duration = Duration::from_secs(120);

const PAGE: &str = include_str!("dashboard.html");

struct Shared {
    cluster: Cluster,
    open: AtomicUsize,
    /// The latest snapshot (JSON), from the one gathering that serves every dashboard.
    latest: watch::Sender<Option<Arc<str>>>,
    /// Whether that gathering runs (it stops when the last dashboard closes).
    gathering: std::sync::Mutex<bool>,
}

/// The dashboard's routes over `cluster`: merge them into a gateway's router (the
/// gateway does), or serve them alone (`meshrpc dashboard --listen ADDR`).
pub(super) fn dashboard(cluster: Cluster) -> Router {
    let shared = Arc::new(Shared {
        cluster,
        open: AtomicUsize::new(0),
        latest: watch::Sender::new(None),
        gathering: std::sync::Mutex::new(false),
    });
    Router::new()
        .route("/dashboard", get(|| async { Html(PAGE) }))
        .route("/dashboard/events", get(events))
        .with_state(shared)
}

/// What a dashboard shows at one moment.
#[derive(Serialize)]
struct Snapshot {
    at_ms: u64,
    nodes: Vec<NodeView>,
    services: Vec<ServiceView>,
    methods: Vec<MethodRates>,
    edges: Vec<Edge>,
    /// Each service's requests/s, one value a second, the oldest first (two minutes at most).
    history: BTreeMap<String, Vec<f64>>,
}

#[derive(Serialize, Clone)]
struct NodeView {
    id: String,
    name: String,
    addr: Option<String>,
    state: MemberState,
    services: Vec<String>,
    /// Seconds until its certificate expires (mutual TLS).
    cert_expires_in_s: Option<i64>,
    /// Whether it answered the gathering.
    reachable: bool,
    /// Seconds since it left the mesh without draining (crashed, killed, stopped): shown
    /// unreachable for a while instead of vanishing. `None` for members.
    lost_s: Option<u64>,
}

#[derive(Serialize)]
struct ServiceView {
    name: String,
    replicas: usize,
    rps: f64,
    success_rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

async fn events(State(shared): State<Arc<Shared>>) -> Response {
    if shared.open.fetch_add(1, Ordering::AcqRel) >= MAX_DASHBOARDS {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        let message = format!("{MAX_DASHBOARDS} dashboards are open already");
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &message, None);
    }
    let mut latest = shared.latest.subscribe();
    {
        let mut running = shared.gathering.lock().unwrap();
        if !*running {
            *running = true;
            tokio::spawn(gather(shared.clone()));
        }
    }
    // One snapshot waits at most: a slow browser slows its own updates, nothing else.
    let (tx, rx) = mpsc::channel::<Event>(1);
    let open = Open(shared.clone());
    tokio::spawn(async move {
        let _open = open;
        // The snapshot other dashboards saw last, at once; then each new one.
        let mut now = latest.borrow_and_update().clone();
        loop {
            if let Some(data) = now.take() {
                if tx.send(Event::default().data(&*data)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                _ = tx.closed() => return, // the browser went away
            }
            now = latest.borrow_and_update().clone();
        }
    });
    let stream = Events(rx);
    ([(header::CACHE_CONTROL, "no-store")], Sse::new(stream).keep_alive(KeepAlive::default())).into_response()
}

/// Gathers every node's figures once a second while a dashboard is open, for all of them.
async fn gather(shared: Arc<Shared>) {
    let cluster = &shared.cluster;
    let mut before = cluster.gather_stats(NODE_TIMEOUT).await;
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    let mut memory = Memory::default();
    let mut idle_since = None;
    let mut view = cluster.view();
    loop {
        // Every change of the view between two gatherings counts: a node may drain and
        // leave within one second, and a scale-down must not look like a crash.
        tokio::select! {
            _ = tick.tick() => {}
            next = cluster.wait_view(|v| *v != *view) => {
                memory.saw(&next);
                view = next;
                continue;
            }
        }
        {
            // Under the lock a new dashboard takes to see whether this runs: none is left
            // waiting for a gathering that just stopped.
            let mut running = shared.gathering.lock().unwrap();
            if shared.open.load(Ordering::Acquire) > 0 {
                idle_since = None;
            } else if crate::clock::since(*idle_since.get_or_insert_with(crate::clock::now)) >= LINGER {
                *running = false;
                // The next dashboard, maybe hours from now, must not see this one's mesh.
                shared.latest.send_replace(None);
                return;
            }
        }
        let after = cluster.gather_stats(NODE_TIMEOUT).await;
        let mut now = snapshot(cluster, &before, &after);
        memory.update(&mut now, crate::clock::now());
        if let Ok(data) = serde_json::to_string(&now) {
            shared.latest.send_replace(Some(data.into()));
        }
        before = after;
    }
}

/// What the gathering remembers from one snapshot to the next.
#[derive(Default)]
struct Memory {
    /// The nodes of the last snapshot, by id.
    seen: HashMap<String, NodeView>,
    /// Nodes that left without draining, and when they were last seen.
    lost: Vec<(NodeView, Instant)>,
    /// Each service's requests/s, the oldest first.
    history: BTreeMap<String, VecDeque<f64>>,
    /// Nodes seen draining: when they leave, they left as they should.
    drained: std::collections::HashSet<String>,
}

impl Memory {
    /// Notes which members drain (the view changed).
    fn saw(&mut self, view: &crate::cluster::View) {
        let draining = view.members.iter().filter(|m| m.state == MemberState::Draining);
        self.drained.extend(draining.map(|m| m.id.clone()));
    }

    /// Adds to `snapshot` what a dashboard opened now should see: the nodes lost lately,
    /// and the charts' history.
    fn update(&mut self, snapshot: &mut Snapshot, now: Instant) {
        let present: HashMap<String, NodeView> = snapshot.nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
        // A node that was draining left as it should (a scale-down); any other went missing.
        // One that drained and left between two gatherings is shown draining this once: the
        // page says that it drained, not only that it is gone.
        let mut drained_between = Vec::new();
        for (id, mut node) in self.seen.drain() {
            let drained = self.drained.contains(&id) || node.state == MemberState::Draining;
            if present.contains_key(&id) {
                continue;
            }
            if !drained {
                self.lost.push((node, now));
            } else if node.state != MemberState::Draining {
                node.state = MemberState::Draining;
                drained_between.push(node);
            }
        }
        snapshot.nodes.extend(drained_between);
        self.lost.retain(|(node, since)| now.duration_since(*since) < LOST_FOR && !present.contains_key(&node.id));
        self.drained.retain(|id| present.contains_key(id));
        self.seen = present;
        for (node, since) in &self.lost {
            let mut node = node.clone();
            node.reachable = false;
            node.lost_s = Some(now.duration_since(*since).as_secs());
            snapshot.nodes.push(node);
        }
        // Services gone from the mesh lose their history; the others add a value.
        self.history.retain(|name, _| snapshot.services.iter().any(|s| s.name == *name));
        for service in &snapshot.services {
            let values = self.history.entry(service.name.clone()).or_default();
            values.push_back(service.rps);
            while values.len() > HISTORY {
                values.pop_front();
            }
        }
        snapshot.history = self.history.iter().map(|(name, v)| (name.clone(), v.iter().copied().collect())).collect();
    }
}

/// Counts a dashboard open until its task ends.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

fn snapshot(
    cluster: &Cluster,
    before: &crate::cluster::MeshSnapshot,
    after: &crate::cluster::MeshSnapshot,
) -> Snapshot {
    let now_s = crate::clock::wall().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let nodes: Vec<NodeView> = after
        .nodes
        .iter()
        .filter(|(m, _)| m.addr.is_some())
        .map(|(m, stats)| NodeView {
            id: m.id.clone(),
            name: m.name.clone(),
            addr: m.addr.map(|a| a.to_string()),
            state: m.state,
            services: m.services.keys().cloned().collect(),
            cert_expires_in_s: m.cert_not_after.map(|t| t as i64 - now_s),
            reachable: stats.is_ok(),
            lost_s: None,
        })
        .collect();
    let methods: Vec<MethodRates> =
        method_rates(before, after).into_iter().filter(|m| m.service != crate::spec::NODE_SERVICE).collect();
    let services = cluster
        .services()
        .into_iter()
        .map(|s| {
            let mine: Vec<&MethodRates> = methods.iter().filter(|m| m.service == s.name).collect();
            let calls: u64 = mine.iter().map(|m| m.calls).sum();
            let rps = mine.iter().map(|m| m.rps).sum();
            let ok: f64 = mine.iter().map(|m| m.success_rate.unwrap_or(0.0) * m.calls as f64).sum();
            // The busiest method's latency stands for the service.
            let busiest = mine.iter().max_by_key(|m| m.calls);
            ServiceView {
                replicas: s.versions.values().map(Vec::len).sum(),
                name: s.name,
                rps,
                success_rate: (calls > 0).then(|| ok / calls as f64),
                p50_ms: busiest.and_then(|m| m.p50).map(|s| s * 1e3),
                p99_ms: busiest.and_then(|m| m.p99).map(|s| s * 1e3),
            }
        })
        .collect();
    let edges = edges(before, after).into_iter().filter(|e| e.from != "meshrpc-cli").collect();
    let at_ms = crate::clock::wall_ms();
    Snapshot { at_ms, nodes, services, methods, edges, history: BTreeMap::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: MemberState) -> NodeView {
        NodeView {
            id: id.into(),
            name: "greeter".into(),
            addr: None,
            state,
            services: vec![],
            cert_expires_in_s: None,
            reachable: true,
            lost_s: None,
        }
    }

    fn snapshot(nodes: Vec<NodeView>) -> Snapshot {
        let services = vec![ServiceView {
            name: "greeter".into(),
            replicas: nodes.len(),
            rps: 1.0,
            success_rate: None,
            p50_ms: None,
            p99_ms: None,
        }];
        Snapshot { at_ms: 0, nodes, services, methods: vec![], edges: vec![], history: BTreeMap::new() }
    }

    #[test]
    fn a_node_gone_without_draining_stays_lost_for_a_while_and_a_drained_one_leaves() {
        let mut memory = Memory::default();
        let t0 = crate::clock::now();
        let both = || vec![node("a", MemberState::Serving), node("b", MemberState::Draining)];
        memory.update(&mut snapshot(both()), t0);
        // One more serving node drains and leaves between two gatherings: seen in the view.
        memory.update(&mut snapshot([both(), vec![node("c", MemberState::Serving)]].concat()), t0);
        let member = crate::cluster::Member::from_state("c", [("state", "draining")], false);
        memory.saw(&crate::cluster::View { members: vec![member] });
        let mut after = snapshot(vec![]);
        memory.update(&mut after, t0 + Duration::from_secs(1));
        let ids: Vec<(&str, bool, Option<u64>)> =
            after.nodes.iter().map(|n| (n.id.as_str(), n.reachable, n.lost_s)).collect();
        // c drained and left between the gatherings: shown draining once; b, shown
        // draining last time, is gone.
        assert_eq!(ids, [("c", true, None), ("a", false, Some(0))], "the draining one left; the other is lost");
        assert_eq!(after.nodes[0].state, MemberState::Draining);
        let mut later = snapshot(vec![]);
        memory.update(&mut later, t0 + Duration::from_secs(1) + LOST_FOR);
        assert!(later.nodes.is_empty(), "forgotten after LOST_FOR");
        assert_eq!(later.history["greeter"].len(), 4, "a value a gathering");
        for i in 0..HISTORY + 5 {
            memory.update(&mut snapshot(vec![]), t0 + LOST_FOR * 2 + Duration::from_secs(i as u64));
        }
        assert_eq!(memory.history["greeter"].len(), HISTORY);
    }
}
