//! The gossip schema: the keys each node advertises about itself and how their values
//! are written (a compact grammar: a node's state is held under decisions.md's 1 KiB
//! budget, docs/wire.md), read back into [`Member`]s.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    spec::{Fnv, ServiceSpec},
};

pub(super) const KEY_NAME: &str = "name";
pub(super) const KEY_ADDR: &str = "addr";
pub(super) const KEY_STATE: &str = "state";
pub(super) const KEY_STARTED: &str = "started";
/// `<sha256 of the certificate> <not-after, Unix seconds>`.
pub(super) const KEY_CERT: &str = "cert";
/// `limit=8 running=3 overloaded=12 budget=102 ejected=<node>/<service>,…`: where the
/// node's policies stand ([`Policies`]), as nodes of 0.1.0 gossiped it (read, never
/// written: `meshrpc.policies` answers it now).
pub(super) const KEY_POLICIES: &str = "policies";
pub(super) const PREFIX_SERVICE: &str = "svc:";
/// `ver:<service>`: the version of the service, as nodes of 0.1.0 gossiped it (read,
/// never written: the version is in the `svc:` value now).
pub(super) const PREFIX_VERSION: &str = "ver:";
/// `split:<service>`: a weighted split rule, as this node last saw it (see [`Split`]).
pub(super) const PREFIX_SPLIT: &str = "split:";
/// `mirror:<service>`: a mirror rule (`<version>=<percent>`), as this node last saw it.
pub(super) const PREFIX_MIRROR: &str = "mirror:";
pub(super) const PREFIX_HTTP: &str = "http:";

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Joined, not yet accepting calls.
    Starting,
    /// Takes calls.
    Serving,
    /// Finishing in-flight calls before it leaves: pick it no more.
    Draining,
}

/// One node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Unique node id.
    pub id: String,
    /// The node's name (usually its main service).
    pub name: String,
    /// Mesh (and HTTP) address; `None` for client-only nodes.
    pub addr: Option<SocketAddr>,
    /// Starting, serving or draining.
    pub state: MemberState,
    /// Published services by name.
    pub services: BTreeMap<String, Advertised>,
    /// Published plain HTTP routers.
    pub http: Vec<String>,
    /// When the node started (Unix ms).
    pub started_ms: u64,
    /// SHA-256 of the node's certificate, as it gossips it (mutual TLS).
    pub cert_fingerprint: Option<String>,
    /// When that certificate expires (Unix seconds).
    pub cert_not_after: Option<u64>,
    /// This is the local node.
    pub is_self: bool,
    /// Split rules this member gossips, by service (each node passes on the newest it saw).
    pub splits: BTreeMap<String, Split>,
    /// Mirror rules this member gossips, by service: one entry, `(version, percent)`.
    pub mirrors: BTreeMap<String, Split>,
    /// Where its resilience policies stand, if it gossips them (nodes of 0.1.0; newer
    /// ones are asked: [`Cluster::member_policies`](crate::Cluster::member_policies)).
    pub policies: Option<Policies>,
}

/// Where a node's resilience policies stand (docs/resilience.md), as `meshrpc status`
/// shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// Its concurrency limit now (`None`: no limit, or a client-only node).
    pub concurrency_limit: Option<u64>,
    /// Calls its handlers run now.
    pub running: u64,
    /// Calls it refused at its limit so far.
    pub overloaded: u64,
    /// Retries its retry budget allows now.
    pub retry_budget_left: u64,
    /// Replicas it has ejected from picking now: `<node id>/<service>` (at most 8 listed).
    pub ejected: Vec<String>,
}

