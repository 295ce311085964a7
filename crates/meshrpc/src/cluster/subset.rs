//! Connection subsetting: a caller keeps to a bounded, deterministic subset of a service's
//! replicas, so the connections a node holds stay bounded as the mesh grows while every
//! replica gets a near-equal share of callers (deterministic subsetting, as in the Google
//! SRE book, "Load Balancing in the Datacenter").
//!
//! The callers are the instances of the caller's own service (the members of its name),
//! numbered by id. Callers are taken in rounds of `replicas / size`: every caller of a
//! round shuffles the replicas the same way (seeded by the round) and takes its own slice
//! of `size`, so one round's subsets are disjoint and together cover the replicas. The
//! replicas after its slice, in the round's order, stand in for members of its subset
//! that are down, ejected or already tried by the call. No clock, no I/O: a pure function.

/// The order in which caller number `caller` of the service named `callers` prefers the
/// replicas named by `ids`: its subset of `size` first, then the stand-ins. Indices into
/// `ids`. A `size` of 0, or one that covers every replica, keeps them all in their given
/// order. The callers' name seeds the shuffle, so the first callers of two services do
/// not all take the same replicas.
pub(super) fn preference(ids: &[&str], callers: &str, caller: usize, size: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    if size == 0 || ids.len() <= size {
        return order;
    }
    let subsets = ids.len() / size; // disjoint subsets in one round
    let round = (caller / subsets) as u64 ^ shuffle(0, callers);
    order.sort_by(|&a, &b| (shuffle(round, ids[a]), ids[a]).cmp(&(shuffle(round, ids[b]), ids[b])));
    order.rotate_left((caller % subsets) * size);
    order
}

