//! The environment, read in this one place and only when a binary asks: each `from_env()`
//! turns variables into what a builder or [`Telemetry::install`] takes, and no other code
//! path of the library reads a variable. The table of every variable the binaries honour
//! is the README's "Configuration"; those the binaries also take as flags
//! (`MESHRPC_CLUSTER_NODES`, `MESHRPC_LISTEN_ADDR`, …) their own flag parsers read.

use crate::telemetry::{RequestLines, Telemetry};

/// A variable's value; unset, empty or not Unicode is none.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Telemetry {
    /// The telemetry the environment asks for:
    ///
    /// - `MESHRPC_REQUEST_LOG`: `on` (a line per call), `sample:N` (one in N), `off` (the
    ///   default); anything else is `off`, with a warning;
    /// - `MESHRPC_LOG_SUMMARY_MS`: the summary line's interval (10 000);
    /// - `MESHRPC_METRICS`: `off` (or `0`, `false`) counts no calls;
    /// - feature `otlp`: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else
    ///   `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, export spans there, named
    ///   `OTEL_SERVICE_NAME` (default: the process's name).
    pub fn from_env() -> Telemetry {
        let mut telemetry = Telemetry::default();
        if let Some(text) = var("MESHRPC_REQUEST_LOG") {
            telemetry.request_lines = request_lines(&text).unwrap_or_else(|| {
                tracing::warn!("MESHRPC_REQUEST_LOG=`{text}`: expected on, off or sample:N; request lines stay off");
                RequestLines::Off
            });
        }
        if let Some(ms) = var("MESHRPC_LOG_SUMMARY_MS").and_then(|v| v.parse().ok()) {
            telemetry.summary_every = std::time::Duration::from_millis(ms);
        }
        telemetry.count_calls = !matches!(var("MESHRPC_METRICS").as_deref(), Some("off" | "0" | "false"));
        #[cfg(feature = "otlp")]
        {
            telemetry.otlp = otlp_export();
        }
        telemetry
    }
}

/// `on`, `off`, `sample:N` (and `1`, `true`, `all`; `0`, `false`).
fn request_lines(text: &str) -> Option<RequestLines> {
    match text.trim() {
        "" | "off" | "0" | "false" => Some(RequestLines::Off),
        "on" | "1" | "true" | "all" => Some(RequestLines::Every),
        s => match s.strip_prefix("sample:")?.parse::<u64>().ok()? {
            0 => Some(RequestLines::Off),
            1 => Some(RequestLines::Every),
            n => Some(RequestLines::OneIn(n)),
        },
    }
}

#[cfg(feature = "otlp")]
fn otlp_export() -> Option<crate::telemetry::OtlpExport> {
    let endpoint = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(traces) => traces,
        None => format!("{}/v1/traces", var("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')),
    };
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| {
        std::env::args()
            .next()
            .and_then(|a| a.rsplit('/').next().map(str::to_owned))
            .unwrap_or_else(|| "meshrpc".into())
    });
    Some(crate::telemetry::OtlpExport::new(endpoint, service))
}

#[cfg(feature = "cluster")]
impl crate::cluster::ClusterBuilder {
    /// A builder as [`Cluster::builder`](crate::Cluster::builder), with what the
    /// environment says of the node beyond the binaries' flags: `MESHRPC_ADVERTISE_IP`
    /// ([`advertise_ip`](Self::advertise_ip); ignored when it is not an IP address),
    /// `MESHRPC_SERVICE_VERSION` ([`service_version`](Self::service_version)) and
    /// `MESHRPC_COMPRESS` (`on`: [`compress`](Self::compress)). What is set on the builder
    /// afterwards wins.
    pub fn from_env(name: impl Into<String>) -> Self {
        let mut builder = crate::Cluster::builder(name);
        if let Some(ip) = var("MESHRPC_ADVERTISE_IP").and_then(|v| v.parse().ok()) {
            builder = builder.advertise_ip(ip);
        }
        if let Some(version) = var("MESHRPC_SERVICE_VERSION").filter(|v| !v.trim().is_empty()) {
            builder = builder.service_version(version);
        }
        if var("MESHRPC_COMPRESS").is_some_and(|v| matches!(v.trim(), "on" | "1" | "true")) {
            builder = builder.compress(true);
        }
        builder
    }

    /// Adds seeds from `MESHRPC_CLUSTER_NODES` (comma separated).
    pub fn seeds_from_env(self) -> Self {
        self.seeds(var("MESHRPC_CLUSTER_NODES").unwrap_or_default().split(','))
    }
}

#[cfg(feature = "cluster")]
impl crate::app::RunSettings {
    /// `MESHRPC_PLACEMENT`, `MESHRPC_PLACEMENT_GROUP`, `MESHRPC_LISTEN_ADDR`,
    /// `MESHRPC_CLUSTER_TAGNAME` ([`App::run_from_env`](crate::app::App::run_from_env)).
    pub(crate) fn from_env() -> Result<Self, crate::app::AppError> {
        let group = match var("MESHRPC_PLACEMENT_GROUP") {
            None => None,
            Some(value) => Some(value.trim().parse().map_err(|_| crate::app::AppError::Env {
                variable: "MESHRPC_PLACEMENT_GROUP",
                value,
                why: "expected a group's index (from 0)",
            })?),
        };
        Ok(Self {
            placement: var("MESHRPC_PLACEMENT").map(std::path::PathBuf::from),
            group,
            listen: var("MESHRPC_LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:0".into()),
            tag: var("MESHRPC_CLUSTER_TAGNAME"),
        })
    }
}

#[cfg(feature = "tls")]
impl crate::transport::TlsConfig {
    /// The credentials in `MESHRPC_TLS_DIR`, if set.
    pub fn from_env() -> Result<Option<Self>, crate::Error> {
        match std::env::var_os("MESHRPC_TLS_DIR") {
            Some(dir) if !dir.is_empty() => Self::from_dir(std::path::PathBuf::from(dir)).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(feature = "tls")]
impl crate::access::Access {
    /// The policy from `MESHRPC_POLICY`, if set.
    pub fn from_env() -> Result<Option<Self>, crate::access::PolicyError> {
        match std::env::var_os("MESHRPC_POLICY") {
            Some(path) if !path.is_empty() => Self::from_file(std::path::PathBuf::from(path)).map(Some),
            _ => Ok(None),
        }
    }
}

/// The log filter of `init_logging`: `RUST_LOG`, else `default`.
#[cfg(feature = "logging")]
pub(crate) fn log_filter(default: &str) -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(request_lines(""), Some(RequestLines::Off));
        assert_eq!(request_lines("on"), Some(RequestLines::Every));
        assert_eq!(request_lines("sample:100"), Some(RequestLines::OneIn(100)));
        assert_eq!(request_lines("sample:1"), Some(RequestLines::Every));
        assert_eq!(request_lines("sometimes"), None);
        assert!(RequestLines::OneIn(10).picks(20) && !RequestLines::OneIn(10).picks(21));
    }
}
