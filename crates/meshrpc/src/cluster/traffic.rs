//! Traffic management: which version of a service a call goes to. A pinned call goes to
//! its version only; otherwise the service's split rule (`v1=90 v2=10`), newest first,
//! chooses a version by weight among those with a replica left to try; without a rule,
//! any replica. Rules are set at runtime and spread by gossip: every node passes on the
//! newest rule it saw, so a rule outlives the node (or the CLI) that set it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use super::{
    gossip::rules::{RejectedRule, RuleKind},
    gossip::Split,
    Cluster, Inner, Member, View,
};
use crate::{
    call::{Call, Reply},
    error::Error,
};

/// The replicas a call may go to: those of its pinned version, or of the version its
/// service's split rule chose for it (by `key` when sticky, so a key stays within one
/// version), skipping those already `tried`.
pub(super) fn versioned<'v>(
    inner: &Inner,
    view: &'v View,
    service: &str,
    replicas: impl Iterator<Item = &'v Member>,
    tried: &[SocketAddr],
    pin: Option<&str>,
    key: Option<&str>,
) -> Result<Vec<&'v Member>, Error> {
    let replicas: Vec<&Member> = replicas.filter(|m| m.addr.is_some_and(|a| !tried.contains(&a))).collect();
    let version_of = |m: &'v Member| m.services.get(service).map_or("", |s| s.version.as_str());
    if let Some(pin) = pin {
        let pinned: Vec<&Member> = replicas.into_iter().filter(|m| version_of(m) == pin).collect();
        if pinned.is_empty() {
            return Err(Error::unavailable(format!("no replica of `{service}` runs version `{pin}`")));
        }
        return Ok(pinned);
    }
    let Some(split) = view.split(service) else { return Ok(replicas) };
    match choose(inner, split, &replicas, version_of, key) {
        Some(chosen) => Ok(replicas.into_iter().filter(|m| version_of(m) == chosen).collect()),
        None => Ok(replicas), // no version of the rule is up: any replica beats none
    }
}

/// The key of the application split: the rule that chooses a version for whole requests
/// at the front door (`meshrpc split --app v1=90 v2=10`).
pub const APP_SPLIT: &str = "*";

/// The version a call that enters the application goes to, when an application split is
/// in force: chosen by its weights among the versions with a replica of `service` (by
/// `key` when sticky). The call is pinned to it, and so is every call made while serving
/// it: the request meets one version end to end.
pub(super) fn entry_version<'v>(
    inner: &Inner,
    view: &'v View,
    service: &str,
    replicas: impl Iterator<Item = &'v Member>,
    key: Option<&str>,
) -> Option<Arc<str>> {
    let split = view.split(APP_SPLIT)?;
    let replicas: Vec<&Member> = replicas.collect();
    let version_of = |m: &'v Member| m.services.get(service).map_or("", |s| s.version.as_str());
    choose(inner, split, &replicas, version_of, key).map(Arc::from)
}

/// A version of `split` by weight, among those with one of `replicas` (whose shares the
/// others take); `None` when none has.
fn choose<'s, 'v>(
    inner: &Inner,
    split: &'s Split,
    replicas: &[&'v Member],
    version_of: impl Fn(&'v Member) -> &'v str,
    key: Option<&str>,
) -> Option<&'s str> {
    let live: Vec<(&str, u32)> = split
        .weights
        .iter()
        .filter(|(v, w)| *w > 0 && replicas.iter().any(|m| version_of(m) == *v))
        .map(|(v, w)| (v.as_str(), *w))
        .collect();
    let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut at = match key {
        Some(key) => fnv(key.as_bytes()) % total,
        None => inner.traffic.random() % total,
    };
    let chosen = live.iter().find(|(_, w)| {
        let hit = at < u64::from(*w);
        at = at.saturating_sub(u64::from(*w));
        hit
    });
    Some(chosen.map_or(live[0].0, |(v, _)| v))
}

/// Whether a node's calls to services it publishes itself go straight to their
/// implementation, in process: no encoding, no socket (the colocated fast path). Its
/// deadline, cancellation and request log still apply; server layers and the access
/// policy do not (the caller is the node itself), and neither does the wire's check that
/// values encode (a NaN crosses where JSON would refuse it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colocated {
    /// In process whenever this node serves the service, unless a split rule or a pinned
    /// version routes the call (then the picker decides, as for any call).
    #[default]
    Prefer,
    /// This node is one replica among the others: the picker decides every call
    /// (counting this node as loaded as the others on average), and a call it gives this
    /// node skips the socket but is encoded (it goes through the node's own dispatch,
    /// layers included).
    Share,
    /// Never: calls to this node go through encoding like calls to any other.
    Off,
}

