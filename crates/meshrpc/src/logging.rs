//! Logs for binaries: `RUST_LOG` if set, else the given default; colours only on a TTY.
//! (Warnings a stranger can cause at will are counted and summarised where they happen:
//! see `Throttle`.)

use tracing_subscriber::prelude::*;

/// Installs a `tracing` subscriber writing to stdout. Safe to call twice.
pub fn init(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = crate::env::log_filter(default_filter);
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let _ = tracing_subscriber::registry().with(fmt.with_filter(tracing_subscriber::EnvFilter::new(filter))).try_init();
}