impl Policies {
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        let limit = self.concurrency_limit.map_or("none".to_owned(), |l| l.to_string());
        let mut out = format!(
            "limit={limit} running={} overloaded={} budget={}",
            self.running, self.overloaded, self.retry_budget_left
        );
        if !self.ejected.is_empty() {
            let listed: Vec<&str> = self.ejected.iter().map(String::as_str).collect();
            out.push_str(&format!(" ejected={}", listed.join(",")));
        }
        out
    }

    fn decode(v: &str) -> Policies {
        let mut p = Policies::default();
        for (k, v) in v.split(' ').filter_map(|kv| kv.split_once('=')) {
            match k {
                "limit" => p.concurrency_limit = v.parse().ok(),
                "running" => p.running = v.parse().unwrap_or(0),
                "overloaded" => p.overloaded = v.parse().unwrap_or(0),
                "budget" => p.retry_budget_left = v.parse().unwrap_or(0),
                "ejected" => p.ejected = v.split(',').map(str::to_owned).collect(),
                _ => {}
            }
        }
        p
    }
}

impl Member {
    /// Reads a member from its gossiped key/values.
    pub fn from_state(
        id: &str,
        kv: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
        is_self: bool,
    ) -> Member {
        let mut m = Member {
            id: id.to_owned(),
            name: String::new(),
            addr: None,
            state: MemberState::Starting,
            services: BTreeMap::new(),
            http: Vec::new(),
            started_ms: 0,
            cert_fingerprint: None,
            cert_not_after: None,
            is_self,
            splits: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            policies: None,
        };
        let mut versions = Vec::new();
        for (k, v) in kv {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                KEY_NAME => m.name = v.to_owned(),
                KEY_ADDR => m.addr = v.parse().ok(),
                KEY_STARTED => m.started_ms = v.parse().unwrap_or(0),
                KEY_POLICIES => m.policies = Some(Policies::decode(v)),
                KEY_CERT => {
                    let mut parts = v.split(' ');
                    m.cert_fingerprint = parts.next().map(str::to_owned);
                    m.cert_not_after = parts.next().and_then(|t| t.parse().ok());
                }
                KEY_STATE => {
                    m.state = match v {
                        "serving" => MemberState::Serving,
                        "draining" => MemberState::Draining,
                        _ => MemberState::Starting,
                    }
                }
                _ => {
                    if let Some(name) = k.strip_prefix(PREFIX_SERVICE) {
                        m.services.insert(name.to_owned(), Advertised::decode(v));
                    } else if let Some(name) = k.strip_prefix(PREFIX_HTTP) {
                        m.http.push(name.to_owned());
                    } else if let Some(name) = k.strip_prefix(PREFIX_VERSION) {
                        versions.push((name.to_owned(), v.to_owned()));
                    } else if let Some(name) = k.strip_prefix(PREFIX_SPLIT) {
                        if let Some(split) = Split::decode(v) {
                            m.splits.insert(name.to_owned(), split);
                        }
                    } else if let Some(name) = k.strip_prefix(PREFIX_MIRROR) {
                        if let Some(mirror) = Split::decode(v) {
                            m.mirrors.insert(name.to_owned(), mirror);
                        }
                    }
                }
            }
        }
        for (service, version) in versions {
            if let Some(adv) = m.services.get_mut(&service) {
                adv.version = version;
            }
        }
        m
    }

    /// True if this member takes calls for `service` (built from the same method set,
    /// when `fingerprint` is given).
    pub fn serves(&self, service: &str, fingerprint: Option<&str>) -> bool {
        self.state == MemberState::Serving
            && self.addr.is_some()
            && self.services.get(service).is_some_and(|s| fingerprint.is_none_or(|want| want == s.fingerprint))
    }
}

/// A published service as gossiped: its fingerprint and methods with argument names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// Fingerprint of the method set (see `ServiceSpec::fingerprint`).
    pub fingerprint: String,
    /// The version of the service this member runs (empty if it does not say).
    pub version: String,
    /// The methods, in declaration order.
    pub methods: Vec<AdvertisedMethod>,
}

