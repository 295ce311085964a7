//! What a process says about its calls besides `/metrics`: request lines, the summary
//! line, whether calls are counted at all, and where spans go. All of it is the process's
//! (the counters, the summary writer and the exporter serve every node in it), so a
//! binary sets it once, before its nodes start: `Telemetry::from_env().install()` (the
//! variables: README, "Configuration"). Until then, and without it, the defaults hold.

use std::{sync::OnceLock, time::Duration};

/// Which calls get a line of their own (target `meshrpc::request`; at the gateway, which
/// requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestLines {
    /// None (the default): the summary line says enough under load.
    #[default]
    Off,
    /// Every call.
    Every,
    /// One call in this many.
    OneIn(u64),
}

impl RequestLines {
    /// Whether the `n`-th call gets a line.
    pub(crate) fn picks(self, n: u64) -> bool {
        match self {
            RequestLines::Off => false,
            RequestLines::Every => true,
            // `OneIn(0)` (built by hand: `from_env` reads `sample:0` as off) is off too.
            RequestLines::OneIn(k) => k != 0 && n % k == 0,
        }
    }
}

/// Where spans of served calls go: an OpenTelemetry collector, over OTLP/HTTP with JSON
/// (feature `otlp`; docs/observability.md).
#[cfg(feature = "otlp")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpExport {
    /// The URL batches of spans are posted to (`http://collector:4318/v1/traces`).
    pub traces_endpoint: String,
    /// The resource's `service.name`.
    pub service_name: String,
}

#[cfg(feature = "otlp")]
impl OtlpExport {
    /// Spans posted to `traces_endpoint`, as `service_name`.
    pub fn new(traces_endpoint: impl Into<String>, service_name: impl Into<String>) -> OtlpExport {
        OtlpExport { traces_endpoint: traces_endpoint.into(), service_name: service_name.into() }
    }
}

/// What the process says about its calls (module docs): fields with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Telemetry {
    /// Which calls get a line of their own (none).
    pub request_lines: RequestLines,
    /// How often the summary line of each method served is written (10 s).
    pub summary_every: Duration,
    /// Whether calls are counted at all: golden metrics, `meshrpc top`, the summary line
    /// (yes; the bench turns it off to measure what counting costs).
    pub count_calls: bool,
    /// Where spans go (nowhere).
    #[cfg(feature = "otlp")]
    pub otlp: Option<OtlpExport>,
}

static DEFAULTS: Telemetry = Telemetry {
    request_lines: RequestLines::Off,
    summary_every: Duration::from_secs(10),
    count_calls: true,
    #[cfg(feature = "otlp")]
    otlp: None,
};

static INSTALLED: OnceLock<Telemetry> = OnceLock::new();

impl Default for Telemetry {
    fn default() -> Self {
        DEFAULTS.clone()
    }
}

impl Telemetry {
    /// Makes this the process's telemetry; false if one was installed already (the first
    /// stays). Call it before nodes start, as [`init_logging`](crate::init_logging): the
    /// summary writer and the exporter start with the first call they see.
    pub fn install(self) -> bool {
        INSTALLED.set(self).is_ok()
    }
}

/// The process's telemetry: the one installed, else the defaults.
pub(crate) fn current() -> &'static Telemetry {
    INSTALLED.get().unwrap_or(&DEFAULTS)
}
