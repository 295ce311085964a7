//! Who may call what: the authorization policy (feature `tls`), checked where calls
//! enter a node from the network, before any handler or layer runs.
//!
//! A policy file is TOML; once a node has one, everything it does not allow is denied:
//!
//! ```toml
//! [[allow]]
//! from = "mesh-api"            # a node, by the name in its certificate
//! to = "greeter.*"             # every method of a service
//!
//! [[allow]]
//! from = ["service:billing"]   # any node whose certificate may serve `billing`
//! to = ["greeter.greet"]       # one method
//!
//! [[allow]]
//! from = "user:alice"          # a bearer token's subject, vouched for by the gateway
//! to = "*"                     # every method (not rules)
//!
//! [[allow]]
//! from = "ops"                 # who may write cluster rules (`meshrpc split`, `mirror`)
//! to = ["rule:split/greeter", "rule:mirror/*"]
//! ```
//!
//! `meshrpc.view` and `meshrpc.rule` (how callers that do not gossip follow the cluster and
//! hand it their rules) are open to every certificate of the cluster: a rule is checked
//! against the `rule:` targets of whoever wrote it, not of whoever hands it over.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, SystemTime},
};

use serde::Deserialize;

use crate::{
    error::Error,
    identity::{Identity, IdentityKind},
    throttle::Throttle,
};

/// A parsed policy: a list of allow rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    from: Vec<Principal>,
    to: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    Anyone,
    Node(String),
    Holder(String),
    User(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Everything,
    Service(String),
    Method(String, String),
    /// `rule:<kind>/<service>`, either part `*`: writing cluster rules.
    Rule(Option<String>, Option<String>),
}

/// A policy that could not be read, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct PolicyError {
    /// The file (or `<policy>` for text).
    pub origin: String,
    /// 1-based line of the fault.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: toml::Spanned<OneOrMany>,
    to: toml::Spanned<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl AccessPolicy {
    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AccessPolicy, PolicyError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let fail =
            |offset: usize, message: String| PolicyError { origin: origin.to_owned(), line: line_of(offset), message };
        let file: File = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            fail(at, e.message().trim().to_owned())
        })?;
        let mut rules = Vec::new();
        for raw in file.allow {
            let at = raw.from.span().start;
            let from = raw.from.into_inner().items().into_iter().map(|p| Principal::parse(&p).map_err(|m| fail(at, m)));
            let from = from.collect::<Result<Vec<_>, _>>()?;
            let at = raw.to.span().start;
            let to = raw.to.into_inner().items().into_iter().map(|t| Target::parse(&t).map_err(|m| fail(at, m)));
            let to = to.collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule { from, to });
        }
        Ok(AccessPolicy { rules })
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<AccessPolicy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        AccessPolicy::parse(&text, &origin)
    }

    /// Whether `caller` may call `service.method`. Without a verified caller, nothing is.
    pub fn allows(&self, caller: Option<&Identity>, service: &str, method: &str) -> bool {
        let Some(caller) = caller else { return false };
        self.rules
            .iter()
            .any(|r| r.from.iter().any(|p| p.matches(caller)) && r.to.iter().any(|t| t.matches(service, method)))
    }

    /// Whether `writer` may write cluster rules of `kind` (`split`, `mirror`) for
    /// `service`: only what a `rule:` target names (`*` alone does not cover rules).
    pub fn allows_rule(&self, writer: &Identity, kind: &str, service: &str) -> bool {
        self.rules.iter().any(|r| {
            r.from.iter().any(|p| p.matches(writer))
                && r.to.iter().any(|t| match t {
                    Target::Rule(k, s) => {
                        k.as_deref().is_none_or(|k| k == kind) && s.as_deref().is_none_or(|s| s == service)
                    }
                    _ => false,
                })
        })
    }

    /// Number of allow rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Principal {
    fn parse(s: &str) -> Result<Principal, String> {
        let named = |kind: &str, name: &str| {
            if name.is_empty() || name.contains(char::is_whitespace) {
                Err(format!("`{s}`: a {kind} name must be non-empty, without spaces"))
            } else {
                Ok(name.to_owned())
            }
        };
        Ok(match s.split_once(':') {
            _ if s == "*" => Principal::Anyone,
            Some(("node", name)) => Principal::Node(named("node", name)?),
            Some(("service", name)) => Principal::Holder(named("service", name)?),
            Some(("user", name)) => Principal::User(named("user", name)?),
            Some((kind, _)) => {
                return Err(format!("`{s}`: unknown caller kind `{kind}` (use node:, service:, user: or `*`)"))
            }
            None => Principal::Node(named("node", s)?),
        })
    }

    fn matches(&self, caller: &Identity) -> bool {
        let cert = caller.kind == IdentityKind::Certificate;
        match self {
            Principal::Anyone => true,
            Principal::Node(name) => cert && caller.node == *name,
            Principal::Holder(service) => caller.proves(service),
            Principal::User(name) => caller.kind == IdentityKind::Token && caller.node == *name,
        }
    }
}

