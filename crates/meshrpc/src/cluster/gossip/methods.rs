//! Method lists fetched, not flooded (decisions.md's gossip budget).
//!
//! Gossip carries a published service as `<fingerprint> #<digest>`, a few dozen bytes
//! whatever its size; the method list and its options are fetched over the mesh
//! (`meshrpc.methods`) by that key, once per distinct key however many members share it,
//! and kept here. A list is accepted only if it hashes to the key it was asked for, so
//! whichever member answers cannot hand out another service's contract.
//!
//! Bounds: at most [`MAX_KNOWN`] lists kept, [`MAX_KNOWN_BYTES`] of memory in all (those
//! no member of the view advertises any more are dropped at each new view; past either, a
//! fetched list is not kept and asked again later), each at most [`MAX_LIST_BYTES`] and
//! [`MAX_METHODS`] methods; at most [`MAX_WANTED`] fetches at once, one per key, a failed
//! key asked again after [`RETRY`], doubling up to [`RETRY_AT_MOST`].

use std::{
    collections::BTreeMap,
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
/// Memory of all the lists kept, at most: their text and their parsed methods, ≈ 128
/// bytes a method (a few hundred services of a few dozen methods take well under 1 MiB;
/// this node's own lists are kept whatever they cost).
pub(crate) const MAX_KNOWN_BYTES: usize = 16 * 1024 * 1024;
/// Most fetches waiting for the fetcher.
const MAX_WANTED: usize = 256;
/// A key whose fetch failed is asked again after this long, doubled with each failure in
/// a row up to [`RETRY_AT_MOST`].
pub(crate) const RETRY: Duration = Duration::from_secs(1);
pub(crate) const RETRY_AT_MOST: Duration = Duration::from_secs(60);
/// Most methods in one list.
pub(crate) const MAX_METHODS: usize = 4096;

/// What a method list is fetched by: the service, its fingerprint and its list's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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
    known: Mutex<BTreeMap<ListKey, Known>>,
    /// Keys being fetched, or failed lately: when they may be asked again.
    asked: Mutex<BTreeMap<ListKey, Ask>>,
    wanted: mpsc::Sender<Wanted>,
    /// A list was learnt, or a failed one may be asked again: the view is built anew.
    pub(crate) changed: Notify,
    /// Lists fetched and taken so far (`/metrics`: one per distinct key, not per member).
    fetched: std::sync::atomic::AtomicU64,
    /// [`MAX_KNOWN_BYTES`] (smaller in tests).
    max_bytes: usize,
}

/// A key asked for: until when nobody asks again (far ahead while a fetch runs), and how
/// many fetches failed in a row.
struct Ask {
    until: Instant,
    failures: u32,
    /// Why the last fetch failed.
    why: Option<String>,
}

/// What [`MethodBook::learn`] did with a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Kept.
    Taken,
    /// Not the list its key names (or too large): another member may have the right one.
    Rejected,
    /// The book is full: asked again later.
    NoRoom,
}

struct Known {
    /// The list as text (what `meshrpc.methods` answers; 0.1.0 nodes gossiped it).
    text: Arc<str>,
    methods: Arc<Vec<AdvertisedMethod>>,
    /// This node's own: kept while the node runs.
    own: bool,
}

