//! What a node does for callers that do not know the mesh.
//!
//! A plain client connected to any node reaches every service: a call of a service the
//! node does not publish is forwarded, one hop, to a replica through the node's picker
//! ([`Forward`]) — as the node itself (its certificate), after the node's own policy
//! admitted the caller.
//!
//! Callers that do not gossip. An identity that may only call (the CLI, tools: a
//! certificate issued with `meshrpc cert issue --caller`) holds no gossip key, so it
//! cannot join gossip; it follows the view of a node it reaches over the mesh instead
//! (`meshrpc.view`), and hands the rules it writes to that node (`meshrpc.rule`). What it
//! sees and does is otherwise what a gossiping caller sees and does: the same picker,
//! direct connections to the replicas it calls.
//!
//! Method lists. Gossip names a service's method list by key only; members fetch the list
//! from a node that advertises it (`meshrpc.methods`, [`fetch_method_lists`]).
//!
//! Where a node's policies stand (`meshrpc.policies`) is asked the same way, by
//! `meshrpc status`, instead of riding in gossip.
//!
//! The four methods are answered by every node of a cluster ([`NodeMethods`]); any
//! certificate of the cluster may call them (membership is no secret inside the cluster,
//! a rule is checked on its own merits, whoever hands it over, and a method list against
//! its key).

use std::{
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    gossip::methods::{Learned, ListKey, Wanted},
    gossip::rules::{RejectedRule, RuleKind},
    gossip::{Member, Split},
    Inner, View,
};
use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    error::Error,
};

/// How often a caller asks for the view again.
const REFRESH: Duration = Duration::from_millis(500);
/// How long one ask may take before the next node is tried.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `meshrpc.view` answers.
#[derive(Debug, Serialize, Deserialize)]
struct SharedView {
    /// The node's view (`is_self` marks the node itself).
    members: Vec<Member>,
    /// Rule writes the node refused lately.
    rejected_rules: Vec<RejectedRule>,
}

/// What `meshrpc.rule` takes: a signed rule, encoded as gossip carries it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ProposedRule {
    pub(super) kind: RuleKind,
    pub(super) service: String,
    pub(super) rule: String,
}

/// The node methods the cluster adds to every node: `view`, `rule`, `methods` and
/// `policies` (where its resilience policies stand, for `meshrpc status`).
pub(super) struct NodeMethods {
    pub(super) inner: Weak<Inner>,
}

impl Dispatch for NodeMethods {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let inner = inner.upgrade().ok_or_else(|| Error::unavailable("the node is stopping"))?;
            match &*call.method {
                "view" => {
                    let shared = SharedView {
                        members: inner.membership.view().members.clone(),
                        rejected_rules: inner.rules.refused(),
                    };
                    call.codec.encode(&shared).map(Reply::Ok)
                }
                "rule" => {
                    let proposed: ProposedRule = call.codec.decode_args(&call.payload)?;
                    let rule = Split::decode(&proposed.rule)
                        .ok_or_else(|| Error::bad_request(format!("`{}` is not a rule", proposed.rule)))?;
                    // Only rules for services that exist, and newer than the one in force: a
                    // caller cannot grow every node's gossip with invented names, nor bring
                    // back a rule that a newer one replaced.
                    let view = inner.membership.view();
                    if !view.knows(&proposed.service) {
                        return Err(Error::UnknownService { service: proposed.service });
                    }
                    let newest = match proposed.kind {
                        RuleKind::Split => view.newest_split(&proposed.service),
                        RuleKind::Mirror => view.newest_mirror(&proposed.service),
                    };
                    if newest.is_some_and(|n| n.order() >= rule.order()) {
                        return Err(Error::bad_request("a newer rule is in force: write it again"));
                    }
                    let accepted = super::traffic::accept_rule(&inner, proposed.kind, &proposed.service, rule).await?;
                    call.codec.encode(&accepted.set_by).map(Reply::Ok)
                }
                "policies" => call.codec.encode(&super::Cluster { inner }.policies()).map(Reply::Ok),
                "methods" => {
                    let key: ListKey = call.codec.decode_args(&call.payload)?;
                    let text = inner.membership.book.text(&key).ok_or_else(|| {
                        Error::unavailable(format!(
                            "no method list of `{}` under {} #{} here",
                            key.service, key.fingerprint, key.digest
                        ))
                    })?;
                    call.codec.encode(&*text).map(Reply::Ok)
                }
                other => {
                    Err(Error::UnknownMethod { service: crate::spec::NODE_SERVICE.into(), method: other.to_owned() })
                }
            }
        })
    }

    fn has_method(&self, _service: &str, method: &str) -> Option<bool> {
        Some(matches!(method, "view" | "rule" | "methods" | "policies"))
    }
}

