//! Method lists fetched, not flooded (decisions.md's gossip budget).
//!
//! Gossip carries a published service as `<fingerprint> #<digest>`, a few dozen bytes
//! whatever its size; the method list and its options are fetched over the mesh
//! (`meshrpc.methods`) by that key, once per distinct key however many members share it,
//! and kept here. A list is accepted only if it hashes to the key it was asked for, so
//! whichever member answers cannot hand out another service's contract.
//!
//! Bounds: at most [`MAX_KNOWN`] lists kept, [`MAX_KNOWN_BYTES`] of text in all (those no
//! member of the view advertises any more are dropped at each new view; past either, a
//! fetched list is not kept and asked again later), each at most [`MAX_LIST_BYTES`]; at most
//! [`MAX_WANTED`] fetches queued, one per key in flight, a failed key asked again after
//! [`RETRY`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, Notify};

use super::schema::{Advertised, AdvertisedMethod};
use crate::spec::ServiceSpec;

/// Most method lists kept at once.
pub(crate) const MAX_KNOWN: usize = 4096;
/// The largest method list accepted (a service of 2,000 methods fits).
pub(crate) const MAX_LIST_BYTES: usize = 256 * 1024;
/// Text of all the lists kept, at most (a few hundred services of a few dozen methods
/// take well under 1 MiB; this node's own lists are kept whatever it costs).
pub(crate) const MAX_KNOWN_BYTES: usize = 16 * 1024 * 1024;
/// Most fetches waiting for the fetcher.
const MAX_WANTED: usize = 256;
/// A key whose fetch failed is asked again after this long.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// What a method list is fetched by: the service, its fingerprint and its list's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct ListKey {
    pub(crate) service: String,
    pub(crate) fingerprint: String,
    pub(crate) digest: String,
}

/// A list to fetch, and the members that advertise it.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub(crate) key: ListKey,
    pub(crate) from: Vec<SocketAddr>,
}

/// The method lists this node knows, by key.
pub(crate) struct MethodBook {
    known: Mutex<HashMap<ListKey, Known>>,
    /// Keys being fetched, or failed lately: when they may be asked again.
    asked: Mutex<HashMap<ListKey, Instant>>,
    wanted: mpsc::Sender<Wanted>,
    /// A list was learnt, or a failed one may be asked again: the view is built anew.
    pub(crate) changed: Notify,
    /// Lists fetched and taken so far (`/metrics`: one per distinct key, not per member).
    fetched: std::sync::atomic::AtomicU64,
    /// [`MAX_KNOWN_BYTES`] (smaller in tests).
    max_bytes: usize,
}

struct Known {
    /// The list as text (what `meshrpc.methods` answers; 0.1.0 nodes gossiped it).
    text: Arc<str>,
    methods: Arc<Vec<AdvertisedMethod>>,
    /// This node's own: kept while the node runs.
    own: bool,
}

impl MethodBook {
    /// A book, and the receiver of what it wants fetched.
    pub(crate) fn new() -> (Arc<MethodBook>, mpsc::Receiver<Wanted>) {
        let (wanted, rx) = mpsc::channel(MAX_WANTED);
        let book = MethodBook {
            known: Mutex::default(),
            asked: Mutex::default(),
            wanted,
            changed: Notify::new(),
            fetched: Default::default(),
            max_bytes: MAX_KNOWN_BYTES,
        };
        (Arc::new(book), rx)
    }

    /// Keeps this node's own service's list (never fetched).
    pub(crate) fn publish(&self, spec: &ServiceSpec) {
        let text = Advertised::method_list(spec);
        let key = ListKey {
            service: spec.name.to_owned(),
            fingerprint: spec.fingerprint(),
            digest: Advertised::digest(spec.name, &text),
        };
        if let Some(methods) = Advertised::checked_methods(&key.service, &key.fingerprint, &key.digest, &text) {
            let known = Known { text: text.into(), methods: Arc::new(methods), own: true };
            self.known.lock().unwrap().insert(key, known);
        }
    }

    /// The list of this key, if known.
    pub(crate) fn methods(&self, key: &ListKey) -> Option<Arc<Vec<AdvertisedMethod>>> {
        self.known.lock().unwrap().get(key).map(|k| k.methods.clone())
    }

    /// The text of this key's list, as `meshrpc.methods` answers it.
    pub(crate) fn text(&self, key: &ListKey) -> Option<Arc<str>> {
        self.known.lock().unwrap().get(key).map(|k| k.text.clone())
    }

    /// After a new view: forgets lists no member advertises (but this node's own), and
    /// asks for the ones missing, each from the members that advertise it.
    pub(crate) fn want(&self, advertised: &[ListKey], missing: HashMap<ListKey, Vec<SocketAddr>>) {
        {
            let keep: std::collections::HashSet<&ListKey> = advertised.iter().collect();
            self.known.lock().unwrap().retain(|key, k| k.own || keep.contains(key));
        }
        let now = Instant::now();
        let mut asked = self.asked.lock().unwrap();
        asked.retain(|_, until| *until > now);
        for (key, from) in missing {
            if from.is_empty() || asked.contains_key(&key) || asked.len() >= MAX_WANTED {
                continue;
            }
            // Learnt since the view was read ([`learn`](Self::learn) keeps a list before
            // it clears its ask): not asked twice.
            if self.known.lock().unwrap().contains_key(&key) {
                continue;
            }
            // Until it is answered (or fails), nobody asks again.
            asked.insert(key.clone(), now + Duration::from_secs(3600));
            if self.wanted.try_send(Wanted { key: key.clone(), from }).is_err() {
                asked.remove(&key);
            }
        }
    }