/// A method as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedMethod {
    /// Method name.
    pub name: String,
    /// Argument names.
    pub args: Vec<String>,
    /// The argument that is a stream of the caller's items, if any.
    pub items: Option<String>,
    /// The answer is a stream.
    pub streams: bool,
    /// Marked idempotent (its calls may be retried, hedged and mirrored).
    pub idempotent: bool,
    /// The method's own timeout, if it has one.
    #[serde(serialize_with = "millis", deserialize_with = "from_millis")]
    pub timeout: Option<Duration>,
    /// Slow calls are hedged.
    pub hedge: bool,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
        None => s.serialize_none(),
    }
}

fn from_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let ms: Option<f64> = Option::deserialize(d)?;
    ms.map(|ms| Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)).transpose()
}

impl Advertised {
    /// `<fingerprint> #<digest> <version>`: what gossip carries about a published service
    /// (a few dozen bytes, whatever its size; no version: none said). The method list
    /// itself ([`method_list`]) is fetched over the mesh by the first two and cached
    /// ([`super::methods`]).
    ///
    /// [`method_list`]: Self::method_list
    pub(super) fn encode(spec: &ServiceSpec, version: &str) -> String {
        let key = format!("{} #{}", spec.fingerprint(), Self::digest(spec.name, &Self::method_list(spec)));
        match version.is_empty() || version.contains(char::is_whitespace) {
            true => key,
            false => format!("{key} {version}"),
        }
    }

    /// `!greet(name) send_postcard(card) watch(filter)* chat(room,*lines)* !^get(id)@200`:
    /// `!` before a method marks it idempotent, `^` hedged; `*` before an argument the
    /// stream of the caller's items, `*` after `)` a stream answer; `@` its timeout in
    /// milliseconds. (Nodes of 0.1.0 gossiped it after the fingerprint.)
    pub(super) fn method_list(spec: &ServiceSpec) -> String {
        let mut out = Vec::with_capacity(spec.methods.len());
        for m in spec.methods {
            let args: Vec<String> =
                m.args.iter().map(|a| if m.items == Some(*a) { format!("*{a}") } else { (*a).to_owned() }).collect();
            let idempotent = if m.idempotent { "!" } else { "" };
            let hedge = if m.hedge { "^" } else { "" };
            let streams = if m.streams { "*" } else { "" };
            let timeout = m.timeout.map_or(String::new(), |t| format!("@{}", t.as_secs_f64() * 1e3));
            out.push(format!("{idempotent}{hedge}{}({}){streams}{timeout}", m.name, args.join(",")));
        }
        out.join(" ")
    }