/// Metadata marking a call a node forwarded: the next node answers it or fails it, and
/// never forwards it again.
pub(super) const FORWARDED: &str = "meshrpc-forwarded-by";

/// Sends calls of services this node does not publish to one of their replicas.
pub(super) struct Forward {
    pub(super) inner: Weak<Inner>,
}

impl Dispatch for Forward {
    fn dispatch(&self, mut call: Call) -> BoxFuture<Result<Reply, Error>> {
        let unknown = |call: Call| {
            Box::pin(std::future::ready(Err(Error::UnknownService { service: call.service.into_owned() })))
        };
        let Some(inner) = self.inner.upgrade() else { return unknown(call) };
        if call.metadata.get(FORWARDED).is_some() || !inner.membership.view().knows(&call.service) {
            return unknown(call);
        }
        // The call goes on as this node's. With mutual TLS, a node forwards only under a
        // policy of its own, which admitted the caller already: otherwise any certificate
        // of the cluster could reach, as this node, what the replicas' policies refuse it.
        #[cfg(feature = "tls")]
        if inner.tls.is_some() && inner.access.is_none() {
            tracing::debug!(service = %call.service, "not forwarded: mutual TLS without a policy on this node");
            return unknown(call);
        }
        // Forwarded calls take a place under the node's concurrency limit, as its own do.
        let permit = match inner.limiter.as_ref().map(|l| l.admit(&call.service, &call.method, call.deadline.is_none()))
        {
            Some(Err(e)) => return Box::pin(std::future::ready(Err(e))),
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        call.metadata.insert(FORWARDED, inner.name.clone());
        call.peer = None;
        Box::pin(async move {
            let answer = inner.call(call, None, None).await;
            drop(permit);
            answer
        })
    }

    /// A replica has it (calls of methods that do not exist take no metrics series).
    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        Some(self.inner.upgrade()?.membership.view().has_method(service, method))
    }
}

/// Keeps `view` current from the nodes this caller reaches: its seeds (names looked up
/// again each time), then the serving members it learnt of. `me` is this caller.
pub(super) async fn follow(inner: Weak<Inner>, seeds: Vec<String>, view: watch::Sender<Arc<View>>, me: Member) {
    let mut known: Vec<SocketAddr> = Vec::new();
    loop {
        let mut candidates = Vec::new();
        for seed in &seeds {
            if let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await {
                candidates.extend(addrs);
            }
        }
        candidates.extend(known.iter().copied());
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|addr| seen.insert(*addr));
        let Some(node) = inner.upgrade() else { return };
        for addr in candidates {
            let Ok(Ok(shared)) = tokio::time::timeout(ASK_TIMEOUT, ask_view(&node, addr)).await else { continue };
            known = shared
                .members
                .iter()
                .filter(|m| m.state == super::MemberState::Serving)
                .filter_map(|m| m.addr)
                .collect();
            node.rules.heard(shared.rejected_rules);
            let mut members: Vec<Member> = shared.members;
            for m in &mut members {
                m.is_self = false;
            }
            // The node vouches for its view, but not for its rules: checked here too.
            node.rules.filter(&mut members);
            members.push(me.clone());
            members.sort_by(|a, b| a.id.cmp(&b.id));
            let next = View { members };
            view.send_if_modified(|current| {
                let changed = **current != next;
                if changed {
                    *current = Arc::new(next);
                }
                changed
            });
            break;
        }
        drop(node);
        tokio::time::sleep(REFRESH).await;
    }
}