/// What traffic management keeps per node: randomness for weighted choices, and which
/// services have a split rule (read on every colocated call).
#[derive(Debug)]
pub(super) struct Traffic {
    rng: AtomicU64,
    any_split: std::sync::atomic::AtomicBool,
    split_services: std::sync::RwLock<Vec<String>>,
    any_mirror: std::sync::atomic::AtomicBool,
}

impl Default for Traffic {
    fn default() -> Self {
        let seed = crate::clock::entropy(crate::clock::wall_ns);
        Traffic {
            rng: AtomicU64::new(seed),
            any_split: Default::default(),
            split_services: Default::default(),
            any_mirror: Default::default(),
        }
    }
}

impl Traffic {
    /// True if an application split is in force (calls that enter the application are
    /// pinned to the version it chooses).
    pub(super) fn app_split(&self) -> bool {
        self.split(APP_SPLIT)
    }

    /// True if `service` has a split rule in force.
    pub(super) fn split(&self, service: &str) -> bool {
        self.any_split.load(Ordering::Acquire) && self.split_services.read().unwrap().iter().any(|s| s == service)
    }

    fn note_rules(&self, view: &View) {
        let services: Vec<String> =
            view.split_services().into_iter().filter(|s| view.split(s).is_some()).map(str::to_owned).collect();
        self.any_split.store(!services.is_empty(), Ordering::Release);
        *self.split_services.write().unwrap() = services;
        let mirrors = view.mirror_services().into_iter().any(|s| view.mirror(s).is_some());
        self.any_mirror.store(mirrors, Ordering::Release);
    }

