//! Logs for binaries: `RUST_LOG` if set, else the given default; colours only on a TTY.

/// Installs a `tracing` subscriber writing to stdout. Safe to call twice.
pub fn init(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
