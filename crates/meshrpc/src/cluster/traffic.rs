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
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{membership::Split, Cluster, Inner, Member, View};
use crate::error::Error;

impl Inner {
    /// The replicas a call may go to: those of its pinned version, or of the version its
    /// service's split rule chose for it (by `key` when sticky, so a key stays within one
    /// version), skipping those already `tried`.
    pub(super) fn versioned<'v>(
        &self,
        view: &'v View,
        service: &str,
        replicas: impl Iterator<Item = &'v Member>,
        tried: &[SocketAddr],
        pin: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<&'v Member>, Error> {
        let replicas: Vec<&Member> = replicas.filter(|m| m.addr.is_some_and(|a| !tried.contains(&a))).collect();
        let version_of = |m: &Member| m.services.get(service).map_or("", |s| s.version.as_str()).to_owned();
        if let Some(pin) = pin {
            let pinned: Vec<&Member> = replicas.into_iter().filter(|m| version_of(m) == pin).collect();
            if pinned.is_empty() {
                return Err(Error::unavailable(format!("no replica of `{service}` runs version `{pin}`")));
            }
            return Ok(pinned);
        }
        let Some(split) = view.split(service) else { return Ok(replicas) };
        // Versions of the rule that have a replica left; the others' shares go to them.
        let live: Vec<(&str, u32)> = split
            .weights
            .iter()
            .filter(|(v, w)| *w > 0 && replicas.iter().any(|m| version_of(m) == *v))
            .map(|(v, w)| (v.as_str(), *w))
            .collect();
        let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Ok(replicas); // no version of the rule is up: any replica beats none
        }
        let mut at = match key {
            Some(key) => fnv(key.as_bytes()) % total,
            None => self.traffic.random() % total,
        };
        let chosen = live
            .iter()
            .find(|(_, w)| {
                let hit = at < u64::from(*w);
                at = at.saturating_sub(u64::from(*w));
                hit
            })
            .map_or(live[0].0, |(v, _)| v);
        Ok(replicas.into_iter().filter(|m| version_of(m) == chosen).collect())
    }
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
}

impl Default for Traffic {
    fn default() -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Traffic { rng: AtomicU64::new(seed), any_split: Default::default(), split_services: Default::default() }
    }
}

impl Traffic {
    /// True if `service` has a split rule in force.
    pub(super) fn split(&self, service: &str) -> bool {
        self.any_split.load(Ordering::Acquire) && self.split_services.read().unwrap().iter().any(|s| s == service)
    }

    fn note_splits(&self, view: &View) {
        let services: Vec<String> =
            view.split_services().into_iter().filter(|s| view.split(s).is_some()).map(str::to_owned).collect();
        self.any_split.store(!services.is_empty(), Ordering::Release);
        *self.split_services.write().unwrap() = services;
    }

    fn random(&self) -> u64 {
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
    /// gossip within a few rounds and outlives this node.
    pub async fn set_split(&self, service: &str, weights: Vec<(String, u32)>) -> Split {
        self.write_split(service, weights).await
    }

    /// Clears the split rule of `service`: its calls go to any replica again.
    pub async fn clear_split(&self, service: &str) -> Split {
        self.write_split(service, Vec::new()).await
    }

    async fn write_split(&self, service: &str, weights: Vec<(String, u32)>) -> Split {
        // Newer than any rule seen, even if this node's clock is behind.
        let seen = self.view().newest_split(service).map_or(0, |s| s.set_ms);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let split = Split { set_ms: now.max(seen + 1), set_by: self.inner.name.clone(), weights };
        self.inner.membership.advertise_split(service, &split).await;
        split
    }

    /// Waits until another member passes on `split` (so it outlives this node), up to
    /// `within`; `false` if none did.
    pub async fn split_spread(&self, service: &str, split: &Split, within: Duration) -> bool {
        let mut watch = self.inner.membership.watch();
        let spread = async {
            loop {
                let passed_on = watch
                    .borrow_and_update()
                    .members
                    .iter()
                    .any(|m| !m.is_self && m.splits.get(service) == Some(split));
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

/// Passes on the newest split rule of every service: whenever the view shows a rule newer
/// than this node's own copy, this node gossips it too.
pub(super) async fn pass_on_splits(inner: Weak<Inner>) {
    let Some(mut watch) = inner.upgrade().map(|i| i.membership.watch()) else { return };
    loop {
        let view: Arc<View> = watch.borrow_and_update().clone();
        let Some(node) = inner.upgrade() else { return };
        node.traffic.note_splits(&view);
        let own = view.members.iter().find(|m| m.is_self);
        for service in view.split_services() {
            let Some(newest) = view.newest_split(service) else { continue };
            let mine = own.and_then(|m| m.splits.get(service));
            if mine.is_none_or(|m| (m.set_ms, &m.set_by) < (newest.set_ms, &newest.set_by)) {
                node.membership.advertise_split(service, newest).await;
            }
        }
        drop(node);
        if watch.changed().await.is_err() {
            return;
        }
    }
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
