//! A node's credentials in the cluster (feature `tls`): loading them at start, reloading
//! them (file change, SIGHUP) without dropping a connection, warning before the
//! certificate expires, and the replicas whose certificate does not prove what they
//! gossip.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::{Duration, UNIX_EPOCH},
};

use serde::Serialize;

use super::{gossip::Security, Cluster, Inner};
use crate::{access::Access, error::Error, throttle::Throttle, transport::TlsConfig};

/// A certificate expiring sooner than this is warned about (at start, then hourly).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the policy file is checked for changes.
const POLICY_RECHECK: Duration = Duration::from_secs(1);

/// What the builder was given.
#[derive(Debug, Clone, Default)]
pub(super) struct Credentials {
    pub(super) tls: Option<TlsConfig>,
    pub(super) tls_dir: Option<PathBuf>,
    pub(super) access: Option<Arc<Access>>,
    pub(super) policy_file: Option<PathBuf>,
}

impl Credentials {
    /// Reads what was given as paths. A node with a malformed policy does not start. A
    /// node that serves needs the gossip key with its certificate; a caller-only one may
    /// go without (it follows a node's view instead of gossiping).
    pub(super) fn load(self, serving: bool) -> Result<(Option<TlsConfig>, Option<Arc<Access>>), Error> {
        let tls = match (self.tls, self.tls_dir) {
            (Some(tls), _) => Some(tls),
            (None, Some(dir)) => Some(TlsConfig::from_dir(dir)?),
            (None, None) => None,
        };
        let access = match (self.access, self.policy_file) {
            (Some(access), _) => Some(access),
            (None, Some(path)) => Some(Arc::new(
                Access::from_file(path).map_err(|e| Error::BadRequest { message: format!("policy: {e}") })?,
            )),
            (None, None) => None,
        };
        if access.is_some() && tls.is_none() {
            // Without certificates no caller is identified: the policy would deny all.
            return Err(Error::BadRequest {
                message: "a policy needs mutual TLS to identify callers: set --tls-dir too".into(),
            });
        }
        if let Some(tls) = &tls {
            if serving && tls.gossip_key().is_none() {
                return Err(Error::tls(format!(
                    "{} has no {}: with mutual TLS, gossip must be sealed too",
                    tls.dir().display(),
                    crate::transport::GOSSIP_KEY_FILE
                )));
            }
        }
        Ok((tls, access))
    }
}

/// What this node gossips about its certificate, the key its gossip is sealed with, and
/// who may write the rules it reads.
pub(super) fn gossiped(tls: Option<&TlsConfig>, rules: Arc<super::gossip::rules::RuleGate>) -> Security {
    let Some(tls) = tls else { return Security { cert: None, gossip_key: None, rules } };
    Security { cert: Some(cert_value(tls)), gossip_key: tls.gossip_key(), rules }
}

fn cert_value(tls: &TlsConfig) -> String {
    let not_after = tls.identity().not_after.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    format!("{} {}", tls.fingerprint(), not_after.as_secs())
}

/// Replicas seen gossiping a service their certificate does not carry.
#[derive(Debug, Default)]
pub(super) struct Unproven {
    seen: Mutex<BTreeSet<(String, String)>>,
}

static UNPROVEN_WARNING: Throttle = Throttle::new(Duration::from_secs(10));

/// Distinct (replica, service) pairs remembered for `meshrpc status`: a credentialed node
/// chooses what it gossips, so the list is bounded; past it new pairs are not listed
/// (they are still never called).
pub(super) const MAX_UNPROVEN: usize = 1024;

impl Unproven {
    /// Distinct (replica, service) pairs seen so far (at most [`MAX_UNPROVEN`]).
    pub(super) fn count(&self) -> u64 {
        self.seen.lock().unwrap().len() as u64
    }

    /// Records (once per replica and service) and reports a replica that may not serve
    /// `service`.
    pub(super) fn report(&self, node_id: &str, certified_as: &str, service: &str) {
        let mut seen = self.seen.lock().unwrap();
        let key = (node_id.to_owned(), service.to_owned());
        if seen.len() < MAX_UNPROVEN && seen.insert(key) {
            drop(seen);
            UNPROVEN_WARNING.log(|also| {
                tracing::warn!(
                    replica = node_id,
                    certificate = certified_as,
                    service,
                    also_unproven = also,
                    "replica gossips a service its certificate does not carry: never called"
                )
            });
        }
    }
}

/// A replica the node refuses to call (`meshrpc status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnprovenReplica {
    /// The member's node id.
    pub node: String,
    /// The service it gossips without a certificate for it.
    pub service: String,
}

impl Cluster {
    /// Replicas that gossip a service their certificate does not carry: they are never
    /// called (mutual TLS).
    pub fn unproven_replicas(&self) -> Vec<UnprovenReplica> {
        let seen = self.inner.unproven.seen.lock().unwrap();
        seen.iter().map(|(node, service)| UnprovenReplica { node: node.clone(), service: service.clone() }).collect()
    }

    /// This node's TLS credentials, if it runs mutual TLS.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.inner.tls.as_ref()
    }

    /// This node's authorization policy, if it has one.
    pub fn access(&self) -> Option<&Arc<Access>> {
        self.inner.access.as_ref()
    }
}

static EXPIRY: Throttle = Throttle::new(Duration::from_secs(3600));

/// Reloads the policy when its file changes, both policy and certificate on SIGHUP, and
/// keeps the gossiped certificate current; warns before the certificate expires.
pub(super) async fn watch(inner: Weak<Inner>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(POLICY_RECHECK);
    let mut gossiped = None;
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<Option<()>>();
        let hup = tokio::select! {
            _ = tick.tick() => false,
            _ = sighup => true,
        };
        let Some(inner) = inner.upgrade() else { return };
        if let Some(access) = &inner.access {
            let before = access.policy();
            if hup {
                access.reload_logged("SIGHUP");
            } else {
                access.reload_if_changed();
            }
            // Rules are checked against the policy in force: check them again.
            if !Arc::ptr_eq(&before, &access.policy()) {
                inner.rules.recheck();
            }
        }
        let Some(tls) = &inner.tls else { continue };
        if hup {
            if let Err(e) = tls.reload() {
                tracing::error!(error = %e, "certificate reload failed: the previous certificate stays in use");
            }
        }
        let value = cert_value(tls);
        if gossiped.as_ref() != Some(&value) {
            if gossiped.is_some() {
                inner.membership.advertise_cert(value.clone()).await;
            }
            gossiped = Some(value);
            warn_if_expiring(tls, true);
        } else {
            warn_if_expiring(tls, false);
        }
    }
}

fn warn_if_expiring(tls: &TlsConfig, now: bool) {
    let identity = tls.identity();
    let Some(left) = identity.expires_in(crate::clock::wall()) else { return };
    if left > EXPIRY_WARNING {
        return;
    }
    let warn = || {
        tracing::warn!(
            node = %identity.node, expires_in_secs = left.as_secs(), dir = %tls.dir().display(),
            "{}", if left.is_zero() { "certificate expired: renew it" } else { "certificate expires soon: renew it" }
        )
    };
    if now {
        warn();
    } else {
        EXPIRY.log(|_| warn());
    }
}