    /// Takes a fetched list, if it is the one asked for; `false` if it is not.
    pub(crate) fn learn(&self, key: ListKey, text: &str) -> bool {
        let checked = (text.len() <= MAX_LIST_BYTES)
            .then(|| Advertised::checked_methods(&key.service, &key.fingerprint, &key.digest, text))
            .flatten();
        let Some(methods) = checked else {
            self.failed(&key);
            return false;
        };
        {
            let mut known = self.known.lock().unwrap();
            let bytes: usize = known.values().map(|k| k.text.len()).sum();
            if known.len() >= MAX_KNOWN || bytes + text.len() > self.max_bytes {
                drop(known);
                self.failed(&key);
                return false;
            }
            known.insert(key.clone(), Known { text: text.into(), methods: Arc::new(methods), own: false });
        }
        self.asked.lock().unwrap().remove(&key);
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
        true
    }

    /// No member could answer for this key: asked again after [`RETRY`].
    pub(crate) fn failed(&self, key: &ListKey) {
        self.asked.lock().unwrap().insert(key.clone(), Instant::now() + RETRY);
    }

    /// How many lists are kept (`/metrics`).
    pub(crate) fn len(&self) -> usize {
        self.known.lock().unwrap().len()
    }

    /// How many lists were fetched so far (`/metrics`).
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MethodSpec;

    const SPEC: ServiceSpec = ServiceSpec {
        name: "greeter",
        trait_name: "Greeter",
        version: "1",
        methods: &[
            MethodSpec::unary("greet", &["name"]),
            MethodSpec { idempotent: true, ..MethodSpec::unary("get", &["id"]) },
        ],
    };

    fn key_of(spec: &ServiceSpec) -> ListKey {
        let (fingerprint, digest) = {
            let v = Advertised::encode(spec, "1.0.0");
            let (f, d) = Advertised::key_of(&v).unwrap();
            (f.to_owned(), d.to_owned())
        };
        ListKey { service: spec.name.to_owned(), fingerprint, digest }
    }

    #[tokio::test]
    async fn a_list_is_fetched_once_and_taken_only_under_its_own_key() {
        let (book, mut rx) = MethodBook::new();
        let key = key_of(&SPEC);
        let from: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        book.want(std::slice::from_ref(&key), HashMap::from([(key.clone(), from.clone())]));
        book.want(std::slice::from_ref(&key), HashMap::from([(key.clone(), from)]));
        let wanted = rx.try_recv().unwrap();
        assert_eq!((wanted.key, wanted.from.len()), (key.clone(), 2));
        assert!(rx.try_recv().is_err(), "one fetch per key, however often the view changes");

        // Another service's list, or the same with an option changed, is refused.
        const NOT_IDEMPOTENT: &[MethodSpec] =
            &[MethodSpec::unary("greet", &["name"]), MethodSpec::unary("get", &["id"])];
        let forged = Advertised::method_list(&ServiceSpec { methods: NOT_IDEMPOTENT, ..SPEC });
        assert!(!book.learn(key.clone(), &forged));
        assert!(!book.learn(key.clone(), "greet(name"));
        assert!(book.methods(&key).is_none());
        let text = Advertised::method_list(&SPEC);
        assert!(book.learn(key.clone(), &text));
        let methods = book.methods(&key).unwrap();
        assert_eq!((methods.len(), methods[1].idempotent), (2, true));
        assert_eq!(&*book.text(&key).unwrap(), text);

        // Lists nobody advertises any more are dropped; this node's own are kept.
        book.publish(&ServiceSpec { name: "own", ..SPEC });
        book.want(&[], HashMap::new());
        assert!(book.methods(&key).is_none());
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn past_its_byte_budget_the_book_keeps_no_more_lists() {
        let (book, _wanted) = MethodBook::new();
        let mut book = Arc::into_inner(book).unwrap();
        book.max_bytes = 30;
        let a = ServiceSpec { name: "a", ..SPEC };
        let b = ServiceSpec { name: "b", ..SPEC };
        let list = Advertised::method_list(&SPEC);
        assert!(list.len() > 15 && list.len() <= 30, "{list}");
        assert!(book.learn(key_of(&a), &list));
        assert!(!book.learn(key_of(&b), &list), "over the budget");
        assert!(book.methods(&key_of(&b)).is_none());
        // Asked again once the pause is over, not before.
        assert!(book.asked.lock().unwrap().contains_key(&key_of(&b)));
        // Dropping what nobody advertises makes room.
        book.want(std::slice::from_ref(&key_of(&b)), HashMap::new());
        assert!(book.learn(key_of(&b), &list));
    }

    #[test]
    fn a_service_of_any_size_gossips_a_few_dozen_bytes() {
        let methods: Vec<MethodSpec> = (0..200)
            .map(|i| MethodSpec::unary(Box::leak(format!("method_{i}").into_boxed_str()), &["value"]))
            .collect();
        let wide = ServiceSpec { name: "wide", methods: Box::leak(methods.into_boxed_slice()), ..SPEC };
        assert!(Advertised::encode(&wide, "").len() < 30, "{}", Advertised::encode(&wide, ""));
        let key = key_of(&wide);
        let list = Advertised::method_list(&wide);
        assert!(list.len() > 3000);
        let methods = Advertised::checked_methods(&key.service, &key.fingerprint, &key.digest, &list).unwrap();
        assert_eq!(methods.len(), 200);
    }
}
