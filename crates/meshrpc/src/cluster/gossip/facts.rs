//! Members' facts (name, addresses, state, services, rules: the key/values of [`schema`])
//! and how they travel, without I/O: a node announces a new version of its own facts in a
//! few bytes piggybacked on SWIM, and whoever lacks that version asks the node for it,
//! page by page ([`wire::PAGE`] bytes each). So no datagram grows with a node's facts,
//! and a member's facts come from the member itself.
//!
//! Bounds: a node's facts are at most [`MAX_FACTS`] bytes encoded; facts are pulled from
//! at most [`MAX_PULLS`] members at once, a page asked again after [`RETRY`], a member
//! given up after [`TRIES`] tries until it announces again or anti-entropy picks it.
//!
//! [`schema`]: super::schema

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::wire::{self, Body, NodeId};

/// The most a node's facts may take, encoded (60 pages).
pub(crate) const MAX_FACTS: usize = 60 * wire::PAGE;
/// Members whose facts are pulled at once, at most.
pub(crate) const MAX_PULLS: usize = 32;
/// A page not answered within this is asked again.
pub(crate) const RETRY: Duration = Duration::from_millis(500);
/// Asks of a member in one go (each waiting twice as long as the one before, from
/// [`RETRY`] to 4 s); unanswered, it is asked again after a pause (1 s, doubling to
/// [`MAX_PAUSE`]) for as long as SWIM holds it up.
pub(crate) const TRIES: u8 = 6;
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(8);

/// A member's facts at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) version: u32,
    pub(crate) kv: Vec<(String, String)>,
}

/// This node's own facts.
struct Own {
    addr: SocketAddr,
    started_ns: u64,
    version: u32,
    encoded: Vec<u8>,
}

struct Known {
    id: NodeId,
    facts: Option<Arc<Facts>>,
    /// The newest version announced (0: none yet).
    announced: u32,
    pull: Option<Pull>,
    /// Tries left before this member is paused.
    tries: u8,
    /// The next pause, if its tries run out.
    pause: Duration,
    /// Paused until then.
    paused: Option<Instant>,
}

struct Pull {
    version: Option<u32>,
    pages: Vec<Option<Vec<u8>>>,
    asked: Instant,
}

impl Pull {
    /// The pages still to come (page 0 until the first page says how many there are).
    fn missing(&self) -> impl Iterator<Item = u16> + '_ {
        let first = self.version.is_none().then_some(0);
        first.into_iter().chain((0..self.pages.len()).filter(|p| self.pages[*p].is_none()).map(|p| p as u16))
    }
}

/// The facts of the members SWIM holds up, and this node's own.
pub(crate) struct Table {
    own: Own,
    members: HashMap<SocketAddr, Known>,
    /// Members being asked now (at most [`MAX_PULLS`]).
    pulling: BTreeSet<SocketAddr>,
    /// Members whose facts are wanted, waiting for a pull, oldest first (each once).
    waiting: VecDeque<SocketAddr>,
    queued: HashSet<SocketAddr>,
    /// Members paused after their tries ran out, until when.
    paused: BTreeSet<(Instant, SocketAddr)>,
    /// Members whose facts are known.
    known: usize,
    /// Set when a member's facts (or the member set) changed since [`Table::take_changed`].
    changed: bool,
}

impl Table {
    pub(crate) fn new(me: &NodeId, kv: &BTreeMap<String, String>) -> Table {
        let mut table = Table {
            own: Own { addr: me.addr, started_ns: me.started_ns, version: 0, encoded: Vec::new() },
            members: HashMap::new(),
            pulling: BTreeSet::new(),
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            paused: BTreeSet::new(),
            known: 0,
            changed: true,
        };
        table.set_own(kv);
        table
    }

    /// Sets this node's facts; the version to announce. Facts past [`MAX_FACTS`] keep the
    /// previous ones (`None`).
    pub(crate) fn set_own(&mut self, kv: &BTreeMap<String, String>) -> Option<u32> {
        let encoded = postcard::to_allocvec(&kv.iter().collect::<Vec<_>>()).expect("encoding to memory");
        if encoded.len() > MAX_FACTS {
            return None;
        }
        self.own.version += 1;
        self.own.encoded = encoded;
        self.changed = true;
        Some(self.own.version)
    }

