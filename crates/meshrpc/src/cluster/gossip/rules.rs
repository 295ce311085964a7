//! Who may write the rules every node follows (split and mirror): cluster-wide state a
//! member writes, and every reader checks.
//!
//! With mutual TLS a rule is signed by its writer's node key and carries the writer's
//! certificate ([`Signed`](crate::transport::Signed)); every node that reads it — from
//! gossip or from a caller asking it to set one (`meshrpc.rule`) — checks the certificate
//! against the cluster CA, the signature, and that the writer may write that rule:
//!
//! - with a policy, only what it allows (`to = "rule:split/greeter"`, `"rule:mirror/*"`,
//!   `"rule:*"`; `"*"` alone does not cover rules);
//! - without one, certificates that may serve nothing (operators' tools such as the
//!   CLI, gateways) and those that may serve the rule's service.
//!
//! A rule that fails any check is dropped from the view (never followed, never passed
//! on), counted (`meshrpc_rules_rejected_total`) and listed by `meshrpc status`. The setter
//! a view shows is the verified certificate's node name. Without TLS, rules are not
//! signed, and anyone who can reach the gossip port can write one (docs/security.md).

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use super::schema::{Member, Split};
use crate::error::Error;

/// Distinct rule values whose verdict a node remembers; past it the memory starts over.
const MAX_VERDICTS: usize = 4096;
/// Refused rules listed for `meshrpc status`, newest last.
const MAX_LISTED: usize = 16;
/// Rules of each kind a node reads from one member, at most (a member gossips one per
/// service it has seen a rule for); past it the rest are ignored unchecked.
const MAX_PER_MEMBER: usize = 64;

static REFUSED_WARNING: crate::throttle::Throttle = crate::throttle::Throttle::new(std::time::Duration::from_secs(5));

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuleKind {
    /// A weighted split of a service's calls between versions.
    Split,
    /// A copy of a share of a service's idempotent calls to a version.
    Mirror,
}

impl RuleKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuleKind::Split => "split",
            RuleKind::Mirror => "mirror",
        }
    }
}

/// A rule write some node refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRule {
    /// `split` or `mirror`.
    pub kind: String,
    /// The service the rule is for.
    pub service: String,
    /// Who wrote it: the verified certificate's node, else the name the rule claims.
    pub writer: String,
    /// Why it was refused.
    pub reason: String,
}

/// The bytes a writer signs: the cluster, what the rule does, to which service, when,
/// and its weights.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn signed_bytes(tag: &str, kind: RuleKind, service: &str, rule: &Split) -> Vec<u8> {
    let weights: Vec<String> = rule.weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
    format!("meshrpc rule 1\n{tag}\n{}\n{service}\n{}\n{}", kind.as_str(), rule.set_ms, weights.join(" ")).into_bytes()
}

/// Checks the rules of a view, and signs this node's own writes.
pub(crate) struct RuleGate {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tag: String,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::TlsConfig>,
    #[cfg(feature = "tls")]
    access: Option<Arc<crate::access::Access>>,
    verdicts: Mutex<Verdicts>,
    /// Rules refused so far (once per distinct rule).
    rejected: std::sync::atomic::AtomicU64,
    /// Wakes the view's task to check the rules again (the policy changed).
    recheck: tokio::sync::Notify,
}

#[derive(Default)]
struct Verdicts {
    /// The policy the verdicts were given under (a reload starts over).
    #[cfg(feature = "tls")]
    policy: Option<Arc<crate::access::AccessPolicy>>,
    /// `(kind, service, encoded rule)` → the verified setter, or why it was refused.
    given: HashMap<(RuleKind, String, String), Result<String, String>>,
    refused: VecDeque<RejectedRule>,
    /// What the node a caller follows refused lately (callers that do not gossip).
    heard: Vec<RejectedRule>,
}