/// Where `id` falls in the shuffle of `round`: the same on every node (FNV-1a, then
/// splitmix64's finalizer to spread it), unlike std's hasher, which may change.
fn shuffle(round: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in round.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How long a caller remembers a fellow caller or a replica it no longer sees.
pub(super) const REMEMBERED: std::time::Duration = std::time::Duration::from_secs(30);

/// The callers and replicas this caller saw lately. A member missing from one view (a
/// node declared dead for a moment under load, a restart) neither renumbers the callers
/// nor reshuffles the replicas: the subsets are cut from who was seen in the last
/// [`REMEMBERED`], and a replica of the subset that is gone now is stood in for, as a
/// down one is. Bounded by the members seen in that time.
#[derive(Default)]
pub(super) struct Seen {
    callers: std::collections::BTreeMap<String, std::time::Instant>,
    /// By what is called (a service, or an HTTP router's key).
    replicas: std::collections::BTreeMap<String, std::collections::BTreeMap<String, std::time::Instant>>,
}

impl Seen {
    /// The order in which this caller (`me`, one of `callers`, the ids of the members of
    /// its name now) prefers the replicas of `called` (`members`, the serving ones now):
    /// indices into `members`, its subset of `size` first.
    pub(super) fn preference<'a>(
        &mut self,
        called: &str,
        me: (&str, &str),
        callers: impl Iterator<Item = &'a str>,
        members: &[&str],
        size: usize,
        now: std::time::Instant,
    ) -> Vec<usize> {
        let (name, my_id) = me;
        for id in callers {
            self.callers.insert(id.to_owned(), now);
        }
        self.callers.retain(|_, seen| now.duration_since(*seen) < REMEMBERED);
        let caller = self.callers.keys().filter(|id| id.as_str() < my_id).count();
        let seen = self.replicas.entry(called.to_owned()).or_default();
        for id in members {
            seen.insert((*id).to_owned(), now);
        }
        seen.retain(|_, at| now.duration_since(*at) < REMEMBERED);
        let remembered: Vec<&str> = seen.keys().map(String::as_str).collect();
        let here: std::collections::BTreeMap<&str, usize> =
            members.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        // The order over every replica remembered, then the ones here now, in it.
        let ordered: Vec<usize> = preference(&remembered, name, caller, size)
            .into_iter()
            .filter_map(|i| here.get(remembered[i]).copied())
            .collect();
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("replica-{i:03}")).collect()
    }

    /// How many callers have each replica in their subset.
    fn callers_per_replica(replicas: usize, callers: usize, size: usize) -> Vec<usize> {
        let names = ids(replicas);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut count = vec![0; replicas];
        for caller in 0..callers {
            let order = preference(&names, "caller", caller, size);
            for &i in &order[..size.min(replicas)] {
                count[i] += 1;
            }
        }
        count
    }

    #[test]
    fn a_subset_is_its_size_and_a_round_covers_every_replica_once() {
        // 64 replicas, subsets of 8: 8 callers make a round, each replica in exactly one.
        assert_eq!(callers_per_replica(64, 8, 8), vec![1; 64]);
        // 64 callers: 8 rounds, every replica in exactly 8 subsets.
        assert_eq!(callers_per_replica(64, 64, 8), vec![8; 64]);
        // Rounds differ: a caller's subset is not its neighbour's of the last round.
        let names = ids(64);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_ne!(preference(&names, "caller", 0, 8)[..8], preference(&names, "caller", 8, 8)[..8]);
        // Callers of another service start elsewhere: the first callers of every service
        // do not all pile onto the same replicas.
        assert_ne!(preference(&names, "billing", 0, 8)[..8], preference(&names, "caller", 0, 8)[..8]);
    }

    #[test]
    fn callers_that_do_not_fill_a_round_stay_near_even() {
        // 100 replicas, subsets of 32 (3 a round, 4 left out of each round), 50 callers:
        // the mean is 16 callers a replica.
        let count = callers_per_replica(100, 50, 32);
        let (min, max) = (*count.iter().min().unwrap(), *count.iter().max().unwrap());
        eprintln!("100 replicas, 50 callers, subsets of 32: {min}..{max} callers a replica");
        assert!(min >= 12 && max <= 20, "{min}..{max}: {count:?}");
        assert_eq!(count.iter().sum::<usize>(), 50 * 32);
    }

    #[test]
    fn the_order_is_the_same_whatever_order_the_replicas_come_in() {
        let names = ids(20);
        let forward: Vec<&str> = names.iter().map(String::as_str).collect();
        let backward: Vec<&str> = forward.iter().rev().copied().collect();
        let by_name =
            |list: &[&str], order: Vec<usize>| order.into_iter().map(|i| list[i].to_owned()).collect::<Vec<_>>();
        assert_eq!(
            by_name(&forward, preference(&forward, "caller", 3, 4)),
            by_name(&backward, preference(&backward, "caller", 3, 4))
        );
    }

    #[test]
    fn a_member_missing_from_one_view_moves_no_subset() {
        let names = ids(16);
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let callers = ["c0", "c1", "c2", "c3"];
        let mut seen = Seen::default();
        let t0 = crate::clock::now();
        let first = seen.preference("lab", ("caller", "c2"), callers.iter().copied(), &all, 4, t0);
        let subset: Vec<&str> = first[..4].iter().map(|&i| all[i]).collect();
        // A view without caller c0 and without one replica of the subset, a moment later.
        let gone = subset[0];
        let fewer: Vec<&str> = all.iter().copied().filter(|id| *id != gone).collect();
        let later = t0 + std::time::Duration::from_secs(2);
        let next = seen.preference("lab", ("caller", "c2"), callers[1..].iter().copied(), &fewer, 4, later);
        let kept: Vec<&str> = next[..3].iter().map(|&i| fewer[i]).collect();
        assert_eq!(kept, subset[1..], "the rest of the subset stays, in order; a stand-in follows");
        // Once forgotten, the subsets are cut from who is there.
        let much_later = t0 + REMEMBERED + std::time::Duration::from_secs(1);
        let fresh = seen.preference("lab", ("caller", "c2"), callers[1..].iter().copied(), &fewer, 4, much_later);
        assert_eq!(fresh.len(), fewer.len());
    }

    #[test]
    fn every_replica_comes_once_subset_first_then_stand_ins() {
        let names = ids(10);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut order = preference(&names, "caller", 1, 3);
        assert_eq!(order.len(), 10);
        order.sort();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        // Off, or a size past the replicas: all of them, as given.
        assert_eq!(preference(&names, "caller", 1, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(preference(&names, "caller", 1, 10), (0..10).collect::<Vec<_>>());
    }
}
