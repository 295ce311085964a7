//! The mesh's golden metrics, gathered from every node over the mesh (each answers
//! `meshrpc.stats`) and turned into rates between two gatherings: what `meshrpc top`,
//! `meshrpc status` and the dashboard show. No extra server to run.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{Cluster, Member};
use crate::metrics::calls::{Direction, NodeStats, SeriesStats, LATENCY_BOUNDS};

/// Every node's figures at one moment.
#[derive(Debug, Clone)]
pub struct MeshSnapshot {
    /// When they were gathered.
    pub at: Instant,
    /// Each member, with its figures or why they could not be had.
    pub nodes: Vec<(Member, Result<NodeStats, crate::error::Error>)>,
}

/// A method's traffic across the cluster between two snapshots, as its servers saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodRates {
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// Calls ended per second.
    pub rps: f64,
    /// Share of them that succeeded (`ok`, or an application error: the service
    /// answered); `None` without calls.
    pub success_rate: Option<f64>,
    /// Latency percentiles in seconds (the upper bound of the histogram bucket that
    /// holds them); `None` without calls.
    pub p50: Option<f64>,
    /// See `p50`.
    pub p95: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// Calls ended between the snapshots.
    pub calls: u64,
}

/// Calls from one node to a service's replicas on another between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// The calling node's name.
    pub from: String,
    /// The called node's name.
    pub to: String,
    /// The service called.
    pub service: String,
    /// Calls per second.
    pub rps: f64,
    /// Share that succeeded; `None` without calls.
    pub success_rate: Option<f64>,
}

impl Cluster {
    /// Calls `meshrpc.<method>` (a method every node answers itself) on `member`, over
    /// this node's connection to it, within `timeout`.
    async fn ask_member<T: serde::de::DeserializeOwned>(
        &self,
        member: &Member,
        method: &'static str,
        args: serde_json::Value,
        timeout: Duration,
    ) -> Result<T, crate::error::Error> {
        let addr = member
            .addr
            .ok_or_else(|| crate::error::Error::unavailable(format!("{} has no mesh address", member.id)))?;
        let ask = async {
            let conn = self.inner.peers.get(addr).connection().await?;
            let payload = serde_json::to_vec(&args).unwrap_or_default();
            let mut call = crate::call::Call::new(crate::spec::NODE_SERVICE, method, payload.into());
            call.deadline = Some(crate::clock::now() + timeout);
            match conn.send_call(call)?.answer().await? {
                crate::call::Reply::Ok(bytes) => crate::codec::Codec::Json.decode(&bytes),
                _ => Err(crate::error::Error::Protocol {
                    message: format!("{} answered meshrpc.{method} with no value", member.id),
                }),
            }
        };
        tokio::time::timeout(timeout, ask).await.map_err(|_| crate::error::Error::Timeout)?
    }

    /// What `member` counted about the calls it served and made (its `meshrpc.stats`),
    /// over this node's connection to it; this node's own figures for itself.
    pub async fn node_stats(&self, member: &Member, timeout: Duration) -> Result<NodeStats, crate::error::Error> {
        if member.is_self {
            return Ok(crate::metrics::calls::node_stats());
        }
        self.ask_member(member, "stats", serde_json::json!({}), timeout).await
    }

