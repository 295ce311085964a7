//! Static description of a service, generated from its trait.

/// Where JSON Schemas of services' types are kept (and their references point): in an
/// OpenAPI document's components.
#[cfg_attr(not(any(feature = "http", feature = "schema")), allow(dead_code))]
pub(crate) const SCHEMA_COMPONENTS: &str = "#/components/schemas/";

/// A service's name and methods. Generated as `XClient::SPEC`; used by `wait_for`,
/// the gateway and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Service name: the first path segment of its routes (`greeter`).
    pub name: &'static str,
    /// The Rust trait it was generated from (`Greeter`).
    pub trait_name: &'static str,
    /// The version of the crate that defines the trait: what a node advertises for the
    /// service unless told another (`ClusterBuilder::service_version`,
    /// `MESHRPC_SERVICE_VERSION`). Not part of the fingerprint.
    pub version: &'static str,
    /// Methods in declaration order.
    pub methods: &'static [MethodSpec],
}

/// One method of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    /// Method name as on the wire and in routes (`send_postcard`).
    pub name: &'static str,
    /// Parameter names: the JSON object keys of the arguments (the stream of items, if
    /// the method takes one, is among them but travels as items, not in the object).
    pub args: &'static [&'static str],
    /// The parameter that is a stream of the caller's items (client and bidirectional
    /// streams).
    pub items: Option<&'static str>,
    /// The answer is a stream of items (server and bidirectional streams).
    pub streams: bool,
    /// Marked `#[meshrpc(idempotent)]`: running it twice does no harm, so its calls may
    /// be retried after they may have run, hedged, and mirrored to another version.
    pub idempotent: bool,
    /// `#[meshrpc(timeout = "200ms")]`: the deadline of a call that sets none sooner.
    /// Callers may shorten it, never extend it; the serving node enforces it too.
    pub timeout: Option<std::time::Duration>,
    /// `#[meshrpc(hedge)]` (idempotent, unary): a call still unanswered after the
    /// method's recent p95 latency is sent to a second replica; the first answer wins.
    pub hedge: bool,
}

impl MethodSpec {
    /// A method that takes and answers plain values.
    pub const fn unary(name: &'static str, args: &'static [&'static str]) -> MethodSpec {
        MethodSpec { name, args, items: None, streams: false, idempotent: false, timeout: None, hedge: false }
    }
}

impl ServiceSpec {
    /// Looks a method up by name.
    pub fn method(&self, name: &str) -> Option<&'static MethodSpec> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// Routes served by the HTTP side of any node (`POST /greeter/greet`).
    pub fn routes(&self) -> impl Iterator<Item = String> + '_ {
        self.methods.iter().map(move |m| format!("/{}/{}", self.name, m.name))
    }

    /// A short fingerprint of the method set (names and argument names), so a caller
    /// can tell a replica built from a different version of the trait.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv::new(self.name);
        for m in self.methods {
            h.method(m.name, m.args.iter().copied(), m.items, m.streams);
        }
        h.hex()
    }
}

/// FNV-1a over a contract's names: stable across builds and platforms, unlike std's
/// hasher. [`ServiceSpec::fingerprint`] and a gossiped method list (fetched by
/// fingerprint, checked against it) hash through this one path.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new(service: &str) -> Fnv {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.eat(service);
        h
    }

    pub(crate) fn eat(&mut self, s: &str) {
        for b in s.bytes().chain([0xff]) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn method<'a>(
        &mut self,
        name: &str,
        args: impl Iterator<Item = &'a str>,
        items: Option<&str>,
        streams: bool,
    ) {
        self.eat(name);
        for a in args {
            self.eat(a);
        }
        // Streams change the contract; unary methods hash as they always did.
        if let Some(items) = items {
            self.eat("*");
            self.eat(items);
        }
        if streams {
            self.eat("->*");
        }
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn value(&self) -> u64 {
        self.0
    }

    pub(crate) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The service every node answers itself (never published, never gossiped): `stats` (its
/// golden metrics), `schema` (a service's JSON Schemas), and with a cluster `view` and
/// `rule` (callers that do not gossip), `methods` (a service's method list, by key). A
/// policy (mutual TLS) rules it as any other, but `view`, `rule` and `methods`
/// (docs/security.md).
pub(crate) const NODE_SERVICE: &str = "meshrpc";

#[cfg(test)]
mod tests {
    use super::*;

    const A: ServiceSpec = ServiceSpec {
        name: "greeter",
        trait_name: "Greeter",
        version: "0.1.0",
        methods: &[MethodSpec::unary("greet", &["name"])],
    };

    #[test]
    fn fingerprint_changes_with_the_method_set() {
        const RENAMED: &[MethodSpec] = &[MethodSpec::unary("greet", &["nom"])];
        const STREAMING: &[MethodSpec] = &[MethodSpec { streams: true, ..MethodSpec::unary("greet", &["name"]) }];
        let b = ServiceSpec { methods: RENAMED, ..A };
        assert_eq!(A.fingerprint(), A.fingerprint());
        assert_ne!(A.fingerprint(), b.fingerprint());
        let streaming = ServiceSpec { methods: STREAMING, ..A };
        assert_ne!(A.fingerprint(), streaming.fingerprint(), "a value that becomes a stream is another contract");
        assert_eq!(A.fingerprint(), ServiceSpec { version: "2.0.0", ..A }.fingerprint(), "versions share a contract");
        assert_eq!(A.routes().collect::<Vec<_>>(), ["/greeter/greet"]);
    }
}