impl Known {
    /// Memory it holds, estimated: its text and its parsed methods.
    fn cost(&self) -> usize {
        self.text.len() + self.methods.len() * 128
    }
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
        match Advertised::checked_methods(&key.service, &key.fingerprint, &key.digest, &text) {
            Some(methods) => {
                let known = Known { text: text.into(), methods: Arc::new(methods), own: true };
                self.known.lock().unwrap().insert(key, known);
            }
            // Only a hand-made spec (a name with a space, `(` or `@`) reads back otherwise.
            None => tracing::error!(
                service = spec.name,
                "the service's method list does not read back: members will not learn its methods"
            ),
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
    pub(crate) fn want(&self, advertised: &[ListKey], missing: BTreeMap<ListKey, Vec<SocketAddr>>) {
        let keep: std::collections::HashSet<&ListKey> = advertised.iter().collect();
        self.known.lock().unwrap().retain(|key, k| k.own || keep.contains(key));
        let now = crate::clock::now();
        let mut asked = self.asked.lock().unwrap();
        // What nobody advertises any more is not remembered either.
        asked.retain(|key, _| keep.contains(key));
        for (key, from) in missing {
            if from.is_empty() || asked.get(&key).is_some_and(|a| a.until > now) {
                continue;
            }
            let in_flight = asked.values().filter(|a| a.until > now).count();
            if in_flight >= MAX_WANTED {
                break;
            }
            // Learnt since the view was read ([`learn`](Self::learn) keeps a list before
            // it clears its ask): not asked twice.
            if self.known.lock().unwrap().contains_key(&key) {
                continue;
            }
            // Until it is answered (or fails), nobody asks again.
            let (failures, why) = asked.get(&key).map_or((0, None), |a| (a.failures, a.why.clone()));
            asked.insert(key.clone(), Ask { until: now + Duration::from_secs(3600), failures, why: why.clone() });
            if self.wanted.try_send(Wanted { key: key.clone(), from }).is_err() {
                asked.insert(key, Ask { until: now, failures, why });
            }
        }
    }

    /// Takes a fetched list if it is the one its key names and there is room for it.
    pub(crate) fn learn(&self, key: ListKey, text: &str) -> Learned {
        let checked = (text.len() <= MAX_LIST_BYTES)
            .then(|| Advertised::checked_methods(&key.service, &key.fingerprint, &key.digest, text))
            .flatten()
            .filter(|methods| methods.len() <= MAX_METHODS);
        let Some(methods) = checked else { return Learned::Rejected };
        {
            let mut known = self.known.lock().unwrap();
            let held: usize = known.values().map(|k| k.cost()).sum();
            let known_entry = Known { text: text.into(), methods: Arc::new(methods), own: false };
            if known.len() >= MAX_KNOWN || held + known_entry.cost() > self.max_bytes {
                return Learned::NoRoom;
            }
            known.insert(key.clone(), known_entry);
        }
        self.asked.lock().unwrap().remove(&key);
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
        Learned::Taken
    }

    /// No member gave the list of this key: it is asked again after a pause that doubles
    /// with each failure, from [`RETRY`] up to [`RETRY_AT_MOST`]; returns the pause.
    pub(crate) fn failed(&self, key: &ListKey, why: String) -> Duration {
        let mut asked = self.asked.lock().unwrap();
        let ask = asked.entry(key.clone()).or_insert(Ask { until: crate::clock::now(), failures: 0, why: None });
        ask.failures = ask.failures.saturating_add(1);
        ask.why = Some(why);
        let pause = RETRY.saturating_mul(1 << (ask.failures - 1).min(6)).min(RETRY_AT_MOST);
        ask.until = crate::clock::now() + pause;
        pause
    }

    /// The services whose method list could not be fetched so far, with why (the last
    /// failure of each).
    pub(crate) fn unfetched(&self) -> Vec<(String, String)> {
        let asked = self.asked.lock().unwrap();
        let mut out: Vec<(String, String)> =
            asked.iter().filter_map(|(key, a)| Some((key.service.clone(), a.why.clone()?))).collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
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
        book.want(std::slice::from_ref(&key), BTreeMap::from([(key.clone(), from.clone())]));
        book.want(std::slice::from_ref(&key), BTreeMap::from([(key.clone(), from)]));
        let wanted = rx.try_recv().unwrap();
        assert_eq!((wanted.key, wanted.from.len()), (key.clone(), 2));
        assert!(rx.try_recv().is_err(), "one fetch per key, however often the view changes");

        // Another service's list, or the same with an option changed, is refused.
        const NOT_IDEMPOTENT: &[MethodSpec] =
            &[MethodSpec::unary("greet", &["name"]), MethodSpec::unary("get", &["id"])];
        let forged = Advertised::method_list(&ServiceSpec { methods: NOT_IDEMPOTENT, ..SPEC });
        assert_eq!(book.learn(key.clone(), &forged), Learned::Rejected);
        assert_eq!(book.learn(key.clone(), "greet(name"), Learned::Rejected);
        assert!(book.methods(&key).is_none());
        let text = Advertised::method_list(&SPEC);
        assert_eq!(book.learn(key.clone(), &text), Learned::Taken);
        let methods = book.methods(&key).unwrap();
        assert_eq!((methods.len(), methods[1].idempotent), (2, true));
        assert_eq!(&*book.text(&key).unwrap(), text);

        // Lists nobody advertises any more are dropped; this node's own are kept.
        book.publish(&ServiceSpec { name: "own", ..SPEC });
        book.want(&[], BTreeMap::new());
        assert!(book.methods(&key).is_none());
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn past_its_byte_budget_the_book_keeps_no_more_lists() {
        let (book, _wanted) = MethodBook::new();
        let mut book = Arc::into_inner(book).unwrap();
        let a = ServiceSpec { name: "a", ..SPEC };
        let b = ServiceSpec { name: "b", ..SPEC };
        let list = Advertised::method_list(&SPEC);
        // Room for one list of two methods (text and parsed), not two.
        book.max_bytes = list.len() + 2 * 128;
        assert_eq!(book.learn(key_of(&a), &list), Learned::Taken);
        assert_eq!(book.learn(key_of(&b), &list), Learned::NoRoom, "over the budget");
        assert!(book.methods(&key_of(&b)).is_none());
        // Asked again after a pause that doubles with each failure.
        assert_eq!(book.failed(&key_of(&b), "full".into()), RETRY);
        assert_eq!(book.unfetched(), [("b".to_string(), "full".to_string())], "why is kept, for errors");
        assert_eq!(book.failed(&key_of(&b), "full".into()), RETRY * 2);
        for _ in 0..10 {
            book.failed(&key_of(&b), "full".into());
        }
        assert_eq!(book.failed(&key_of(&b), "full".into()), RETRY_AT_MOST);
        // Dropping what nobody advertises makes room.
        book.want(std::slice::from_ref(&key_of(&b)), BTreeMap::new());
        assert_eq!(book.learn(key_of(&b), &list), Learned::Taken);
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