    /// What `member` publishes as the JSON Schemas of `service` (`meshrpc.schema`); `None`
    /// when the service does not describe its types.
    pub async fn service_schemas(
        &self,
        member: &Member,
        service: &str,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>, crate::error::Error> {
        if member.is_self {
            return Ok(self.inner.registry.schemas(service));
        }
        self.ask_member(member, "schema", serde_json::json!({ "service": service }), timeout).await
    }

    /// The OpenAPI 3.1 document of every service in the cluster (one serving replica of
    /// each describes it; a replica that does not answer in `timeout` leaves its service
    /// with open schemas).
    pub async fn openapi(&self, timeout: Duration) -> serde_json::Value {
        let view = self.view();
        let mut docs = Vec::new();
        for status in self.services() {
            let Some(member) = view.replicas(&status.name, None).next() else { continue };
            let Some(advert) = member.services.get(&status.name) else { continue };
            let methods =
                advert.methods.iter().map(|m| (m.name.clone(), m.args.clone(), m.streams, m.items.is_some())).collect();
            let schemas = self.service_schemas(member, &status.name, timeout).await.ok().flatten();
            docs.push(crate::openapi::ServiceDoc { name: status.name.clone(), methods, schemas });
        }
        crate::openapi::document(&format!("meshrpc cluster `{}`", self.name()), &docs)
    }

    /// The gRPC shape of `service` (its messages, from the JSON Schemas one serving
    /// replica publishes; JSON text if it publishes none): what the gateway serves over
    /// gRPC and `meshrpc proto` writes.
    pub async fn grpc_shape(
        &self,
        service: &str,
        timeout: Duration,
    ) -> Result<crate::grpc::ServiceShape, crate::error::Error> {
        let view = self.view();
        let unknown = || crate::error::Error::UnknownService { service: service.into() };
        let member = view.replicas(service, None).next().ok_or_else(unknown)?;
        let advert = member.services.get(service).ok_or_else(unknown)?;
        let methods: Vec<crate::grpc::MethodNames> =
            advert.methods.iter().map(|m| (m.name.clone(), m.args.clone(), m.streams, m.items.is_some())).collect();
        let schemas = self
            .service_schemas(member, service, timeout)
            .await
            .map_err(|e| crate::error::Error::unavailable(format!("reading the schemas of `{service}`: {e}")))?;
        Ok(crate::grpc::ServiceShape::new(service, &methods, schemas.as_ref()))
    }

    /// Gathers every member's figures at once, each within `timeout` (a member that
    /// does not answer is reported as such, never waited for).
    pub async fn gather_stats(&self, timeout: Duration) -> MeshSnapshot {
        let members: Vec<Member> = self.members().into_iter().filter(|m| m.addr.is_some() || m.is_self).collect();
        let asks = members.iter().map(|m| self.node_stats(m, timeout));
        let results = futures_util::future::join_all(asks).await;
        MeshSnapshot { at: crate::clock::now(), nodes: members.into_iter().zip(results).collect() }
    }
}

/// One direction's series of every node. Inbound, only those of services the node
/// publishes: a gateway passing calls on is not their server.
fn series(snapshot: &MeshSnapshot, direction: Direction) -> impl Iterator<Item = (&Member, &SeriesStats)> {
    snapshot.nodes.iter().filter_map(|(m, s)| s.as_ref().ok().map(|s| (m, s))).flat_map(move |(m, s)| {
        s.series
            .iter()
            .filter(move |x| x.direction == direction)
            .filter(move |x| direction == Direction::Outbound || m.services.contains_key(&x.service))
            .map(move |x| (m, x))
    })
}

/// Calls, successes and latency buckets gained from `before` to `after`, per key.
fn deltas<K: Ord + Clone>(
    before: &MeshSnapshot,
    after: &MeshSnapshot,
    direction: Direction,
    key: impl Fn(&Member, &SeriesStats) -> K,
) -> BTreeMap<K, (u64, u64, Vec<u64>)> {
    let mut then: BTreeMap<(String, String, String, String), &SeriesStats> = BTreeMap::new();
    for (m, s) in series(before, direction) {
        then.insert((m.id.clone(), s.service.clone(), s.method.clone(), s.peer.clone()), s);
    }
    let mut out: BTreeMap<K, (u64, u64, Vec<u64>)> = BTreeMap::new();
    for (m, s) in series(after, direction) {
        let old = then.get(&(m.id.clone(), s.service.clone(), s.method.clone(), s.peer.clone()));
        let entry = out.entry(key(m, s)).or_insert_with(|| (0, 0, vec![0; LATENCY_BOUNDS.len() + 1]));
        entry.0 += s.calls().saturating_sub(old.map_or(0, |o| o.calls()));
        entry.1 += s.successes().saturating_sub(old.map_or(0, |o| o.successes()));
        for (i, n) in s.latency.iter().enumerate() {
            let was = old.and_then(|o| o.latency.get(i)).copied().unwrap_or(0);
            if let Some(slot) = entry.2.get_mut(i) {
                *slot += n.saturating_sub(was);
            }
        }
    }
    out
}

/// The upper bound (s) of the bucket holding the `q` quantile; `+Inf` as 2 × the last.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen as f64 >= q * total as f64 {
            return Some(LATENCY_BOUNDS.get(i).copied().unwrap_or(LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1] * 2.0));
        }
    }
    None
}

/// Each method's traffic between two snapshots, as the servers saw it (inbound).
pub fn method_rates(before: &MeshSnapshot, after: &MeshSnapshot) -> Vec<MethodRates> {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-3);
    deltas(before, after, Direction::Inbound, |_, s| (s.service.clone(), s.method.clone()))
        .into_iter()
        .map(|((service, method), (calls, ok, buckets))| MethodRates {
            service,
            method,
            rps: calls as f64 / seconds,
            success_rate: (calls > 0).then(|| ok as f64 / calls as f64),
            p50: quantile(&buckets, 0.5),
            p95: quantile(&buckets, 0.95),
            p99: quantile(&buckets, 0.99),
            calls,
        })
        .collect()
}

/// The calls between nodes between two snapshots, as the callers saw them (outbound).
pub fn edges(before: &MeshSnapshot, after: &MeshSnapshot) -> Vec<Edge> {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-3);
    deltas(before, after, Direction::Outbound, |m, s| (m.name.clone(), s.peer.clone(), s.service.clone()))
        .into_iter()
        .map(|((from, to, service), (calls, ok, _))| Edge {
            from,
            to,
            service,
            rps: calls as f64 / seconds,
            success_rate: (calls > 0).then(|| ok as f64 / calls as f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut buckets = vec![0; LATENCY_BOUNDS.len() + 1];
        buckets[0] = 90; // ≤ 100 µs
        buckets[5] = 9; // ≤ 5 ms
        buckets[LATENCY_BOUNDS.len()] = 1; // > 10 s
        assert_eq!(quantile(&buckets, 0.5), Some(0.0001));
        assert_eq!(quantile(&buckets, 0.95), Some(0.005));
        assert_eq!(quantile(&buckets, 0.999), Some(20.0));
        assert_eq!(quantile(&[0; 3], 0.5), None);
    }
}