async fn ask_view(inner: &Inner, addr: SocketAddr) -> Result<SharedView, Error> {
    let call = Call::new(crate::spec::NODE_SERVICE, "view", bytes::Bytes::from_static(b"{}"));
    let codec = call.codec;
    match inner.peers.get(addr).connection().await?.send_call(call)?.answer().await? {
        Reply::Ok(body) => codec.decode(&body),
        _ => Err(Error::protocol("`meshrpc.view` answered with something else than a view")),
    }
}

/// Most method lists fetched at once.
const FETCHES_AT_ONCE: usize = 4;
/// Members asked for one list in one round (the next round comes after a pause).
const ASKED_A_ROUND: usize = 3;

/// Fetches the method lists the book wants, each from the members that advertise it in
/// turn, until one answers with the list of that key: members this node is connected to
/// first, then the others from a random place (so the
/// members of a large mesh do not all ask the same one), each over a connection that is
/// not kept.
pub(super) async fn fetch_method_lists(inner: Weak<Inner>, mut wanted: tokio::sync::mpsc::Receiver<Wanted>) {
    let room = Arc::new(tokio::sync::Semaphore::new(FETCHES_AT_ONCE));
    while let Some(Wanted { key, from }) = wanted.recv().await {
        let Ok(place) = room.clone().acquire_owned().await else { return };
        let Some(node) = inner.upgrade() else { return };
        tokio::spawn(async move {
            let book = node.membership.book.clone();
            let mut from = from;
            let start = crate::clock::entropy(|| {
                std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), &key)
            });
            let len = from.len().max(1);
            from.rotate_left(start as usize % len);
            from.sort_by_key(|addr| node.peers.connected(*addr).is_none());
            let mut why = String::new();
            for addr in from.into_iter().take(ASKED_A_ROUND) {
                let answer = tokio::time::timeout(ASK_TIMEOUT, ask_methods(&node, addr, &key)).await;
                match answer.map(|asked| asked.map(|text| book.learn(key.clone(), &text))) {
                    Ok(Ok(Learned::Taken)) => return drop(place),
                    Ok(Ok(Learned::NoRoom)) => {
                        why = "this node's book of method lists is full".into();
                        tracing::warn!(service = %key.service, "method list not kept: the book of method lists is full");
                        break;
                    }
                    Ok(Ok(Learned::Rejected)) => {
                        why = format!("{addr} answered a list that is not the one its key names");
                        tracing::warn!(service = %key.service, %addr, "a method list that is not the one its key names: ignored")
                    }
                    Ok(Err(e)) => {
                        why = format!("{addr}: {e}");
                        tracing::debug!(service = %key.service, %addr, error = %e, "method list not fetched")
                    }
                    Err(_) => {
                        why = format!("{addr}: no answer within {ASK_TIMEOUT:?}");
                        tracing::debug!(service = %key.service, %addr, "method list not fetched in time")
                    }
                }
            }
            let pause = book.failed(&key, why);
            drop((place, node));
            // The view is built again after the pause, and asks again.
            tokio::time::sleep(pause).await;
            book.changed.notify_one();
        });
    }
}

async fn ask_methods(inner: &Inner, addr: SocketAddr, key: &ListKey) -> Result<String, Error> {
    let payload = bytes::Bytes::from(serde_json::to_vec(key).map_err(|e| Error::internal(e.to_string()))?);
    let mut call = Call::new(crate::spec::NODE_SERVICE, "methods", payload);
    call.deadline = Some(crate::clock::now() + ASK_TIMEOUT);
    let codec = call.codec;
    let conn = inner.peers.once(addr).await?;
    // With mutual TLS, only a node whose certificate proves the service answers for it.
    if conn.peer_identity().is_some_and(|id| !id.proves(&key.service)) {
        return Err(Error::unavailable(format!("{addr}'s certificate does not prove `{}`", key.service)));
    }
    match conn.send_call(call)?.answer().await? {
        Reply::Ok(body) => codec.decode(&body),
        _ => Err(Error::protocol("`meshrpc.methods` answered with something else than a method list")),
    }
}
