//! Finding the cluster through seed names that do not resolve yet.
//!
//! chitchat resolves a seed given by name once at start and then once a minute. In
//! Docker Swarm or Kubernetes a seed's name (the gateway service, a headless Service)
//! often has no address for the first seconds, while its task or pod starts: such a node
//! would sit alone for up to a minute. So while a node sees no other member, it resolves
//! its seed names itself every second and gossips with what they name at once. Once it
//! has a peer, this costs nothing but a look at the view each second.

use std::{net::SocketAddr, sync::Weak, time::Duration};

use chitchat::ChitchatHandle;
use tokio::sync::watch;

use super::View;

/// How often a node that sees no other member looks its seeds up again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// Seeds given by name (`gateway:11999`), not by address.
fn named(seeds: &[String]) -> Vec<String> {
    seeds.iter().filter(|s| s.parse::<SocketAddr>().is_err()).cloned().collect()
}

/// Runs until the node's gossip is gone (`handle` dropped), as the node's other upkeep.
pub(crate) fn keep_looking(
    handle: Weak<ChitchatHandle>,
    mut view: watch::Receiver<std::sync::Arc<View>>,
    seeds: Vec<String>,
    own: SocketAddr,
) {
    let names = named(&seeds);
    if names.is_empty() {
        // chitchat tries seeds given by address in every round by itself.
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESOLVE_EVERY).await;
            if handle.strong_count() == 0 {
                return; // the node's gossip is gone
            }
            let alone = view.borrow_and_update().members.iter().all(|m| m.is_self);
            if !alone {
                continue;
            }
            for name in &names {
                let found = tokio::time::timeout(RESOLVE_EVERY, tokio::net::lookup_host(name.as_str())).await;
                let Ok(Ok(addrs)) = found else { continue };
                let Some(handle) = handle.upgrade() else { return };
                for addr in addrs.filter(|a| *a != own) {
                    tracing::debug!(seed = %name, %addr, "gossiping with a seed found by name");
                    let _ = handle.gossip(addr);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_seeds_given_by_name_are_looked_up_again() {
        let seeds = ["10.0.0.1:11999", "gateway:11999", "[::1]:11999", "meshrpc.default.svc:11999"];
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(named(&seeds), ["gateway:11999", "meshrpc.default.svc:11999"]);
    }
}
