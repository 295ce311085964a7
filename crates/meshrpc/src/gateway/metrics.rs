//! Gateway metrics in Prometheus text format: requests by service, method and status,
//! a latency histogram per service and method, requests in flight.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
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
        let mut registry = Registry::with_prefix("meshrpc_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register("requests", "Requests answered, by service, method and HTTP status", requests.clone());
        registry.register("request_duration_seconds", "Time to answer a request", latency.clone());
        registry.register("in_flight", "Requests being answered now", in_flight.clone());
        // What mirroring did from the gateway's calls (docs/traffic.md), read at each scrape.
        registry.register_collector(Box::new(MirrorCollector));
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register("rate_limited", "Requests refused with 429 by a rate limit, by scope", rate_limited.clone());
        Metrics { registry, requests, latency, in_flight, rate_limited }
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
    /// ejected replicas, the retry budget), read at each scrape.
    pub(crate) fn watch(&mut self, cluster: crate::cluster::Cluster) {
        self.registry.register_collector(Box::new(ResilienceCollector(cluster)));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        // The golden metrics of the calls this process made and served, before the end.
        let end = out.rfind("# EOF").unwrap_or(out.len());
        let mut golden = String::new();
        crate::call_stats::prometheus_text(&mut golden);
        out.insert_str(end, &golden);
        out
    }
}

/// The mirroring counters of this process, as constant counters read at each scrape.
#[derive(Debug)]
struct MirrorCollector;

impl prometheus_client::collector::Collector for MirrorCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::{encoding::EncodeMetric, metrics::counter::ConstCounter};
        for (name, help, value) in crate::cluster::MirrorStats::values() {
            // Under the registry's prefix: `meshrpc_gateway_mirrored_calls` and so on.
            let name = name.strip_prefix("meshrpc_").unwrap_or(name);
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The gateway node's resilience figures, read at each scrape.
struct ResilienceCollector(crate::cluster::Cluster);

impl std::fmt::Debug for ResilienceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResilienceCollector")
    }
}

impl prometheus_client::collector::Collector for ResilienceCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{counter::ConstCounter, gauge::ConstGauge},
        };
        for f in self.0.resilience_stats().figures() {
            let name = f.name.strip_prefix("meshrpc_").unwrap_or(f.name);
            if f.counter {
                let counter = ConstCounter::new(f.value);
                counter.encode(encoder.encode_descriptor(name, f.help, None, counter.metric_type())?)?;
            } else {
                let gauge = ConstGauge::new(f.value as i64);
                gauge.encode(encoder.encode_descriptor(name, f.help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}