impl RuleGate {
    #[cfg(feature = "tls")]
    pub(crate) fn new(
        tag: &str,
        tls: Option<crate::transport::TlsConfig>,
        access: Option<Arc<crate::access::Access>>,
    ) -> RuleGate {
        RuleGate {
            tag: tag.to_owned(),
            tls,
            access,
            verdicts: Mutex::default(),
            rejected: Default::default(),
            recheck: Default::default(),
        }
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn new(tag: &str) -> RuleGate {
        RuleGate {
            tag: tag.to_owned(),
            verdicts: Mutex::default(),
            rejected: Default::default(),
            recheck: Default::default(),
        }
    }

    /// Rules refused so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True if rules must be signed (mutual TLS).
    pub(crate) fn signed(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Drops from `members` every rule this node does not accept, and names each accepted
    /// one's setter by its verified certificate. Rules of services no member publishes are
    /// dropped unchecked (they are never followed; checking them would let a member make
    /// every node verify certificates for names it invents).
    pub(crate) fn filter(&self, members: &mut [Member]) {
        if !self.signed() {
            return;
        }
        let known: std::collections::BTreeSet<String> =
            members.iter().flat_map(|m| m.services.keys().cloned()).collect();
        for member in members.iter_mut() {
            for (kind, rules) in [(RuleKind::Split, &mut member.splits), (RuleKind::Mirror, &mut member.mirrors)] {
                let mut read = 0;
                rules.retain(|service, rule| {
                    if !known.contains(service) || read == MAX_PER_MEMBER {
                        return false;
                    }
                    read += 1;
                    match self.check(kind, service, rule) {
                        Ok(setter) => {
                            rule.set_by = setter;
                            true
                        }
                        Err(_) => false,
                    }
                });
            }
        }
    }

    /// Has the rules of the views checked again (the policy changed).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn recheck(&self) {
        self.recheck.notify_waiters();
    }

    /// Resolves when the rules must be checked again.
    pub(crate) async fn rechecked(&self) {
        self.recheck.notified().await
    }

    /// This node's verdict on `rule` (cached by its encoding): the verified setter, or why
    /// it is refused (counted and listed the first time).
    pub(crate) fn check(&self, kind: RuleKind, service: &str, rule: &Split) -> Result<String, String> {
        if !self.signed() {
            return Ok(rule.set_by.clone());
        }
        let key = (kind, service.to_owned(), rule.encode());
        let mut verdicts = self.verdicts.lock().unwrap();
        #[cfg(feature = "tls")]
        {
            let policy = self.access.as_ref().map(|a| a.policy());
            let same = match (&verdicts.policy, &policy) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                verdicts.given.clear();
                verdicts.policy = policy;
            }
        }
        if let Some(verdict) = verdicts.given.get(&key) {
            return verdict.clone();
        }
        let verdict = self.judge(kind, service, rule);
        if let Err((writer, reason)) = &verdict {
            self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            REFUSED_WARNING.log(|also| {
                tracing::warn!(
                    kind = kind.as_str(), service, %writer, %reason, also_refused = also,
                    "rule refused: not followed, not passed on"
                )
            });
            if verdicts.refused.len() == MAX_LISTED {
                verdicts.refused.pop_front();
            }
            verdicts.refused.push_back(RejectedRule {
                kind: kind.as_str().to_owned(),
                service: service.to_owned(),
                writer: writer.clone(),
                reason: reason.clone(),
            });
        }
        let verdict = verdict.map_err(|(_, reason)| reason);
        if verdicts.given.len() >= MAX_VERDICTS {
            verdicts.given.clear();
        }
        verdicts.given.insert(key, verdict.clone());
        verdict
    }

    /// Rule writes this node refused lately, oldest first (and, on a caller that does not
    /// gossip, those the node it follows refused).
    pub(crate) fn refused(&self) -> Vec<RejectedRule> {
        let verdicts = self.verdicts.lock().unwrap();
        verdicts.heard.iter().chain(&verdicts.refused).cloned().collect()
    }

