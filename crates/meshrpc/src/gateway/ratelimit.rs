//! Rate limits at the front door: a token bucket per client (the bearer token's subject
//! when authentication is on, else the client's IP address) and one per route. A request
//! over either gets `429 rate_limited` with `Retry-After`; everyone else is unaffected.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::Response,
};

use super::Metrics;
use crate::{error::Error, http::error_response, identity::Identity};

/// Most clients tracked at once. Past it, buckets that have refilled (idle clients) are
/// dropped; if none has, new clients share one bucket until some do.
pub(crate) const MAX_TRACKED_CLIENTS: usize = 100_000;

/// A sustained rate and a burst: `"100/s"`, `"6000/m"`, `"100/s:200"` (a burst of 200).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell (default: one second's worth, at
    /// least 1).
    pub burst: f64,
}

impl FromStr for Rate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Rate, Error> {
        let bad = || Error::BadRequest {
            message: format!(
                "`{s}` is not a rate: write COUNT/UNIT[:BURST], as in \"100/s\", \"6000/m\" or \"100/s:200\""
            ),
        };
        let (rate, burst) = match s.trim().split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.trim().parse::<f64>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: f64 = count.trim().parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        let per_second = count / seconds;
        let burst = burst.unwrap_or(per_second.max(1.0));
        if !(per_second > 0.0 && per_second.is_finite() && burst >= 1.0 && burst.is_finite()) {
            return Err(bad());
        }
        Ok(Rate { per_second, burst })
    }
}

/// What the gateway limits: each client, and routes (`/service/method`, or `/service`
/// for all of its routes) across all clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Each client's own rate.
    pub per_client: Option<Rate>,
    /// Each route's rate, all clients together; the longest matching path applies.
    pub routes: Vec<(String, Rate)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    client: Option<String>,
    #[serde(default)]
    route: HashMap<String, String>,
}

impl RateLimits {
    /// No limits.
    pub fn new() -> RateLimits {
        RateLimits::default()
    }

    /// Each client gets `rate`.
    pub fn per_client(mut self, rate: Rate) -> Self {
        self.per_client = Some(rate);
        self
    }

    /// The route `path` (`/greeter/greet`, or `/greeter`) gets `rate` across all clients.
    pub fn route(mut self, path: impl Into<String>, rate: Rate) -> Self {
        self.routes.push((path.into(), rate));
        self
    }

    /// Reads limits from a TOML file:
    ///
    /// ```toml
    /// client = "100/s:200"            # each client
    /// [route]
    /// "/greeter/greet" = "50/s"       # one method, all clients together
    /// "/billing" = "1000/m"           # every route of a service
    /// ```
    pub fn from_file(path: &Path) -> Result<RateLimits, Error> {
        let at = |e: String| Error::BadRequest { message: format!("{}: {e}", path.display()) };
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let file: LimitsFile = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
        let mut limits = RateLimits::new();
        if let Some(rate) = file.client {
            limits = limits.per_client(rate.parse().map_err(|e: Error| at(e.to_string()))?);
        }
        for (route, rate) in file.route {
            if !route.starts_with('/') {
                return Err(at(format!("route `{route}` must start with `/`")));
            }
            limits = limits.route(route, rate.parse().map_err(|e: Error| at(e.to_string()))?);
        }
        Ok(limits)
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.per_client.is_none() && self.routes.is_empty()
    }
}

/// Token buckets by key.
struct Buckets {
    rate: Rate,
    map: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    /// When a full table was last swept for idle clients: a sweep walks every client,
    /// so a table full of busy ones is swept at most every [`SWEEP_EVERY`].
    swept: Option<Instant>,
}

const SWEEP_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Clients over [`MAX_TRACKED_CLIENTS`] share this bucket.
const OVERFLOW: &str = "\0overflow";

impl Buckets {
    fn new(rate: Rate) -> Buckets {
        Buckets { rate, map: Mutex::default() }
    }

    /// Takes a token for `key`; when there is none, how long until there is.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut table = self.map.lock().unwrap();
        let Table { buckets: map, swept } = &mut *table;
        let due = swept.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if !map.contains_key(key) && map.len() >= MAX_TRACKED_CLIENTS && due {
            let rate = self.rate;
            map.retain(|k, b| k == OVERFLOW || refill(rate, *b, now) < rate.burst);
            *swept = Some(now);
        }
        let key = if map.len() >= MAX_TRACKED_CLIENTS && !map.contains_key(key) { OVERFLOW } else { key };
        let bucket = map.entry(key.to_owned()).or_insert(Bucket { tokens: self.rate.burst, at: now });
        let tokens = refill(self.rate, *bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate.per_second))
        }
    }
}