    pub(super) fn random(&self) -> u64 {
        // splitmix64 over an atomic counter, as the balancer's.
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// FNV-1a, 64-bit: a stable hash of a sticky key.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl Cluster {
    /// Sets the split rule of `service` cluster-wide: its calls go to its versions by
    /// these weights (`[("v1", 90), ("v2", 10)]`). The newest rule wins; it spreads by
    /// gossip within a few rounds and outlives this node. With mutual TLS the rule is
    /// signed with this node's key, and `permission_denied` if this node's identity may
    /// not write it (docs/security.md).
    pub async fn set_split(&self, service: &str, weights: Vec<(String, u32)>) -> Result<Split, Error> {
        self.write_rule(RuleKind::Split, service, weights).await
    }

    /// Clears the split rule of `service`: its calls go to any replica again.
    pub async fn clear_split(&self, service: &str) -> Result<Split, Error> {
        self.write_rule(RuleKind::Split, service, Vec::new()).await
    }

    /// Mirrors `percent` of the calls of `service`'s idempotent methods to replicas
    /// running `version` (their answers are compared with the real ones and dropped);
    /// `None` clears the rule. Spread, kept and checked as split rules are.
    pub async fn set_mirror(&self, service: &str, to: Option<(String, u32)>) -> Result<Split, Error> {
        self.write_rule(RuleKind::Mirror, service, to.into_iter().collect()).await
    }

    /// What mirroring did from this process: calls mirrored, and of their answers how
    /// many were the same as the real one, different, or failed.
    pub fn mirror_stats(&self) -> MirrorStats {
        MirrorStats::now()
    }

    /// Rule writes this node refused lately (with mutual TLS: unsigned, signed by a
    /// certificate of another cluster, or by an identity the policy does not allow).
    pub fn rejected_rules(&self) -> Vec<RejectedRule> {
        self.inner.rules.refused()
    }

    /// Writes a rule: signed (mutual TLS), checked as every reader will check it, then
    /// gossiped by this node — or, from a caller that does not gossip its own rules (a
    /// client-only node with mutual TLS), handed to a serving node that checks and gossips
    /// it.
    async fn write_rule(&self, kind: RuleKind, service: &str, weights: Vec<(String, u32)>) -> Result<Split, Error> {
        let view = self.view();
        let seen = match kind {
            RuleKind::Split => view.newest_split(service),
            RuleKind::Mirror => view.newest_mirror(service),
        };
        let mut rule = self.new_rule(seen, weights);
        self.inner.rules.sign(kind, service, &mut rule)?;
        if self.inner.mesh_addr.is_none() && self.inner.rules.signed() {
            return self.propose(kind, service, rule).await;
        }
        accept_rule(&self.inner, kind, service, rule).await
    }

    /// A rule newer than any seen, even if this node's clock is behind.
    fn new_rule(&self, seen: Option<&Split>, weights: Vec<(String, u32)>) -> Split {
        let seen = seen.map_or(0, |s| s.set_ms);
        let now = crate::clock::wall_ms();
        Split { set_ms: now.max(seen.saturating_add(1)), set_by: self.inner.name.clone(), weights, proof: None }
    }

    /// Hands a signed rule to a serving node (`meshrpc.rule`), which checks it as every
    /// reader will and gossips it: the rule outlives this caller.
    async fn propose(&self, kind: RuleKind, service: &str, rule: Split) -> Result<Split, Error> {
        let args = serde_json::json!({ "kind": kind, "service": service, "rule": rule.encode() });
        let payload = bytes::Bytes::from(serde_json::to_vec(&args).expect("JSON"));
        // The seeds first (the nodes the user named), then any serving member.
        let mut nodes = Vec::new();
        for seed in &self.inner.seeds {
            nodes.extend(tokio::net::lookup_host(seed.as_str()).await.into_iter().flatten());
        }
        let view = self.view();
        let serving = view.members.iter().filter(|m| !m.is_self && m.state == super::MemberState::Serving);
        nodes.extend(serving.filter_map(|m| m.addr));
        let mut seen = std::collections::HashSet::new();
        nodes.retain(|addr| seen.insert(*addr));
        let mut last = Error::unavailable("no serving node to hand the rule to");
        for addr in nodes {
            let mut call = Call::new(crate::spec::NODE_SERVICE, "rule", payload.clone());
            call.deadline = Some(crate::clock::now() + Duration::from_secs(5));
            let answer = async { self.inner.peers.get(addr).connection().await?.send_call(call)?.answer().await };
            match answer.await {
                Ok(Reply::Ok(set_by)) => {
                    let set_by: String = serde_json::from_slice(&set_by).unwrap_or_default();
                    return Ok(Split { set_by, ..rule });
                }
                Ok(_) => last = Error::protocol("`meshrpc.rule` answered with something else than a setter"),
                Err(e @ (Error::PermissionDenied { .. } | Error::BadRequest { .. })) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sets the split rule of `service` and waits until another member passes it on (so
    /// it outlives this node: what a short-lived setter such as the CLI needs), writing it
    /// again as a newer rule when none did within a few seconds; up to 12 s in all. Empty
    /// `weights` clear the rule. A caller that hands its rules to a node is done once the
    /// node took it.
    pub async fn spread_split(&self, service: &str, weights: Vec<(String, u32)>) -> Result<Split, Error> {
        self.spread(RuleKind::Split, service, weights).await
    }

    /// As [`spread_split`](Self::spread_split), for a mirror rule (`None`: clear it).
    pub async fn spread_mirror(&self, service: &str, to: Option<(String, u32)>) -> Result<Split, Error> {
        self.spread(RuleKind::Mirror, service, to.into_iter().collect()).await
    }

    async fn spread(&self, kind: RuleKind, service: &str, weights: Vec<(String, u32)>) -> Result<Split, Error> {
        let proposes = self.inner.mesh_addr.is_none() && self.inner.rules.signed();
        for _ in 0..4 {
            let rule = self.write_rule(kind, service, weights.clone()).await?;
            if proposes || self.rule_spread(service, &rule, Duration::from_secs(3)).await {
                return Ok(rule);
            }
        }
        Err(Error::unavailable("no node passed the rule on within 12 s: it was not applied"))
    }

    /// Waits until another member passes on `rule` (a split or mirror rule of `service`,
    /// so it outlives this node), up to `within`; `false` if none did.
    pub async fn rule_spread(&self, service: &str, rule: &Split, within: Duration) -> bool {
        let mut watch = self.inner.membership.watch();
        let spread = async {
            loop {
                let passed_on = watch.borrow_and_update().members.iter().any(|m| {
                    !m.is_self && (m.splits.get(service) == Some(rule) || m.mirrors.get(service) == Some(rule))
                });
                if passed_on {
                    return;
                }
                if watch.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        tokio::time::timeout(within, spread).await.is_ok()
    }
}

/// Checks a rule as every reader will (its signature, and whether its writer may
/// write it), then gossips it as this node's copy: `permission_denied` if refused.
pub(super) async fn accept_rule(inner: &Inner, kind: RuleKind, service: &str, mut rule: Split) -> Result<Split, Error> {
    rule.set_by = inner
        .rules
        .check(kind, service, &rule)
        .map_err(|why| Error::PermissionDenied { message: format!("rule:{}/{service}: {why}", kind.as_str()) })?;
    match kind {
        RuleKind::Split => inner.membership.advertise_split(service, &rule).await,
        RuleKind::Mirror => inner.membership.advertise_mirror(service, &rule).await,
    }
    Ok(rule)
}

/// Passes on the newest split rule of every service: whenever the view shows a rule newer
/// than this node's own copy, this node gossips it too.
pub(super) async fn pass_on_splits(inner: Weak<Inner>) {
    let Some(mut watch) = inner.upgrade().map(|i| i.membership.watch()) else { return };
    loop {
        let view: Arc<View> = watch.borrow_and_update().clone();
        let Some(node) = inner.upgrade() else { return };
        node.traffic.note_rules(&view);
        let own = view.members.iter().find(|m| m.is_self);
        let newer = |mine: Option<&Split>, newest: &Split| mine.is_none_or(|m| m.order() < newest.order());
        // Only rules of services some member publishes (and the application split) are
        // passed on: a peer cannot make every node keep rules for names that serve nothing.
        for service in view.split_services().into_iter().filter(|s| *s == APP_SPLIT || view.knows(s)) {
            let Some(newest) = view.newest_split(service) else { continue };
            if newer(own.and_then(|m| m.splits.get(service)), newest) {
                node.membership.advertise_split(service, newest).await;
            }
        }
        for service in view.mirror_services().into_iter().filter(|s| view.knows(s)) {
            let Some(newest) = view.newest_mirror(service) else { continue };
            if newer(own.and_then(|m| m.mirrors.get(service)), newest) {
                node.membership.advertise_mirror(service, newest).await;
            }
        }
        drop(node);
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Mirrored calls under way at most; past it a call is not mirrored (a slow mirror version
/// must not pile up copies).
const MAX_MIRRORS_IN_FLIGHT: u64 = 256;
static MIRRORS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static MIRRORED: AtomicU64 = AtomicU64::new(0);
static MIRROR_SAME: AtomicU64 = AtomicU64::new(0);
static MIRROR_DIFFERENT: AtomicU64 = AtomicU64::new(0);
static MIRROR_FAILED: AtomicU64 = AtomicU64::new(0);

/// What mirroring did from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MirrorStats {
    /// Calls copied to the mirror version.
    pub mirrored: u64,
    /// Mirrored calls whose answer was the same bytes as the real answer.
    pub same: u64,
    /// Mirrored calls whose answer differed (a value, an error, or one of each).
    pub different: u64,
    /// Mirrored calls that failed to reach a replica (not counted as different).
    pub failed: u64,
}

impl MirrorStats {
    fn now() -> MirrorStats {
        MirrorStats {
            mirrored: MIRRORED.load(Ordering::Relaxed),
            same: MIRROR_SAME.load(Ordering::Relaxed),
            different: MIRROR_DIFFERENT.load(Ordering::Relaxed),
            failed: MIRROR_FAILED.load(Ordering::Relaxed),
        }
    }

    /// The counters, for a node's `/metrics`.
    pub(crate) fn figures() -> impl Iterator<Item = crate::metrics::Figure> {
        Self::values().into_iter().map(|(name, help, value)| crate::metrics::Figure::counter(name, help, value))
    }

    /// The counters as `(name, help, value)`.
    pub(crate) fn values() -> [(&'static str, &'static str, u64); 4] {
        let s = MirrorStats::now();
        [
            ("meshrpc_mirrored_calls", "Calls copied to a mirror version", s.mirrored),
            ("meshrpc_mirror_same", "Mirrored calls answered the same as the real call", s.same),
            ("meshrpc_mirror_different", "Mirrored calls answered differently from the real call", s.different),
            ("meshrpc_mirror_failed", "Mirrored calls that reached no replica", s.failed),
        ]
    }
}

/// A mirrored call under way: hand it the real answer with [`Mirror::compare`].
pub(super) struct Mirror {
    real: tokio::sync::oneshot::Sender<Result<bytes::Bytes, String>>,
}

impl Mirror {
    /// Compares the mirror's answer with the real one (in the background).
    pub(super) fn compare(self, real: Result<&Reply, &Error>) {
        let real = match real {
            Ok(Reply::Ok(b)) | Ok(Reply::AppError(b)) => Ok(b.clone()),
            Ok(Reply::Stream(_)) => return,
            Err(e) => Err(e.code().to_owned()),
        };
        let _ = self.real.send(real);
    }
}

/// Copies `call` to the version its service's mirror rule names, `percent` of the
/// time, if its method is idempotent (as `primary` advertises it) and carries no
/// stream; never a pinned call (mirrors are pinned, so never mirrored again).
pub(super) fn mirror(
    inner: &Arc<Inner>,
    view: &View,
    call: &Call,
    primary: &Member,
    fingerprint: Option<&str>,
) -> Option<Mirror> {
    if !inner.traffic.any_mirror.load(Ordering::Acquire) || call.version.is_some() || call.input.is_some() {
        return None;
    }
    let (version, percent) = view.mirror(&call.service)?.weights.first()?.clone();
    let advert = primary.services.get(&*call.service)?;
    let idempotent = advert.methods.iter().any(|m| m.name == call.method && m.idempotent && !m.streams);
    if !idempotent || advert.version == version || inner.traffic.random() % 100 >= u64::from(percent) {
        return None;
    }
    if MIRRORS_IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_MIRRORS_IN_FLIGHT {
        MIRRORS_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let mut copy = call.clone();
    copy.version = Some(Arc::from(version.as_str()));
    // A copy never waits longer than a call's default timeout, whatever the real one's.
    let cap = crate::clock::now() + crate::client::DEFAULT_TIMEOUT;
    copy.deadline = Some(copy.deadline.map_or(cap, |d| d.min(cap)));
    copy.key = None;
    let (real_tx, real_rx) = tokio::sync::oneshot::channel();
    let (inner, fingerprint) = (inner.clone(), fingerprint.map(str::to_owned));
    MIRRORED.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mirrored = inner.call(copy, fingerprint, None).await;
        MIRRORS_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        let Ok(real) = real_rx.await else { return };
        let counter = match (mirrored, real) {
            (Err(e), _) if e.code() == "unavailable" || e.code() == "timeout" => &MIRROR_FAILED,
            (Ok(Reply::Ok(m) | Reply::AppError(m)), Ok(r)) if m == r => &MIRROR_SAME,
            (Err(m), Err(r)) if m.code() == r => &MIRROR_SAME,
            _ => &MIRROR_DIFFERENT,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
    Some(Mirror { real: real_tx })
}

#[cfg(test)]
mod tests {
    use super::fnv;

    #[test]
    fn sticky_keys_hash_stably() {
        assert_eq!(fnv(b"user-42"), fnv(b"user-42"));
        assert_ne!(fnv(b"user-42"), fnv(b"user-43"));
    }
}