    pub(crate) fn own_version(&self) -> u32 {
        self.own.version
    }

    /// The answer to a [`Body::Facts`] asked of this node.
    pub(crate) fn answer(&self, started_ns: u64, have: u32, page: u16) -> Option<Body> {
        if started_ns != self.own.started_ns {
            return None; // asked of a former life of this address
        }
        let (of, version) = (self.own.addr, self.own.version);
        if have == version {
            return Some(Body::FactsPage { of, started_ns, version, page: 0, pages: 0, bytes: Vec::new() });
        }
        let pages = wire::pages(self.own.encoded.len());
        let bytes = wire::page(&self.own.encoded, usize::from(page)).to_vec();
        Some(Body::FactsPage { of, started_ns, version, page, pages: pages as u16, bytes })
    }

    /// SWIM holds `id` up.
    pub(crate) fn up(&mut self, id: NodeId) {
        let replaced = self.members.get(&id.addr).is_some_and(|k| k.id != id);
        if replaced {
            self.down(&self.members[&id.addr].id.clone());
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.members.entry(id.addr) {
            entry.insert(Known {
                id,
                facts: None,
                announced: 0,
                pull: None,
                tries: TRIES,
                pause: Duration::from_secs(1),
                paused: None,
            });
            self.changed = true;
            self.wait(id.addr);
        }
    }

    fn wait(&mut self, addr: SocketAddr) {
        if !self.pulling.contains(&addr) && self.queued.insert(addr) {
            self.waiting.push_back(addr);
        }
    }

    /// A pull of `addr` ended (answered, given up, or the member gone).
    fn pulled(&mut self, addr: SocketAddr) {
        self.pulling.remove(&addr);
    }

    /// SWIM holds `id` down (or it left).
    pub(crate) fn down(&mut self, id: &NodeId) {
        if self.members.get(&id.addr).is_some_and(|k| k.id == *id) {
            let known = self.members.remove(&id.addr).expect("present");
            if known.facts.is_some() {
                self.known -= 1;
            }
            self.pulled(id.addr);
            self.changed = true;
        }
    }

    /// A member announced facts at `version`.
    pub(crate) fn announced(&mut self, a: &wire::Announced) {
        if let Some(k) = self.members.get_mut(&a.addr) {
            if k.id.started_ns == a.started_ns && a.version > k.announced {
                k.announced = a.version;
                k.tries = TRIES;
                self.wait(a.addr);
            }
        }
    }

    /// Anti-entropy: ask `addr` whether its facts moved on, as if it had announced.
    pub(crate) fn recheck(&mut self, addr: SocketAddr) {
        if let Some(k) = self.members.get_mut(&addr) {
            if k.pull.is_none() {
                k.tries = k.tries.max(1);
                k.announced = k.announced.max(k.facts.as_ref().map_or(0, |f| f.version) + 1);
                self.wait(addr);
            }
        }
    }

    /// A page of a member's facts arrived from `from`; the pages to ask for next (all
    /// the rest at once, when the first page says how many there are).
    pub(crate) fn page(
        &mut self,
        from: SocketAddr,
        started_ns: u64,
        version: u32,
        page: u16,
        pages: u16,
        bytes: Vec<u8>,
    ) -> Vec<Body> {
        let Some(k) = self.members.get_mut(&from) else { return Vec::new() };
        if k.id.started_ns != started_ns || k.pull.is_none() {
            return Vec::new();
        }
        if pages == 0 {
            // Unchanged: what was announced beyond it is not there (the member says so).
            k.announced = k.facts.as_ref().map_or(0, |f| f.version);
            k.pull = None;
            let unknown = k.facts.is_none(); // "unchanged" from nothing: asked again
            self.pulled(from);
            if unknown {
                self.wait(from);
            }
            return Vec::new();
        }
        if usize::from(pages) > MAX_FACTS / wire::PAGE || page >= pages || bytes.len() > wire::PAGE {
            return Vec::new();
        }
        let pull = k.pull.as_mut().expect("pulling");
        let mut next = Vec::new();
        if pull.version != Some(version) {
            if pull.version.is_some_and(|v| v > version) {
                return Vec::new(); // an older page, late
            }
            pull.version = Some(version);
            pull.pages = vec![None; usize::from(pages)];
            let have = k.facts.as_ref().map_or(0, |f| f.version);
            next = (0..pages).filter(|p| *p != page).map(|p| Body::Facts { started_ns, have, page: p }).collect();
        }
        if pull.pages.len() != usize::from(pages) {
            return Vec::new();
        }
        pull.pages[usize::from(page)] = Some(bytes);
        if pull.pages.iter().any(Option::is_none) {
            return next;
        }
        let encoded: Vec<u8> =
            pull.pages.iter().flat_map(|p| p.as_deref().expect("complete").iter().copied()).collect();
        k.pull = None;
        match postcard::from_bytes::<Vec<(String, String)>>(&encoded) {
            Ok(kv) => {
                // Announced beyond this version while it was being pulled: asked again
                // (an unchanged member answers that in one empty page).
                let again = k.announced > version;
                k.announced = k.announced.max(version);
                if again {
                    self.queued.insert(from).then(|| self.waiting.push_back(from));
                }
                if k.facts.is_none() {
                    self.known += 1;
                }
                k.pause = Duration::from_secs(1);
                k.tries = TRIES; // it answers: a fresh budget for its next change
                k.facts = Some(Arc::new(Facts { version, kv }));
                self.changed = true;
            }
            Err(_) => k.tries = 0,
        }
        self.pulled(from);
        Vec::new()
    }

    /// The asks due now: pages not answered within [`RETRY`], new pulls (at most
    /// [`MAX_PULLS`] at once). Costs the pulls in progress and those it starts, whatever
    /// the number of members.
    pub(crate) fn asks(&mut self, now: Instant) -> Vec<(SocketAddr, Body)> {
        let mut out = Vec::new();
        while let Some(&(until, addr)) = self.paused.first() {
            if until > now {
                break;
            }
            self.paused.remove(&(until, addr));
            if let Some(k) = self.members.get_mut(&addr) {
                if k.paused == Some(until) {
                    k.paused = None;
                    k.tries = TRIES;
                    self.wait(addr);
                }
            }
        }
        let mut ended = Vec::new();
        for addr in &self.pulling {
            let Some(k) = self.members.get_mut(addr) else {
                ended.push(*addr);
                continue;
            };
            let Some(pull) = &mut k.pull else {
                ended.push(*addr);
                continue;
            };
            // A loaded member answers late: each try waits twice as long (0.5, 1, 2 s …).
            let waited = RETRY * (1 << (TRIES - k.tries).min(3));
            if now.duration_since(pull.asked) < waited {
                continue;
            }
            // Not answered in time: a try spent.
            if k.tries == 0 {
                k.pull = None;
                ended.push(*addr);
                self.paused.insert((now + k.pause, *addr));
                k.paused = Some(now + k.pause);
                k.pause = (k.pause * 2).min(MAX_PAUSE);
                continue;
            }
            k.tries -= 1;
            pull.asked = now;
            let (started_ns, have) = (k.id.started_ns, k.facts.as_ref().map_or(0, |f| f.version));
            out.extend(pull.missing().map(|page| (*addr, Body::Facts { started_ns, have, page })));
        }
        for addr in ended {
            self.pulled(addr);
        }
        while self.pulling.len() < MAX_PULLS {
            let Some(addr) = self.waiting.pop_front() else { break };
            self.queued.remove(&addr);
            let Some(k) = self.members.get_mut(&addr) else { continue };
            let have = k.facts.as_ref().map_or(0, |f| f.version);
            let wanted = k.facts.is_none() || k.announced > have;
            if !wanted || k.tries == 0 || k.pull.is_some() {
                continue;
            }
            k.tries -= 1;
            k.pull = Some(Pull { version: None, pages: Vec::new(), asked: now });
            self.pulling.insert(addr);
            out.push((addr, Body::Facts { started_ns: k.id.started_ns, have, page: 0 }));
        }
        out
    }

    /// Queues again every member whose facts are wanted but that nothing is about to
    /// ask (a safety net, run every second: O(members)); how many it found.
    pub(crate) fn sweep(&mut self) -> usize {
        let stranded: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|k| {
                let have = k.facts.as_ref().map_or(0, |f| f.version);
                let wanted = k.facts.is_none() || k.announced > have;
                wanted && k.pull.is_none() && k.paused.is_none() && !self.queued.contains(&k.id.addr)
            })
            .map(|k| k.id.addr)
            .collect();
        for addr in &stranded {
            if let Some(k) = self.members.get_mut(addr) {
                k.tries = k.tries.max(1);
            }
            self.pulling.remove(addr);
            self.wait(*addr);
        }
        stranded.len()
    }