    /// The digest of a service's method list, options included (the fingerprint covers
    /// only what breaks a caller): with the fingerprint, the key it is fetched by. The
    /// first 64 bits of SHA-256 over `service 0xff list`, base64url (11 characters): a
    /// member that wants to hand out another list under someone's key must find a
    /// second preimage of 64 bits, not of 32 (gossip bytes are counted: decisions.md).
    pub(super) fn digest(service: &str, method_list: &str) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(service.as_bytes());
        ctx.update(&[0xff]);
        ctx.update(method_list.as_bytes());
        let hash = ctx.finish();
        base64url(&hash.as_ref()[..8])
    }

    /// The `(fingerprint, digest)` of a gossiped service value, when its methods are to
    /// be fetched (`None`: an older node's value, which lists them itself).
    pub(super) fn key_of(v: &str) -> Option<(&str, &str)> {
        let mut parts = v.split(' ');
        let fingerprint = parts.next()?;
        Some((fingerprint, parts.next()?.strip_prefix('#')?))
    }

    /// Reads a method list fetched for `(service, fingerprint, digest)`: `None` unless it
    /// hashes to both (a node cannot hand out another list under a key).
    pub(super) fn checked_methods(
        service: &str,
        fingerprint: &str,
        digest: &str,
        list: &str,
    ) -> Option<Vec<AdvertisedMethod>> {
        if Self::digest(service, list) != digest {
            return None;
        }
        let methods = Self::parse_methods(list)?;
        let mut h = Fnv::new(service);
        for m in &methods {
            h.method(&m.name, m.args.iter().map(String::as_str), m.items.as_deref(), m.streams);
        }
        (h.hex() == fingerprint).then_some(methods)
    }

    fn decode(v: &str) -> Advertised {
        let (fingerprint, rest) = v.split_once(' ').unwrap_or((v, ""));
        let (methods, version) = match rest.strip_prefix('#') {
            // The methods are fetched and filled in by the view ([`super::methods`]).
            Some(rest) => (Vec::new(), rest.split_once(' ').map_or("", |(_, version)| version)),
            // A node of 0.1.0: its methods follow, its version is under `ver:`.
            None => (Self::parse_methods(rest).unwrap_or_default(), ""),
        };
        Advertised { fingerprint: fingerprint.to_owned(), version: version.to_owned(), methods }
    }

    /// Parses a [`method_list`](Self::method_list); `None` if any method is malformed.
    fn parse_methods(list: &str) -> Option<Vec<AdvertisedMethod>> {
        list.split(' ')
            .filter(|m| !m.is_empty())
            .map(|m| {
                let (m, timeout) = match m.rsplit_once('@') {
                    Some((m, ms)) => {
                        let ms: f64 = ms.parse().ok()?;
                        (m, Some(Duration::try_from_secs_f64(ms / 1e3).ok()?))
                    }
                    None => (m, None),
                };
                let (m, streams) = m.strip_suffix('*').map_or((m, false), |m| (m, true));
                let (m, idempotent) = m.strip_prefix('!').map_or((m, false), |m| (m, true));
                let (m, hedge) = m.strip_prefix('^').map_or((m, false), |m| (m, true));
                let (name, args) = m.strip_suffix(')')?.split_once('(')?;
                let mut items = None;
                let args = args
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(|a| match a.strip_prefix('*') {
                        Some(stream) => {
                            items = Some(stream.to_owned());
                            stream.to_owned()
                        }
                        None => a.to_owned(),
                    })
                    .collect();
                Some(AdvertisedMethod { name: name.to_owned(), args, items, streams, idempotent, timeout, hedge })
            })
            .collect()
    }

    /// The method of this name, if the service has one.
    pub fn method(&self, name: &str) -> Option<&AdvertisedMethod> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// True if the service has a method of this name.
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.iter().any(|m| m.name == name)
    }
}

/// Base64url without padding (RFC 4648 §5), for the few bytes of a digest.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A weighted split of a service's calls between its versions (`v1=90 v2=10`), set at
/// runtime (`meshrpc split`, [`Cluster::set_split`](crate::Cluster::set_split)): the newest
/// rule wins, and every node passes on the newest it saw, so a rule outlives the node that
/// set it. No weights: the rule is cleared. With mutual TLS, a rule is signed by its
/// writer and only writers the policy allows are followed (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// When it was set (Unix ms).
    pub set_ms: u64,
    /// Who set it: with mutual TLS, the node name of the certificate that signed it.
    pub set_by: String,
    /// `(version, weight)`, in the order given.
    pub weights: Vec<(String, u32)>,
    /// The writer's signature and certificate (mutual TLS), as gossiped (and shared with
    /// callers that follow a node's view, which check it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proof: Option<String>,
}

impl Split {
    /// Newest first: by time, then by setter (so every node agrees on one winner).
    pub(crate) fn order(&self) -> (u64, &str) {
        (self.set_ms, &self.set_by)
    }

    /// `<set_ms> <set_by> v1=90 v2=10 ~<signature>` (no weights: cleared; the signature
    /// with mutual TLS only).
    pub(crate) fn encode(&self) -> String {
        let mut out = format!("{} {}", self.set_ms, self.set_by);
        for (version, weight) in &self.weights {
            out.push_str(&format!(" {version}={weight}"));
        }
        if let Some(proof) = &self.proof {
            out.push_str(&format!(" ~{proof}"));
        }
        out
    }