    /// Remembers what the node this caller follows refused.
    pub(crate) fn heard(&self, refused: Vec<RejectedRule>) {
        let mut heard = refused;
        heard.truncate(MAX_LISTED);
        self.verdicts.lock().unwrap().heard = heard;
    }

    /// Signs a rule this node writes (with TLS), naming it as its setter.
    pub(crate) fn sign(&self, kind: RuleKind, service: &str, rule: &mut Split) -> Result<(), Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            rule.set_by = tls.identity().node.clone();
            let signed = tls.sign(&signed_bytes(&self.tag, kind, service, rule))?;
            rule.proof = Some(signed.to_token());
        }
        let _ = (kind, service, rule);
        Ok(())
    }

    /// The verified setter, or `(writer, why not)`.
    #[cfg(feature = "tls")]
    fn judge(&self, kind: RuleKind, service: &str, rule: &Split) -> Result<String, (String, String)> {
        use crate::transport::Signed;
        let claimed = || format!("{} (unverified)", rule.set_by);
        let tls = self.tls.as_ref().expect("signed rules need TLS");
        let Some(signed) = rule.proof.as_deref().and_then(Signed::from_token) else {
            return Err((claimed(), "not signed by a certificate of the cluster".into()));
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(rule.set_ms);
        let writer = tls
            .verify_signed(&signed, &signed_bytes(&self.tag, kind, service, rule), at)
            .map_err(|why| (claimed(), why))?;
        let name = writer.to_string();
        if rule.set_by != writer.node {
            return Err((name, format!("claims to be set by `{}`, but is signed by another node", rule.set_by)));
        }
        let allowed = match &self.access {
            Some(access) => access.policy().allows_rule(&writer, kind.as_str(), service),
            None => writer.services.is_empty() || writer.proves(service),
        };
        if !allowed {
            let why = match &self.access {
                Some(_) => format!("the policy does not allow {name} to write rule:{}/{service}", kind.as_str()),
                None => format!(
                    "{name} may not write rules for `{service}`: without a policy, only certificates that may \
                     serve `{service}`, or serve nothing (operators' tools), may"
                ),
            };
            return Err((name, why));
        }
        Ok(writer.node)
    }

    #[cfg(not(feature = "tls"))]
    fn judge(&self, _: RuleKind, _: &str, rule: &Split) -> Result<String, (String, String)> {
        Ok(rule.set_by.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_bytes_cover_everything_a_rule_says() {
        let rule = |ms, w: &[(&str, u32)]| Split {
            set_ms: ms,
            set_by: "ops".into(),
            weights: w.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            proof: None,
        };
        let base = signed_bytes("t", RuleKind::Split, "greeter", &rule(1, &[("v1", 90), ("v2", 10)]));
        for other in [
            signed_bytes("u", RuleKind::Split, "greeter", &rule(1, &[("v1", 90), ("v2", 10)])),
            signed_bytes("t", RuleKind::Mirror, "greeter", &rule(1, &[("v1", 90), ("v2", 10)])),
            signed_bytes("t", RuleKind::Split, "billing", &rule(1, &[("v1", 90), ("v2", 10)])),
            signed_bytes("t", RuleKind::Split, "greeter", &rule(2, &[("v1", 90), ("v2", 10)])),
            signed_bytes("t", RuleKind::Split, "greeter", &rule(1, &[("v1", 10), ("v2", 90)])),
            signed_bytes("t", RuleKind::Split, "greeter", &rule(1, &[])),
        ] {
            assert_ne!(base, other);
        }
        // The setter's name is not signed: readers take it from the certificate.
        let mut renamed = rule(1, &[("v1", 90), ("v2", 10)]);
        renamed.set_by = "someone".into();
        assert_eq!(base, signed_bytes("t", RuleKind::Split, "greeter", &renamed));
    }
}
