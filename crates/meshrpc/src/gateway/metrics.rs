//! Gateway metrics: requests by service, method and status, a latency histogram per
//! service and method, requests in flight; then the golden metrics of the calls this
//! process made and served. Shown through the one writer of `/metrics` (`http`), in the
//! format the scraper asks for.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    /// `client` or `route`: which limit refused.
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: String,
    method: String,
}

/// The gateway's metrics registry.
pub struct Metrics {
    /// The golden metrics at the root, the gateway's own under `meshrpc_gateway`.
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    rate_limited: Family<ScopeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::http::GoldenMetrics));
        let registry = root.sub_registry_with_prefix("meshrpc_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register("requests", "Requests answered, by service, method and HTTP status", requests.clone());
        registry.register("request_duration_seconds", "Time to answer a request", latency.clone());
        registry.register("in_flight", "Requests being answered now", in_flight.clone());
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register("rate_limited", "Requests refused with 429 by a rate limit, by scope", rate_limited.clone());
        Metrics { registry: root, requests, latency, in_flight, rate_limited }
    }
}

impl Metrics {
    pub(crate) fn started(&self) {
        self.in_flight.inc();
    }

    pub(crate) fn finished(&self, service: &str, method: &str, status: u16, seconds: f64) {
        self.in_flight.dec();
        let (service, method) = (service.to_owned(), method.to_owned());
        self.latency.get_or_create(&RouteLabels { service: service.clone(), method: method.clone() }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { service, method, status }).inc();
    }

    pub(crate) fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&ScopeLabels { scope }).inc();
    }

    /// Shows what the resilience policies did on the gateway's calls (retries, hedges,
    /// ejected replicas, the retry budget) and what mirroring did (docs/traffic.md), read
    /// at each scrape.
    pub(crate) fn watch(&mut self, cluster: crate::cluster::Cluster) {
        self.registry.sub_registry_with_prefix("meshrpc_gateway").register_collector(Box::new(PolicyFigures(cluster)));
    }

    /// The exposition text (the Prometheus text format; `/metrics` answers what `Accept`
    /// asks for).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// `/metrics` in the format `headers` ask for.
    pub(crate) fn answer(&self, headers: &axum::http::HeaderMap) -> axum::response::Response {
        crate::http::exposition(&self.registry, headers)
    }
}

/// What the resilience policies and mirroring did on the gateway's calls, read at each
/// scrape, under the gateway's prefix (`meshrpc_gateway_retries`, …).
struct PolicyFigures(crate::cluster::Cluster);

impl std::fmt::Debug for PolicyFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyFigures")
    }
}

impl prometheus_client::collector::Collector for PolicyFigures {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let figures: Vec<_> = self
            .0
            .resilience_stats()
            .figures()
            .into_iter()
            .chain(crate::cluster::MirrorStats::figures())
            .map(|mut f| {
                f.name = f.name.strip_prefix("meshrpc_").unwrap_or(f.name);
                f
            })
            .collect();
        crate::http::encode_figures(&figures, encoder)
    }
}