    /// Members whose facts are known.
    pub(crate) fn known_count(&self) -> usize {
        self.known
    }

    /// True once if the facts or the member set changed since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The members whose facts are known, with them.
    pub(crate) fn known(&self) -> impl Iterator<Item = (&NodeId, &Arc<Facts>)> {
        self.members.values().filter_map(|k| Some((&k.id, k.facts.as_ref()?)))
    }

    /// Members up, facts known or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16, started_ns: u64) -> NodeId {
        NodeId { addr: SocketAddr::from(([10, 0, 0, 1], port)), started_ns, bump: 0 }
    }

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Runs the asks of `a` against the owners' tables until nothing is due.
    fn settle(a: &mut Table, owners: &HashMap<SocketAddr, Table>, now: Instant) {
        for _ in 0..100 {
            let asks = a.asks(now + RETRY * 3);
            if asks.is_empty() {
                return;
            }
            let mut asks = asks;
            while let Some((to, ask)) = asks.pop() {
                let Body::Facts { started_ns, have, page } = ask else { panic!("{ask:?}") };
                if let Some(Body::FactsPage { of, started_ns, version, page, pages, bytes }) =
                    owners[&to].answer(started_ns, have, page)
                {
                    asks.extend(a.page(of, started_ns, version, page, pages, bytes).into_iter().map(|b| (to, b)));
                }
            }
        }
        panic!("asks never settle");
    }

    #[test]
    fn facts_of_many_pages_are_pulled_and_updates_follow_announcements() {
        let now = Instant::now();
        let big = "x".repeat(3000);
        let b = Table::new(&id(2, 7), &kv(&[("name", "b"), ("split:s", &big)]));
        let mut owners = HashMap::new();
        owners.insert(id(2, 7).addr, b);
        let mut a = Table::new(&id(1, 1), &kv(&[("name", "a")]));
        a.up(id(2, 7));
        assert_eq!(a.known().count(), 0);
        settle(&mut a, &owners, now);
        let (_, facts) = a.known().next().unwrap();
        assert_eq!(facts.kv, vec![("name".into(), "b".into()), ("split:s".into(), big.clone())]);
        assert!(a.take_changed());

        // b changes and announces: a pulls the new version.
        let b = owners.get_mut(&id(2, 7).addr).unwrap();
        let version = b.set_own(&kv(&[("name", "b"), ("state", "serving")])).unwrap();
        a.announced(&wire::Announced { addr: id(2, 7).addr, started_ns: 7, version });
        settle(&mut a, &owners, now);
        assert_eq!(a.known().next().unwrap().1.kv.len(), 2);
        assert_eq!(a.known().next().unwrap().1.version, version);

        // Anti-entropy of an unchanged member costs one empty page.
        a.recheck(id(2, 7).addr);
        let asks = a.asks(now);
        assert_eq!(asks.len(), 1);
        settle(&mut a, &owners, now);
        assert!(a.asks(now + RETRY * 10).is_empty());
    }

    #[test]
    fn a_forged_announcement_does_not_make_a_member_ask_forever() {
        let now = Instant::now();
        let mut owners = HashMap::new();
        owners.insert(id(2, 7).addr, Table::new(&id(2, 7), &kv(&[("name", "b")])));
        let mut a = Table::new(&id(1, 1), &kv(&[]));
        a.up(id(2, 7));
        settle(&mut a, &owners, now);
        a.announced(&wire::Announced { addr: id(2, 7).addr, started_ns: 7, version: 99 });
        settle(&mut a, &owners, now);
        assert!(a.asks(now + RETRY * 10).is_empty());
        assert_eq!(a.known().next().unwrap().1.version, 1);
    }

    #[test]
    fn a_silent_member_is_asked_less_and_less_often() {
        let mut a = Table::new(&id(1, 1), &kv(&[]));
        a.up(id(2, 7));
        let start = Instant::now();
        let asks: Vec<usize> = (0..1200).map(|i| a.asks(start + RETRY * i).len()).collect();
        // Tries in bursts of TRIES, paused 1, 2, 4 … 30 s in between: 10 minutes cost
        // a few dozen small datagrams, the last minute no more than two bursts.
        let total: usize = asks.iter().sum();
        let last_minute: usize = asks[1080..].iter().sum();
        assert!(total <= 26 * usize::from(TRIES), "{total}");
        assert!((1..=2 * usize::from(TRIES)).contains(&last_minute), "{last_minute}");
        // Its next announcement makes it worth asking at once.
        a.announced(&wire::Announced { addr: id(2, 7).addr, started_ns: 7, version: 3 });
        assert!(a.asks(start + RETRY * 1200).len() <= 1);
    }

    #[test]
    fn a_restart_replaces_the_member_and_its_facts() {
        let now = Instant::now();
        let mut owners = HashMap::new();
        owners.insert(id(2, 7).addr, Table::new(&id(2, 7), &kv(&[("name", "old")])));
        let mut a = Table::new(&id(1, 1), &kv(&[]));
        a.up(id(2, 7));
        settle(&mut a, &owners, now);
        owners.insert(id(2, 8).addr, Table::new(&id(2, 8), &kv(&[("name", "new")])));
        a.up(id(2, 8));
        assert_eq!(a.known().count(), 0);
        settle(&mut a, &owners, now);
        assert_eq!(a.known().next().unwrap().1.kv[0].1, "new");
        a.down(&id(2, 7)); // the old life's down, late: ignored
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_member_left_out_of_every_queue_is_swept_back_in() {
        let now = Instant::now();
        let mut a = Table::new(&id(1, 1), &kv(&[]));
        a.up(id(2, 7));
        assert_eq!(a.asks(now).len(), 1);
        // The member is forgotten by the queues (what the sweep guards against).
        a.members.get_mut(&id(2, 7).addr).unwrap().pull = None;
        a.pulling.clear();
        assert!(a.asks(now + RETRY * 3).is_empty());
        assert_eq!(a.sweep(), 1);
        assert_eq!(a.asks(now + RETRY * 3).len(), 1);
        assert_eq!(a.sweep(), 0, "a member being asked is not stranded");
    }

    #[test]
    fn an_unchanged_answer_about_unknown_facts_is_asked_again() {
        let now = Instant::now();
        let mut a = Table::new(&id(1, 1), &kv(&[]));
        a.up(id(2, 7));
        assert_eq!(a.asks(now).len(), 1);
        assert!(a.page(id(2, 7).addr, 7, 1, 0, 0, Vec::new()).is_empty());
        assert_eq!(a.asks(now).len(), 1);
    }

    #[test]
    fn facts_past_the_bound_are_refused() {
        let mut a = Table::new(&id(1, 1), &kv(&[("name", "a")]));
        let huge = "x".repeat(MAX_FACTS);
        assert_eq!(a.set_own(&kv(&[("k", &huge)])), None);
        assert_eq!(a.own_version(), 1);
    }
}
