//! `/metrics`, wherever it is served (a node's port, its admin port, the gateway): one
//! writer, prometheus-client, in the format the scraper asks for — the Prometheus text
//! format 0.0.4 by default (what `promtool check metrics` and most parsers read), and
//! OpenMetrics 1.0 when `Accept` names `application/openmetrics-text` (as Prometheus does).
//! The core counts; this module only shows what it counted.

use axum::{
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::{
    metrics::calls::{self, Direction, SeriesStats, LATENCY_BOUNDS},
    metrics::{Figure, Figures},
};

/// The content type of OpenMetrics 1.0.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when `Accept` asks for OpenMetrics (with a non-zero weight).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let zero = params.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f64>().is_ok_and(|q| q <= 0.0)));
        media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
    })
}

/// `registry` in the format `headers` ask for.
pub(crate) fn exposition(registry: &Registry, headers: &HeaderMap) -> Response {
    let mut out = String::new();
    let (written, content_type) = if wants_openmetrics(headers) {
        (prometheus_client::encoding::text::encode(&mut out, registry), OPENMETRICS)
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    if let Err(e) = written {
        // Writing to a String fails only if a collector does: say so rather than half a page.
        tracing::warn!(error = %e, "/metrics could not be written");
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be written\n").into_response();
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], out).into_response()
}

/// A node's `/metrics`: its figures, then the golden metrics of its calls.
pub(crate) fn render_metrics(figures: &Figures, headers: &HeaderMap) -> Response {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FiguresCollector(figures.clone())));
    registry.register_collector(Box::new(GoldenMetrics));
    exposition(&registry, headers)
}

/// What each layer of a node counts, read at each scrape.
struct FiguresCollector(Figures);

impl std::fmt::Debug for FiguresCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FiguresCollector")
    }
}

impl Collector for FiguresCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_figures(&(self.0)(), encoder)
    }
}

/// Figures as constant counters and gauges; figures of one name in a row are one family
/// (one label each).
pub(crate) fn encode_figures(figures: &[Figure], mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let mut rest = figures;
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|f| f.name == first.name).count();
        let (family, next) = rest.split_at(n);
        rest = next;
        let kind = if first.counter { MetricType::Counter } else { MetricType::Gauge };
        let mut metric = encoder.encode_descriptor(first.name, first.help, None, kind)?;
        for f in family {
            let labels: Vec<(&str, &str)> = f.label.into_iter().collect();
            encode_figure(f, metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn encode_figure(f: &Figure, metric: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match f.counter {
        true => ConstCounter::new(f.value).encode(metric),
        false => ConstGauge::new(i64::try_from(f.value).unwrap_or(i64::MAX)).encode(metric),
    }
}

/// The golden metrics (`metrics::calls`): calls by result code, their durations, calls in
/// flight, and the items and bytes of stream answers, by direction, service, method and
/// peer. A stream is one call: in flight while it runs, counted and timed when it ends.
#[derive(Debug)]
pub(crate) struct GoldenMetrics;

impl Collector for GoldenMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let series = calls::node_stats().series;
        if series.is_empty() {
            return Ok(()); // no call yet: no families without samples
        }
        let mut calls = encoder.encode_descriptor(
            "meshrpc_calls",
            "Calls ended, by direction (inbound: served here; outbound: made to another node), service, method, peer node and result code (a stream counts when it ends)",
            None,
            MetricType::Counter,
        )?;
        for s in &series {
            for (code, n) in &s.codes {
                ConstCounter::new(*n).encode(calls.encode_family(&(labels(s), [("code", code.as_str())]))?)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "meshrpc_call_duration_seconds",
            "How long calls took (a stream: until it ended), by direction, service, method and peer node",
            None,
            MetricType::Histogram,
        )?;
        for s in &series {
            let buckets: Vec<(f64, u64)> =
                LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]).zip(s.latency.iter().copied()).collect();
            durations.encode_family(&labels(s))?.encode_histogram::<NoLabelSet>(
                s.latency_seconds,
                s.latency.iter().sum(),
                &buckets,
                None,
            )?;
        }
        let mut running = encoder.encode_descriptor(
            "meshrpc_calls_in_flight",
            "Calls running now (a stream until it ends), by direction, service, method and peer node",
            None,
            MetricType::Gauge,
        )?;
        for s in &series {
            let gauge = ConstGauge::new(i64::try_from(s.running).unwrap_or(i64::MAX));
            gauge.encode(running.encode_family(&labels(s))?)?;
        }
        let streams: Vec<&SeriesStats> = series.iter().filter(|s| s.stream_items > 0).collect();
        if streams.is_empty() {
            return Ok(());
        }
        let counters: [(&str, &str, SeriesFigure); 2] = [
            (
                "meshrpc_stream_items",
                "Items stream answers carried, by direction, service, method and peer node",
                |s| s.stream_items,
            ),
            ("meshrpc_stream_bytes", "Bytes of those items (encoded; 0 for calls within one process)", |s| {
                s.stream_bytes
            }),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &streams {
                ConstCounter::new(value(s)).encode(family.encode_family(&labels(s))?)?;
            }
        }
        Ok(())
    }
}

/// One number of a series.
type SeriesFigure = fn(&SeriesStats) -> u64;

/// A series' labels.
fn labels(s: &SeriesStats) -> [(&'static str, &str); 4] {
    let direction = match s.direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    };
    [("direction", direction), ("service", &s.service), ("method", &s.method), ("peer", &s.peer)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(&accept(prometheus)));
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!wants_openmetrics(&accept("text/html,application/xhtml+xml,*/*;q=0.8")));
        assert!(!wants_openmetrics(&accept("application/openmetrics-text;q=0, text/plain")));
    }

    #[test]
    fn figures_are_typed_families_in_both_formats() {
        let figures = [
            Figure::counter("meshrpc_things", "Things", 3),
            Figure::gauge("meshrpc_members", "Members", 2).with_label("state", "serving"),
            Figure::gauge("meshrpc_members", "Members", 0).with_label("state", "draining"),
        ];
        let figures: Figures = std::sync::Arc::new(move || figures.to_vec());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FiguresCollector(figures)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE meshrpc_things_total counter\nmeshrpc_things_total 3\n"), "{text}");
        assert!(text.contains("meshrpc_members{state=\"serving\"} 2\nmeshrpc_members{state=\"draining\"} 0\n"));
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &registry).unwrap();
        assert!(open.contains("# TYPE meshrpc_things counter\nmeshrpc_things_total 3\n"), "{open}");
        assert!(open.ends_with("# EOF\n"));
    }
}