    pub(crate) fn decode(v: &str) -> Option<Split> {
        let mut parts = v.split(' ');
        let set_ms = parts.next()?.parse().ok()?;
        let set_by = parts.next()?.to_owned();
        let mut proof = None;
        let mut weights = Vec::new();
        for part in parts {
            match part.strip_prefix('~') {
                Some(token) if proof.is_none() => proof = Some(token.to_owned()),
                Some(_) => return None,
                None => {
                    let (version, weight) = part.split_once('=')?;
                    weights.push((version.to_owned(), weight.parse().ok()?));
                }
            }
        }
        Some(Split { set_ms, set_by, weights, proof })
    }

    /// Parses `v1=90 v2=10` (or `v1=90,v2=10`) as given on a command line.
    pub fn parse_weights(text: &str) -> Result<Vec<(String, u32)>, Error> {
        let weights: Vec<(String, u32)> = text
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (version, weight) = p.split_once('=').ok_or_else(|| {
                    Error::bad_request(format!("`{p}`: write each share as VERSION=WEIGHT, e.g. v1=90 v2=10"))
                })?;
                let weight = weight
                    .parse::<u32>()
                    .map_err(|_| Error::bad_request(format!("`{p}`: the weight must be a whole number")))?;
                if version.is_empty() || version.contains(char::is_whitespace) {
                    return Err(Error::bad_request(format!("`{p}`: a version is one word")));
                }
                Ok((version.to_owned(), weight))
            })
            .collect::<Result<_, _>>()?;
        if weights.is_empty() || weights.iter().all(|(_, w)| *w == 0) {
            return Err(Error::bad_request("a split needs at least one version with a weight above 0"));
        }
        Ok(weights)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::View;

    #[test]
    fn the_newest_split_wins_and_a_clear_is_a_rule_too() {
        let member = |id: &str, split: &str| Member::from_state(id, [("split:greeter", split)], false);
        let view = View {
            members: vec![
                member("a", "100 ops v1=90 v2=10"),
                member("b", "200 ops v1=50 v2=50"),
                member("c", "150 dev v2=100"),
            ],
        };
        assert_eq!(view.split("greeter").unwrap().weights[1], ("v2".to_string(), 50));
        let cleared = View { members: vec![member("a", "100 ops v1=90 v2=10"), member("b", "300 ops")] };
        assert_eq!(cleared.split("greeter"), None);
        assert_eq!(cleared.newest_split("greeter").unwrap().set_ms, 300);
        assert!(Split::parse_weights("v1=90, v2=10").is_ok());
        assert!(Split::parse_weights("v1=0").is_err());
        assert!(Split::parse_weights("v1:90").unwrap_err().to_string().contains("VERSION=WEIGHT"));
    }

    #[test]
    fn digests_are_base64url() {
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        let digest = Advertised::digest("greeter", "greet(name)");
        assert_eq!(digest.len(), 11);
        assert_ne!(digest, Advertised::digest("greeter", "!greet(name)"), "options change the digest");
    }

    #[test]
    fn a_service_is_gossiped_by_key_and_version_and_older_nodes_still_read() {
        use crate::spec::MethodSpec;
        const SPEC: ServiceSpec = ServiceSpec {
            name: "greeter",
            trait_name: "Greeter",
            version: "0.1.0",
            methods: &[MethodSpec::unary("greet", &["name"])],
        };
        let value = Advertised::encode(&SPEC, "2.1.0");
        let m = Member::from_state("g-1", [("svc:greeter", value.as_str())], false);
        let adv = &m.services["greeter"];
        assert_eq!((adv.fingerprint.clone(), adv.version.as_str()), (SPEC.fingerprint(), "2.1.0"));
        assert!(adv.methods.is_empty(), "methods are fetched by key, not read from gossip");
        let (fingerprint, digest) = Advertised::key_of(&value).unwrap();
        let list = Advertised::method_list(&SPEC);
        assert_eq!(Advertised::checked_methods("greeter", fingerprint, digest, &list).unwrap()[0].name, "greet");
        assert!(Advertised::checked_methods("other", fingerprint, digest, &list).is_none());
        // No version said: the key alone.
        assert_eq!(Advertised::key_of(&Advertised::encode(&SPEC, "")), Some((fingerprint, digest)));
        // A node of 0.1.0: methods inline, the version under `ver:`.
        let old = format!("{fingerprint} {list}");
        let m = Member::from_state("g-0", [("svc:greeter", old.as_str()), ("ver:greeter", "1.0.0")], false);
        assert_eq!((m.services["greeter"].methods.len(), m.services["greeter"].version.as_str()), (1, "1.0.0"));
        assert_eq!(Advertised::key_of(&old), None);
    }

    #[test]
    fn a_member_reads_back_what_it_advertised() {
        let kv = [
            ("name", "greeter"),
            ("addr", "127.0.0.1:11999"),
            ("state", "serving"),
            (
                "svc:greeter",
                "abc !greet(name) send_postcard(card) ping() chat(room,*lines)* !^get(id)@0.5 slow()*@2000",
            ),
            ("http:greeter", ""),
            ("started", "42"),
            ("ver:greeter", "2.1.0"),
            ("split:greeter", "1700000000000 ops-cli v1=90 v2=10"),
            ("policies", "limit=8 running=3 overloaded=12 budget=102 ejected=b-1/lab,c-2/lab"),
            ("unknown-key", "ignored"),
        ];
        let m = Member::from_state("greeter-1", kv, false);
        assert_eq!(m.addr, Some("127.0.0.1:11999".parse().unwrap()));
        assert_eq!(m.services["greeter"].version, "2.1.0");
        let policies = m.policies.clone().unwrap();
        assert_eq!((policies.concurrency_limit, policies.overloaded, policies.ejected.len()), (Some(8), 12, 2));
        assert_eq!(Policies::decode(&policies.encode()), policies);
        let split = &m.splits["greeter"];
        assert_eq!((split.set_ms, split.set_by.as_str()), (1_700_000_000_000, "ops-cli"));
        assert_eq!(split.weights, [("v1".to_string(), 90), ("v2".to_string(), 10)]);
        assert_eq!(Split::decode(&split.encode()).as_ref(), Some(split));
        assert_eq!(
            (m.state, m.started_ms, m.http.as_slice()),
            (MemberState::Serving, 42, &["greeter".to_string()][..])
        );
        assert!(m.serves("greeter", None) && m.serves("greeter", Some("abc")));
        let methods = &m.services["greeter"].methods;
        assert_eq!(
            (methods[1].name.as_str(), methods[1].args.as_slice()),
            ("send_postcard", &["card".to_string()][..])
        );
        assert_eq!((methods[2].name.as_str(), methods[2].args.len()), ("ping", 0));
        let chat = &methods[3];
        assert_eq!((chat.name.as_str(), chat.items.as_deref(), chat.streams), ("chat", Some("lines"), true));
        assert!(methods[0].idempotent && !methods[1].idempotent);
        assert_eq!(chat.args, ["room", "lines"]);
        let (get, slow) = (&methods[4], &methods[5]);
        assert_eq!((get.name.as_str(), get.idempotent, get.hedge), ("get", true, true));
        assert_eq!(get.timeout, Some(Duration::from_micros(500)));
        assert_eq!((slow.streams, slow.timeout, slow.hedge), (true, Some(Duration::from_secs(2)), false));
        assert!(methods[..4].iter().all(|m| m.timeout.is_none() && !m.hedge));
        assert!(!m.serves("greeter", Some("other-version")), "incompatible replica is not a replica");
        let draining = Member { state: MemberState::Draining, ..m.clone() };
        let view = View { members: vec![m, draining] };
        assert_eq!(view.replicas("greeter", None).count(), 1);
        assert!(view.knows("greeter") && !view.knows("billing"));
    }
}
