//! The view: the live members, and the questions callers ask of them (who serves what,
//! which rule is in force).

use std::{
    collections::BTreeMap,
    time::{Duration, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::schema::{Member, MemberState, Split};

/// The live members, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The members, sorted by id.
    pub members: Vec<Member>,
}

impl View {
    /// Members serving `service` (compatible ones only, when `fingerprint` is given).
    pub fn replicas<'a, 'q>(
        &'a self,
        service: &'q str,
        fingerprint: Option<&'q str>,
    ) -> impl Iterator<Item = &'a Member> + use<'a, 'q> {
        self.members.iter().filter(move |m| m.serves(service, fingerprint))
    }

    /// Members serving the HTTP router `name`.
    pub fn http_replicas<'a, 'q>(&'a self, name: &'q str) -> impl Iterator<Item = &'a Member> + use<'a, 'q> {
        self.members.iter().filter(move |m| m.state == MemberState::Serving && m.http.iter().any(|h| h == name))
    }

    /// True if some member publishes `service` with a method of this name.
    pub fn has_method(&self, service: &str, method: &str) -> bool {
        self.members.iter().any(|m| m.services.get(service).is_some_and(|s| s.has_method(method)))
    }

    /// True if any live member publishes `service`, compatible or not.
    pub fn knows(&self, service: &str) -> bool {
        self.members.iter().any(|m| m.services.contains_key(service))
    }

    /// The newest split rule for `service` any member gossips (`None`: no rule, or the
    /// newest one cleared it).
    pub fn split(&self, service: &str) -> Option<&Split> {
        self.newest_split(service).filter(|s| !s.weights.is_empty())
    }

    /// The newest split rule for `service`, a clearing one included.
    pub fn newest_split(&self, service: &str) -> Option<&Split> {
        self.newest(service, |m| &m.splits)
    }

    /// Every service with a split rule anyone gossips.
    pub fn split_services(&self) -> std::collections::BTreeSet<&str> {
        self.ruled(|m| &m.splits)
    }

    /// The newest rule for `service` among the members' `rules` (splits or mirrors). A
    /// rule stamped more than an hour ahead of this node's clock is ignored: it could never
    /// be replaced.
    fn newest(&self, service: &str, rules: impl Fn(&Member) -> &BTreeMap<String, Split>) -> Option<&Split> {
        let horizon = (crate::clock::wall().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(3600))
            .as_millis() as u64;
        self.members
            .iter()
            .filter_map(|m| rules(m).get(service))
            .filter(|r| r.set_ms <= horizon)
            .max_by(|a, b| a.order().cmp(&b.order()))
    }

    /// Every service some member has one of `rules` for.
    fn ruled(&self, rules: impl Fn(&Member) -> &BTreeMap<String, Split>) -> std::collections::BTreeSet<&str> {
        self.members.iter().flat_map(|m| rules(m).keys().map(String::as_str)).collect()
    }

    /// The newest mirror rule for `service` (`None`: none, or cleared): its one entry is
    /// `(version, percent)`.
    pub fn mirror(&self, service: &str) -> Option<&Split> {
        self.newest_mirror(service).filter(|s| !s.weights.is_empty())
    }

    /// The newest mirror rule for `service`, a clearing one included.
    pub fn newest_mirror(&self, service: &str) -> Option<&Split> {
        self.newest(service, |m| &m.mirrors)
    }

    /// Every service with a mirror rule anyone gossips.
    pub fn mirror_services(&self) -> std::collections::BTreeSet<&str> {
        self.ruled(|m| &m.mirrors)
    }

    /// True if some member serves `name` or publishes an HTTP router under it.
    pub fn knows_http(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.state == MemberState::Serving && m.http.iter().any(|h| h == name))
    }
}
