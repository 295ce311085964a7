//! Logs for binaries: `RUST_LOG` if set, else the given default; colours only on a TTY.
//! Warnings a stranger can cause at will are counted and summarised instead of printed
//! one by one.

use std::{sync::atomic::Ordering, time::Duration};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

use crate::{throttle::Throttle, transport::GOSSIP_GARBAGE};

/// Installs a `tracing` subscriber writing to stdout. Safe to call twice.
pub fn init(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = crate::env::log_filter(default_filter);
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(GossipGarbage)
        .with(fmt.with_filter(tracing_subscriber::EnvFilter::new(filter)))
        .try_init();
}

static SUMMARY: Throttle = Throttle::new(Duration::from_secs(10));

/// chitchat warns once per UDP datagram it cannot decode: each becomes a count
/// (`meshrpc_gossip_garbage` in `/metrics`) and at most one summary line per 10 s.
struct GossipGarbage;

impl GossipGarbage {
    fn matches(event: &Event<'_>) -> bool {
        let meta = event.metadata();
        *meta.level() == Level::WARN
            && meta.target().starts_with("chitchat::transport")
            && meta.fields().field("payload_len").is_some()
    }
}

impl<S: Subscriber> Layer<S> for GossipGarbage {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !Self::matches(event) {
            return true;
        }
        let total = GOSSIP_GARBAGE.fetch_add(1, Ordering::Relaxed) + 1;
        SUMMARY.log(|left_out| {
            tracing::warn!(
                total,
                since_last_line = left_out + 1,
                "dropping UDP datagrams on the gossip port that are not gossip"
            )
        });
        false
    }
}
