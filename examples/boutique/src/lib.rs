//! Online Boutique on meshrpc: a modular monolith that deploys as microservices.
//!
//! Each service is a trait (`#[meshrpc::service]`) in a module named for it, with one
//! implementation. Services that call others hold them as `Arc<dyn Trait>`; in the app
//! those are always generated clients over `cluster.client(SPEC)`, so where a service is
//! placed ([`placement`]) alone decides whether a call stays in process (the colocated
//! path) or crosses the mesh.

pub mod ad;
pub mod cart;
pub mod checkout;
pub mod currency;
pub mod email;
pub mod frontend;
pub mod money;
pub mod payment;
pub mod placement;
pub mod productcatalog;
pub mod recommendation;
pub mod shipping;

pub use money::{Money, MoneyError};

/// A process-wide counter turned into a short id with a prefix and the application
/// version that made it (`ord-v2-…`, `txn-v1-…`): unique within a process, distinct across
/// processes by the process id.
pub(crate) fn next_id(prefix: &str, version: &str) -> String {
    format!("{prefix}-{version}-{}", next_serial())
}

/// The process id and a process-wide counter: `1f2e-000042`.
pub(crate) fn next_serial() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{n:06}", std::process::id())
}
