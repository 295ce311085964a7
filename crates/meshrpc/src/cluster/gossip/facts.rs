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
    collections::{BTreeMap, BTreeSet, VecDeque},
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
    stage: Stage,
    /// Tries left before this member is paused.
    tries: u8,
    /// The next pause, if its tries run out.
    pause: Duration,
}

impl Known {
    fn have(&self) -> u32 {
        self.facts.as_ref().map_or(0, |f| f.version)
    }

    /// Its facts are unknown, or older than announced.
    fn wanted(&self) -> bool {
        self.facts.is_none() || self.announced > self.have()
    }
}

/// Where a member stands in the pull of its facts: one stage at a time, and each stage
/// but `Idle` is found where the table looks for it (`waiting`, `pulling`, `paused`), so
/// no member whose facts are wanted is ever left out (the table's invariant, tested).
#[derive(Debug)]
enum Stage {
    /// Nothing to ask: its facts are current, as far as this node knows.
    Idle,
    /// In [`Table::waiting`], for a pull.
    Waiting,
    /// Being asked: in [`Table::pulling`].
    Pulling(Pull),
    /// Its tries ran out: in [`Table::paused`] until then.
    Paused(Instant),
}

#[derive(Debug)]
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
    members: BTreeMap<SocketAddr, Known>,
    /// Members in [`Stage::Pulling`] (at most [`MAX_PULLS`]).
    pulling: BTreeSet<SocketAddr>,
    /// Members in [`Stage::Waiting`], oldest first (an entry of a member since gone or
    /// moved on is skipped when its turn comes).
    waiting: VecDeque<SocketAddr>,
    /// Members in [`Stage::Paused`], by when (stale entries skipped likewise).
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
            members: BTreeMap::new(),
            pulling: BTreeSet::new(),
            waiting: VecDeque::new(),
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

    /// This node took a new identity: it answers for its facts under `started_ns`.
    pub(crate) fn renamed(&mut self, started_ns: u64) {
        self.own.started_ns = started_ns;
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
        if let std::collections::btree_map::Entry::Vacant(entry) = self.members.entry(id.addr) {
            entry.insert(Known {
                id,
                facts: None,
                announced: 0,
                stage: Stage::Waiting,
                tries: TRIES,
                pause: Duration::from_secs(1),
            });
            self.waiting.push_back(id.addr);
            self.changed = true;
        }
    }

    /// SWIM holds `id` down (or it left).
    pub(crate) fn down(&mut self, id: &NodeId) {
        if self.members.get(&id.addr).is_some_and(|k| k.id == *id) {
            let known = self.members.remove(&id.addr).expect("present");
            if known.facts.is_some() {
                self.known -= 1;
            }
            self.pulling.remove(&id.addr);
            self.changed = true;
        }
    }

    /// Moves an idle (or, `wake`, a paused) member to the waiting queue.
    fn wait(&mut self, addr: SocketAddr, wake: bool) {
        let Some(k) = self.members.get_mut(&addr) else { return };
        match k.stage {
            Stage::Idle => {}
            Stage::Paused(until) if wake => {
                self.paused.remove(&(until, addr));
            }
            _ => return,
        }
        k.stage = Stage::Waiting;
        self.waiting.push_back(addr);
    }

    /// A member announced facts at `version`: a pull if that is news (at once, even if
    /// it was paused: an announcement says it is there).
    pub(crate) fn announced(&mut self, a: &wire::Announced) {
        if let Some(k) = self.members.get_mut(&a.addr) {
            if k.id.started_ns == a.started_ns && a.version > k.announced {
                k.announced = a.version;
                k.tries = TRIES;
                self.wait(a.addr, true);
            }
        }
    }

    /// Anti-entropy: ask `addr` whether its facts moved on, as if it had announced.
    pub(crate) fn recheck(&mut self, addr: SocketAddr) {
        if let Some(k) = self.members.get_mut(&addr) {
            if matches!(k.stage, Stage::Idle) {
                k.tries = k.tries.max(1);
                k.announced = k.announced.max(k.have() + 1);
                self.wait(addr, false);
            }
        }
    }

    /// A pull of `addr` ended: the member waits again if its facts are still wanted.
    fn pulled(&mut self, addr: SocketAddr) {
        self.pulling.remove(&addr);
        if let Some(k) = self.members.get_mut(&addr) {
            k.stage = Stage::Idle;
            if k.wanted() {
                self.wait(addr, false);
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
        let have = k.have();
        let Stage::Pulling(pull) = &mut k.stage else { return Vec::new() };
        if k.id.started_ns != started_ns {
            return Vec::new();
        }
        if pages == 0 {
            // Unchanged: what was announced beyond it is not there (the member says so);
            // "unchanged" from nothing is asked again (`pulled`: still wanted).
            k.announced = have;
            self.pulled(from);
            return Vec::new();
        }
        if usize::from(pages) > MAX_FACTS / wire::PAGE || page >= pages || bytes.len() > wire::PAGE {
            return Vec::new();
        }
        let mut next = Vec::new();
        if pull.version != Some(version) {
            if pull.version.is_some_and(|v| v > version) {
                return Vec::new(); // an older page, late
            }
            pull.version = Some(version);
            pull.pages = vec![None; usize::from(pages)];
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
        match postcard::from_bytes::<Vec<(String, String)>>(&encoded) {
            Ok(kv) => {
                // Announced beyond this version while it was being pulled: `pulled` asks
                // again (an unchanged member answers that in one empty page).
                k.announced = k.announced.max(version);
                if k.facts.is_none() {
                    self.known += 1;
                }
                k.pause = Duration::from_secs(1);
                k.tries = TRIES; // it answers: a fresh budget for its next change
                k.facts = Some(Arc::new(Facts { version, kv }));
                self.changed = true;
                self.pulled(from);
            }
            // Facts that do not decode: no try left, so the pull's time-out pauses it.
            Err(_) => k.tries = 0,
        }
        Vec::new()
    }

    /// Pauses a member whose tries ran out.
    fn pause(&mut self, addr: SocketAddr, now: Instant) {
        self.pulling.remove(&addr);
        if let Some(k) = self.members.get_mut(&addr) {
            let until = now + k.pause;
            k.stage = Stage::Paused(until);
            k.pause = (k.pause * 2).min(MAX_PAUSE);
            self.paused.insert((until, addr));
        }
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
                if matches!(k.stage, Stage::Paused(t) if t == until) {
                    k.stage = Stage::Idle;
                    k.tries = TRIES;
                    self.wait(addr, false);
                }
            }
        }
        let mut spent = Vec::new();
        for addr in &self.pulling {
            let k = self.members.get_mut(addr).expect("a member being pulled is a member");
            let have = k.have();
            let Stage::Pulling(pull) = &mut k.stage else { unreachable!("in pulling, not Pulling: {:?}", k.stage) };
            // A loaded member answers late: each try waits twice as long (0.5, 1, 2 s …).
            let waited = RETRY * (1 << (TRIES - k.tries).min(3));
            if now.duration_since(pull.asked) < waited {
                continue;
            }
            // Not answered in time: a try spent.
            if k.tries == 0 {
                spent.push(*addr);
                continue;
            }
            k.tries -= 1;
            pull.asked = now;
            let started_ns = k.id.started_ns;
            out.extend(pull.missing().map(|page| (*addr, Body::Facts { started_ns, have, page })));
        }
        for addr in spent {
            self.pause(addr, now);
        }
        while self.pulling.len() < MAX_PULLS {
            let Some(addr) = self.waiting.pop_front() else { break };
            let Some(k) = self.members.get_mut(&addr) else { continue };
            if !matches!(k.stage, Stage::Waiting) {
                continue;
            }
            if !k.wanted() {
                k.stage = Stage::Idle;
                continue;
            }
            if k.tries == 0 {
                self.pause(addr, now);
                continue;
            }
            k.tries -= 1;
            k.stage = Stage::Pulling(Pull { version: None, pages: Vec::new(), asked: now });
            self.pulling.insert(addr);
            out.push((addr, Body::Facts { started_ns: k.id.started_ns, have: k.have(), page: 0 }));
        }
        out
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
    fn settle(a: &mut Table, owners: &BTreeMap<SocketAddr, Table>, now: Instant) {
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
        let now = crate::clock::now();
        let big = "x".repeat(3000);
        let b = Table::new(&id(2, 7), &kv(&[("name", "b"), ("split:s", &big)]));
        let mut owners = BTreeMap::new();
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
        let now = crate::clock::now();
        let mut owners = BTreeMap::new();
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
        let start = crate::clock::now();
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
        let now = crate::clock::now();
        let mut owners = BTreeMap::new();
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

    /// The table's invariant: every member is where its stage says, and every member
    /// whose facts are wanted is waiting, being pulled or paused (none is forgotten).
    fn assert_stages_hold(t: &Table) {
        for (addr, k) in &t.members {
            match &k.stage {
                Stage::Idle => assert!(!k.wanted(), "{addr}: wanted but idle"),
                Stage::Waiting => assert!(t.waiting.contains(addr), "{addr}: waiting, not queued"),
                Stage::Pulling(_) => assert!(t.pulling.contains(addr), "{addr}: pulled, not in pulling"),
                Stage::Paused(until) => assert!(t.paused.contains(&(*until, *addr)), "{addr}: paused, not in paused"),
            }
            assert_eq!(t.pulling.contains(addr), matches!(k.stage, Stage::Pulling(_)), "{addr}");
        }
        assert!(t.pulling.len() <= MAX_PULLS);
        assert!(t.pulling.iter().all(|a| t.members.contains_key(a)), "a pull of a member gone");
        assert_eq!(t.known, t.members.values().filter(|k| k.facts.is_some()).count());
    }

    #[test]
    fn no_member_whose_facts_are_wanted_is_ever_left_out() {
        use rand::{rngs::StdRng, RngExt, SeedableRng};
        // Random lives of 40 members (some answer, some are silent, some restart, some
        // announce or are rechecked) against one table, the invariant checked at every step.
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let start = crate::clock::now();
            let mut now = start;
            let mut owners: BTreeMap<SocketAddr, Table> = BTreeMap::new();
            let mut lives: BTreeMap<u16, u64> = BTreeMap::new();
            let mut a = Table::new(&id(1, 1), &kv(&[]));
            let mut in_flight: Vec<(SocketAddr, Body)> = Vec::new();
            for _ in 0..2000 {
                let port = rng.random_range(2..42u16);
                let life = *lives.entry(port).or_insert(1);
                match rng.random_range(0..10) {
                    0 => {
                        let addr = id(port, life).addr;
                        if !owners.contains_key(&addr) && rng.random_bool(0.8) {
                            // This life answers.
                            owners.insert(addr, Table::new(&id(port, life), &kv(&[("name", &format!("n{port}"))])));
                        }
                        a.up(id(port, life));
                    }
                    1 => a.down(&id(port, life)),
                    2 => {
                        lives.insert(port, life + 1); // restarts
                        owners.remove(&id(port, life).addr);
                    }
                    3 => {
                        let addr = id(port, life).addr;
                        let version = owners
                            .get_mut(&addr)
                            .and_then(|o| o.set_own(&kv(&[("v", &rng.random::<u32>().to_string())])));
                        let version = version.unwrap_or(rng.random_range(1..9));
                        a.announced(&wire::Announced { addr, started_ns: life, version });
                    }
                    4 => a.recheck(id(port, life).addr),
                    5 => now += Duration::from_millis(rng.random_range(1..3000)),
                    _ => in_flight.extend(a.asks(now)),
                }
                // Some asks are answered, in any order; some are lost.
                while !in_flight.is_empty() && rng.random_bool(0.7) {
                    let (to, ask) = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                    let Body::Facts { started_ns, have, page } = ask else { panic!("{ask:?}") };
                    if let Some(Body::FactsPage { of, started_ns, version, page, pages, bytes }) =
                        owners.get(&to).and_then(|o| o.answer(started_ns, have, page))
                    {
                        in_flight
                            .extend(a.page(of, started_ns, version, page, pages, bytes).into_iter().map(|b| (to, b)));
                    }
                }
                assert_stages_hold(&a);
            }
            // Once everything is answered, every member that answers has its facts.
            for _ in 0..200 {
                now += RETRY * 16;
                in_flight.extend(a.asks(now));
                while let Some((to, Body::Facts { started_ns, have, page })) = in_flight.pop() {
                    if let Some(Body::FactsPage { of, started_ns, version, page, pages, bytes }) =
                        owners.get(&to).and_then(|o| o.answer(started_ns, have, page))
                    {
                        in_flight
                            .extend(a.page(of, started_ns, version, page, pages, bytes).into_iter().map(|b| (to, b)));
                    }
                }
                assert_stages_hold(&a);
            }
            for (addr, k) in &a.members {
                if owners.get(addr).is_some_and(|o| o.own.started_ns == k.id.started_ns) {
                    assert!(!k.wanted(), "seed {seed}: {addr} answers, yet its facts are still wanted");
                }
            }
        }
    }

    #[test]
    fn an_unchanged_answer_about_unknown_facts_is_asked_again() {
        let now = crate::clock::now();
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
