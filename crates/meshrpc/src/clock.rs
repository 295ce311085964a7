//! The library's clocks. Every deadline, timeout, window and timestamp is read here, so
//! that a paused tokio runtime (tests) or a simulated one (`sim/`: turmoil) moves them all
//! together: `now` is tokio's clock, which outside such a runtime is std's, at no cost.
//! The wall clock and the entropy of random choices have hooks a simulation sets once per
//! process ([`simulate`]); a node never sets them.

use std::{
    sync::OnceLock,
    time::{Duration, Instant, SystemTime},
};

/// The monotonic now.
#[inline]
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Time since `then` (zero if `then` is later).
#[inline]
pub(crate) fn since(then: Instant) -> Duration {
    now().saturating_duration_since(then)
}

/// The wall clock.
pub(crate) fn wall() -> SystemTime {
    match HOOKS.get() {
        Some(hooks) => (hooks.wall)(),
        None => SystemTime::now(),
    }
}

/// Milliseconds since the Unix epoch, by [`wall`].
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn wall_ms() -> u64 {
    wall().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Nanoseconds since the Unix epoch, by [`wall`].
pub(crate) fn wall_ns() -> u64 {
    wall().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

/// A seed for a random choice (a gossip node's, a balancer's, a trace id's): the system's
/// entropy, or the simulation's.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn entropy(fallback: impl FnOnce() -> u64) -> u64 {
    match HOOKS.get() {
        Some(hooks) => (hooks.entropy)(),
        None => fallback(),
    }
}

struct Hooks {
    wall: fn() -> SystemTime,
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    entropy: fn() -> u64,
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// For a deterministic simulation: the wall clock and the seeds of random choices come
/// from `wall` and `entropy` for the rest of the process (the monotonic clock is tokio's
/// already). Returns false if they were set before. Not for nodes that serve.
#[allow(unreachable_pub)] // re-exported as `meshrpc::simulation::install`
pub fn install(wall: fn() -> SystemTime, entropy: fn() -> u64) -> bool {
    HOOKS.set(Hooks { wall, entropy }).is_ok()
}