impl Target {
    fn parse(s: &str) -> Result<Target, String> {
        if s == "*" {
            return Ok(Target::Everything);
        }
        if let Some(rule) = s.strip_prefix("rule:") {
            let bad = || format!("`{s}`: a rule target is `rule:<split|mirror|*>/<service|*>` or `rule:*`");
            if rule == "*" {
                return Ok(Target::Rule(None, None));
            }
            let (kind, service) = rule.split_once('/').ok_or_else(bad)?;
            if !matches!(kind, "split" | "mirror" | "*") || service.is_empty() || service.contains(['/', ' ']) {
                return Err(bad());
            }
            let any = |x: &str| (x != "*").then(|| x.to_owned());
            return Ok(Target::Rule(any(kind), any(service)));
        }
        let bad = || format!("`{s}`: a target is `service.method`, `service.*`, `*` or `rule:<kind>/<service>`");
        let (service, method) = s.split_once('.').ok_or_else(bad)?;
        if service.is_empty() || method.is_empty() || service.contains('*') || method.contains('.') {
            return Err(bad());
        }
        Ok(match method {
            "*" => Target::Service(service.to_owned()),
            m if m.contains('*') => return Err(bad()),
            m => Target::Method(service.to_owned(), m.to_owned()),
        })
    }

    fn matches(&self, service: &str, method: &str) -> bool {
        match self {
            Target::Everything => true,
            Target::Service(s) => s == service,
            Target::Method(s, m) => s == service && m == method,
            Target::Rule(..) => false,
        }
    }
}

static DENIED_WARNING: Throttle = Throttle::new(Duration::from_secs(5));

/// A node's live policy: checked on every call from the network, reloaded from its file
/// (on change or SIGHUP) without dropping a connection. A reload that fails keeps the
/// policy in force and logs why.
#[derive(Debug)]
pub struct Access {
    current: RwLock<Arc<AccessPolicy>>,
    path: Option<PathBuf>,
    stamp: RwLock<Option<SystemTime>>,
    denied: AtomicU64,
}

impl Access {
    /// A fixed policy (no file to reload).
    pub fn new(policy: AccessPolicy) -> Access {
        Access {
            current: RwLock::new(Arc::new(policy)),
            path: None,
            stamp: RwLock::new(None),
            denied: AtomicU64::new(0),
        }
    }

    /// The policy in `path`; a node refuses to start on an error (it names the line).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Access, PolicyError> {
        let path = path.into();
        let stamp = modified(&path);
        let policy = AccessPolicy::load(&path)?;
        Ok(Access {
            current: RwLock::new(Arc::new(policy)),
            path: Some(path),
            stamp: RwLock::new(stamp),
            denied: AtomicU64::new(0),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<AccessPolicy> {
        self.current.read().unwrap().clone()
    }

    /// Calls denied so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Reads the file again. `Ok(true)`: a new policy is in force; on an error the old one
    /// stays.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else { return Ok(false) };
        *self.stamp.write().unwrap() = modified(path);
        let policy = AccessPolicy::load(path)?;
        let mut current = self.current.write().unwrap();
        let changed = **current != policy;
        if changed {
            *current = Arc::new(policy);
        }
        Ok(changed)
    }

    /// Reloads when the file changed since it was last read (logs the outcome).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.path else { return };
        if modified(path) == *self.stamp.read().unwrap() {
            return;
        }
        self.reload_logged("file changed");
    }

