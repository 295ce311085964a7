//! Picking a replica. Pure logic, no I/O: the cluster hands in candidates (sorted by
//! node id, with their current load) and gets back an index. Three policies implement
//! [`Balance`]: [`RoundRobin`], [`LeastLoaded`] (p2c over peak-EWMA) and [`Sticky`]
//! (consistent hashing by key, over either of the others).

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// How a channel spreads calls over the replicas of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each replica in turn (Go meshRPC's promise). Calls with a sticky key still stick.
    #[default]
    RoundRobin,
    /// Power of two choices over peak-EWMA latency × in-flight calls: two random
    /// replicas, the less loaded wins. Calls with a sticky key still stick.
    LeastLoaded,
}

/// One replica the balancer may pick.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Stable identity (the node id): sticky keys hash against it.
    pub id: &'a str,
    /// Expected cost of one more call (lower is better); only `LeastLoaded` reads it.
    pub load: f64,
}

/// A way to pick one replica among candidates (sorted by node id). Implementations
/// are shared by every call to a service, so they keep their state in atomics.
pub trait Balance: Send + Sync + 'static {
    /// The index of the chosen candidate; `None` only when there are none.
    fn pick(&self, candidates: &[Candidate<'_>], key: Option<&str>) -> Option<usize>;
}

/// Each replica in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balance for RoundRobin {
    fn pick(&self, candidates: &[Candidate<'_>], _key: Option<&str>) -> Option<usize> {
        match candidates.len() {
            0 => None,
            n => Some(self.next.fetch_add(1, Ordering::Relaxed) % n),
        }
    }
}

/// Power of two choices over the candidates' load (peak-EWMA latency × in-flight
/// calls): two random replicas, the less loaded wins.
#[derive(Debug)]
pub struct LeastLoaded {
    rng: AtomicU64,
}

impl Default for LeastLoaded {
    fn default() -> Self {
        LeastLoaded { rng: AtomicU64::new(0x853c_49e6_748f_ea9b) }
    }
}

impl LeastLoaded {
    fn random(&self) -> u64 {
        // splitmix64 over an atomic counter: cheap, lock-free, good enough to pick two.
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Balance for LeastLoaded {
    fn pick(&self, candidates: &[Candidate<'_>], _key: Option<&str>) -> Option<usize> {
        match candidates.len() {
            0 => None,
            1 => Some(0),
            n => {
                let r = self.random();
                let a = (r % n as u64) as usize;
                // A second, distinct index.
                let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                Some(if candidates[b].load < candidates[a].load { b } else { a })
            }
        }
    }
}

/// Sticky sessions: a call with a key goes to the candidate with the highest
/// `hash(key, id)` (rendezvous hashing), so when replicas join or leave only the keys of
/// the replicas that changed move. Calls without a key go to `B`.
#[derive(Debug, Default)]
pub struct Sticky<B> {
    /// The policy for calls without a key.
    pub fallback: B,
}

impl<B: Balance> Balance for Sticky<B> {
    fn pick(&self, candidates: &[Candidate<'_>], key: Option<&str>) -> Option<usize> {
        match key {
            Some(key) => candidates.iter().enumerate().max_by_key(|(_, c)| rendezvous(key, c.id)).map(|(i, _)| i),
            None => self.fallback.pick(candidates, None),
        }
    }
}

impl Policy {
    /// The balancer for this policy; keyed calls always stick.
    pub fn balancer(self) -> Arc<dyn Balance> {
        match self {
            Policy::RoundRobin => Arc::new(Sticky { fallback: RoundRobin::default() }),
            Policy::LeastLoaded => Arc::new(Sticky { fallback: LeastLoaded::default() }),
        }
    }
}

fn rendezvous(key: &str, id: &str) -> u64 {
    // FNV-1a over key and id, then a finalizer so similar ids spread well.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Peak-EWMA latency (as in Finagle and linkerd): jumps up to a slower sample at once,
/// decays towards faster ones with time constant `tau`. Costs are what callers feel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakEwma {
    nanos: f64,
    at: Instant,
    tau: Duration,
}

impl PeakEwma {
    /// Starts at `initial` (a guess before any sample).
    pub(crate) fn new(initial: Duration, tau: Duration, now: Instant) -> Self {
        PeakEwma { nanos: initial.as_nanos() as f64, at: now, tau }
    }

    /// Records one observed round trip.
    pub(crate) fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        if sample > self.nanos {
            self.nanos = sample;
        } else {
            let elapsed = now.saturating_duration_since(self.at).as_nanos() as f64;
            let w = (-elapsed / self.tau.as_nanos() as f64).exp();
            self.nanos = self.nanos * w + sample * (1.0 - w);
        }
        self.at = now;
    }

    /// Current estimate in nanoseconds.
    #[cfg(test)]
    pub(crate) fn nanos(&self) -> f64 {
        self.nanos
    }

    /// Load of a replica with `in_flight` calls outstanding.
    pub(crate) fn load(&self, in_flight: usize) -> f64 {
        self.nanos * (in_flight as f64 + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands<'a>(ids: &'a [String]) -> Vec<Candidate<'a>> {
        ids.iter().map(|id| Candidate { id, load: 1.0 }).collect()
    }

    #[test]
    fn round_robin_is_even() {
        let ids: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let b = Policy::RoundRobin.balancer();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[b.pick(&cands(&ids), None).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
        assert_eq!(b.pick(&[], None), None);
    }

    #[test]
    fn sticky_keys_mostly_stay_when_a_replica_joins() {
        let three: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
        let four: Vec<String> = (0..4).map(|i| format!("node-{i}")).collect();
        let b = Policy::RoundRobin.balancer();
        let mut kept = 0;
        let mut per_node = [0; 3];
        for k in 0..1000 {
            let key = format!("user-{k}");
            let before = &three[b.pick(&cands(&three), Some(&key)).unwrap()];
            assert_eq!(before, &three[b.pick(&cands(&three), Some(&key)).unwrap()], "stable");
            per_node[three.iter().position(|n| n == before).unwrap()] += 1;
            let after = &four[b.pick(&cands(&four), Some(&key)).unwrap()];
            kept += usize::from(before == after);
        }
        // Ideal: 3/4 of keys stay. Also keys spread over all replicas.
        assert!(kept > 650, "only {kept} of 1000 keys kept their replica");
        assert!(per_node.iter().all(|&n| n > 250), "{per_node:?}");
    }

    #[test]
    fn least_loaded_prefers_the_idle_replica() {
        let ids: Vec<String> = (0..2).map(|i| format!("n{i}")).collect();
        let mut c = cands(&ids);
        c[1].load = 10.0;
        let b = LeastLoaded::default();
        // With two candidates p2c always compares both.
        assert!((0..100).all(|_| b.pick(&c, None) == Some(0)));
        let ids: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        let mut c = cands(&ids);
        c[3].load = 1000.0;
        let picks: Vec<_> = (0..1000).map(|_| b.pick(&c, None).unwrap()).collect();
        let slow = picks.iter().filter(|&&i| i == 3).count();
        // The slow one wins only when paired with itself, which p2c never does.
        assert_eq!(slow, 0);
        assert!((0..5).filter(|&i| i != 3).all(|i| picks.contains(&i)));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = crate::clock::now();
        let tau = Duration::from_secs(1);
        let mut e = PeakEwma::new(Duration::from_micros(100), tau, t0);
        e.observe(Duration::from_millis(10), t0);
        assert_eq!(e.nanos(), 10_000_000.0);
        e.observe(Duration::from_micros(100), t0 + Duration::from_secs(5));
        assert!(e.nanos() < 200_000.0, "{}", e.nanos());
        assert!(e.load(3) > e.load(0));
    }
}