fn refill(rate: Rate, b: Bucket, now: Instant) -> f64 {
    (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate.per_second).min(rate.burst)
}

/// The gateway's limiter: the buckets of [`RateLimits`].
pub(super) struct Limiter {
    clients: Option<Buckets>,
    /// Longest paths first: the first match is the most specific.
    routes: Vec<(String, Buckets)>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub(super) fn new(limits: RateLimits, metrics: Arc<Metrics>) -> Limiter {
        let mut routes: Vec<(String, Buckets)> = limits
            .routes
            .into_iter()
            .map(|(path, rate)| (path.trim_end_matches('/').to_owned(), Buckets::new(rate)))
            .collect();
        routes.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Limiter { clients: limits.per_client.map(Buckets::new), routes, metrics }
    }

    fn check(&self, client: &str, path: &str, now: Instant) -> Result<(), (Duration, &'static str, String)> {
        if let Some(clients) = &self.clients {
            clients.take(client, now).map_err(|wait| (wait, "client", format!("client {client} is over its rate")))?;
        }
        let route = self.routes.iter().find(|(prefix, _)| {
            path == prefix || (path.starts_with(prefix.as_str()) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        });
        if let Some((prefix, buckets)) = route {
            buckets.take("", now).map_err(|wait| (wait, "route", format!("route {prefix} is over its rate")))?;
        }
        Ok(())
    }
}

/// Routes that must answer whatever the load: probes and scrapes.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/ping" | "/__heartbeat__" | "/metrics")
}

pub(super) async fn limit(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if exempt(path) {
        return next.run(req).await;
    }
    let client = match req.extensions().get::<Arc<Identity>>() {
        Some(identity) => identity.to_string(),
        None => match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
            None => "ip:unknown".to_owned(),
        },
    };
    match limiter.check(&client, path, crate::clock::now()) {
        Ok(()) => next.run(req).await,
        Err((wait, scope, message)) => {
            limiter.metrics.rate_limited(scope);
            let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message, None);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_bursts() {
        assert_eq!("100/s".parse::<Rate>().unwrap(), Rate { per_second: 100.0, burst: 100.0 });
        assert_eq!("60/m:5".parse::<Rate>().unwrap(), Rate { per_second: 1.0, burst: 5.0 });
        assert_eq!("1/h".parse::<Rate>().unwrap().burst, 1.0);
        for bad in ["100", "100/d", "0/s", "x/s", "10/s:0", "-1/s"] {
            assert!(bad.parse::<Rate>().unwrap_err().to_string().contains("COUNT/UNIT"), "{bad}");
        }
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_come_back() {
        let buckets = Buckets::new(Rate { per_second: 2.0, burst: 3.0 });
        let t0 = crate::clock::now();
        assert!((0..3).all(|_| buckets.take("a", t0).is_ok()));
        let wait = buckets.take("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(buckets.take("b", t0).is_ok(), "another client is unaffected");
        assert!(buckets.take("a", t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn the_client_table_is_bounded_and_idle_clients_make_room() {
        let buckets = Buckets::new(Rate { per_second: 1.0, burst: 2.0 });
        let t0 = crate::clock::now();
        // More clients than tracked, all busy: the newest share one bucket.
        for i in 0..MAX_TRACKED_CLIENTS + 100 {
            let _ = buckets.take(&format!("client-{i}"), t0);
        }
        let tracked = |b: &Buckets| b.map.lock().unwrap().buckets.len();
        assert_eq!(tracked(&buckets), MAX_TRACKED_CLIENTS + 1, "the clients, and the shared bucket");
        assert!(buckets.take("late", t0).is_err(), "the first clients past the table spent the shared burst");
        assert_eq!(tracked(&buckets), MAX_TRACKED_CLIENTS + 1);
        // A second later every client has refilled: the next new client sweeps them out.
        assert!(buckets.take("next", t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(tracked(&buckets), 2, "the overflow bucket and the new client");
    }

    #[test]
    fn the_most_specific_route_applies() {
        let limits = RateLimits::new()
            .route("/greeter", Rate { per_second: 1000.0, burst: 1000.0 })
            .route("/greeter/greet", Rate { per_second: 1.0, burst: 1.0 });
        let limiter = Limiter::new(limits, Arc::default());
        let now = crate::clock::now();
        assert!(limiter.check("c", "/greeter/greet", now).is_ok());
        let (_, scope, message) = limiter.check("c", "/greeter/greet", now).unwrap_err();
        assert_eq!((scope, message.as_str()), ("route", "route /greeter/greet is over its rate"));
        assert!(limiter.check("c", "/greeter/hello", now).is_ok());
        assert!(limiter.check("c", "/greeterx/greet", now).is_ok(), "a prefix must end at a segment");
    }
}