    /// Reloads, logging the outcome (`why`: what asked for it).
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(true) => tracing::info!(rules = self.policy().len(), reason = why, "policy reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "policy reload failed: the previous policy stays in force"),
        }
    }

    /// Checks a call from the network; a denied one is counted and logged. The node
    /// methods callers that do not gossip need are open to every certificate.
    pub fn admit(&self, caller: Option<&Identity>, service: &str, method: &str) -> Result<(), Error> {
        let open = service == crate::spec::NODE_SERVICE && matches!(method, "view" | "rule" | "methods" | "policies");
        if open && caller.is_some_and(|c| c.kind == IdentityKind::Certificate) {
            return Ok(());
        }
        if self.current.read().unwrap().allows(caller, service, method) {
            return Ok(());
        }
        self.denied.fetch_add(1, Ordering::Relaxed);
        crate::identity::CALLS_DENIED.fetch_add(1, Ordering::Relaxed);
        let who = caller.map_or_else(|| "an unidentified caller".to_owned(), |c| c.to_string());
        DENIED_WARNING
            .log(|also| tracing::warn!(caller = %who, service, method, also_denied = also, "call denied by policy"));
        Err(Error::PermissionDenied { message: format!("{who} may not call {service}.{method} (policy)") })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, services: &[&str]) -> Identity {
        let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        Identity::from_uris(Identity::uris("t", name, &services).iter().map(String::as_str), None).unwrap()
    }

    const POLICY: &str = r#"
[[allow]]
from = "mesh-api"
to = "greeter.*"

[[allow]]
from = ["service:billing"]
to = ["greeter.greet"]

[[allow]]
from = "user:alice"
to = "*"
"#;

    #[test]
    fn allows_what_it_names_and_denies_the_rest() {
        let p = AccessPolicy::parse(POLICY, "p.toml").unwrap();
        let api = node("mesh-api", &[]);
        let billing = node("b1", &["billing"]);
        let other = node("other", &["greeter"]);
        assert!(p.allows(Some(&api), "greeter", "greet") && p.allows(Some(&api), "greeter", "farewell"));
        assert!(!p.allows(Some(&api), "billing", "charge"));
        assert!(p.allows(Some(&billing), "greeter", "greet") && !p.allows(Some(&billing), "greeter", "farewell"));
        assert!(!p.allows(Some(&other), "greeter", "greet"));
        assert!(!p.allows(None, "greeter", "greet"));
        // A token subject is not a node of the same name, and the other way round.
        assert!(p.allows(Some(&Identity::token_subject("alice")), "billing", "charge"));
        assert!(!p.allows(Some(&node("alice", &[])), "billing", "charge"));
        assert!(!p.allows(Some(&Identity::token_subject("mesh-api")), "greeter", "greet"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = AccessPolicy::parse("[[allow]]\nfrom = \"a\"\nto = \"greeter\"\n", "p.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("p.toml:3: `greeter`: a target is"), "{e}");
        let e =
            AccessPolicy::parse("[[allow]]\nfrom = \"a\"\n\nto = [\"g.*\", \"x:y\"]\nextra = 1\n", "p").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let e = AccessPolicy::parse("[[allow]]\nfrom = \"team:x\"\nto = \"*\"\n", "p").unwrap_err();
        assert!(e.message.contains("unknown caller kind"), "{e}");
        let e = AccessPolicy::parse("[[allow]\n", "p").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn rules_are_allowed_only_by_rule_targets() {
        let p = AccessPolicy::parse(
            "[[allow]]\nfrom = \"ops\"\nto = [\"rule:split/greeter\", \"rule:mirror/*\"]\n\n\
             [[allow]]\nfrom = \"root\"\nto = \"*\"\n\n[[allow]]\nfrom = \"admin\"\nto = \"rule:*\"\n",
            "p",
        )
        .unwrap();
        let (ops, root, admin) = (node("ops", &[]), node("root", &[]), node("admin", &[]));
        assert!(p.allows_rule(&ops, "split", "greeter") && p.allows_rule(&ops, "mirror", "billing"));
        assert!(!p.allows_rule(&ops, "split", "billing"));
        assert!(!p.allows_rule(&root, "split", "greeter"), "`*` covers methods, not rules");
        assert!(p.allows_rule(&admin, "split", "x") && p.allows_rule(&admin, "mirror", "y"));
        assert!(!p.allows(Some(&ops), "greeter", "greet"), "a rule target allows no call");
        for bad in ["rule:", "rule:split", "rule:drop/greeter", "rule:split/"] {
            let text = format!("[[allow]]\nfrom = \"a\"\nto = \"{bad}\"\n");
            assert!(AccessPolicy::parse(&text, "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let p = AccessPolicy::parse("", "p").unwrap();
        assert!(p.is_empty() && !p.allows(Some(&node("a", &["greeter"])), "greeter", "greet"));
    }
}
