//! `boutique-load --url http://127.0.0.1:8080 --rate 50 --duration-s 20`: Online Boutique's
//! load generator (the upstream locustfile's mix: index 1, set currency 2, browse product
//! 10, add to cart 2, view cart 3, checkout 1) against the frontend's JSON API behind a
//! gateway (`POST /frontend/<method>`).
//!
//! Open loop: a request starts every 1/rate s whether or not earlier ones answered, so a
//! slow app shows as latency, not as a lower offered rate. Bounded: it starts nothing after
//! `--duration-s`, waits at most `--drain-s` for what is in flight, and holds at most
//! `--max-in-flight` requests (a start past it is counted as dropped, not queued).
//!
//! Each answer names the application version that served it (the gateway's
//! `meshrpc-version` header under an application split, and the pages' `version`); an
//! order also names its checkout's and payment's (`ord-v2-…`, `txn-v2-…`). An answer whose
//! versions differ is counted as mixed. Prints a JSON line a second (`{"second": …}`) and a
//! summary (`{"summary": …}`), then a table per request type.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Online Boutique's load generator: open loop, the upstream mix, against the frontend's JSON API")]
struct Cli {
    /// The gateway (`http://127.0.0.1:8080`).
    #[arg(long)]
    url: String,
    /// Requests started per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long to start requests for, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// How long to wait for requests in flight at the end, in seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_s: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Distinct shoppers (each keeps a session: its currency, its cart).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// A request's deadline at the gateway, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// The request types, as the upstream load generator names its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Index,
    SetCurrency,
    BrowseProduct,
    AddToCart,
    ViewCart,
    Checkout,
}

impl Kind {
    /// The locustfile's weights.
    const MIX: [(Kind, u32); 6] = [
        (Kind::Index, 1),
        (Kind::SetCurrency, 2),
        (Kind::BrowseProduct, 10),
        (Kind::AddToCart, 2),
        (Kind::ViewCart, 3),
        (Kind::Checkout, 1),
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::SetCurrency => "set_currency",
            Kind::BrowseProduct => "browse_product",
            Kind::AddToCart => "add_to_cart",
            Kind::ViewCart => "view_cart",
            Kind::Checkout => "checkout",
        }
    }
}

const PRODUCTS: [&str; 9] = [
    "0PUK6V6EV0",
    "1YMWWN1N4O",
    "2ZYFJ3GM2N",
    "66VCHSJNUP",
    "6E92ZMYYFZ",
    "9SIQT8TOJO",
    "L9ECAV7KIM",
    "LS4PSXUNUM",
    "OLJCESPC7Z",
];
const CURRENCIES: [&str; 4] = ["EUR", "USD", "JPY", "CAD"];

/// What one request came to.
enum Outcome {
    Ok {
        version: Option<String>,
        mixed: bool,
    },
    /// A checkout of a cart emptied by a version move: the shopper's cart was filled at
    /// one version and the order reached another (carts are in memory, per version).
    Moved,
    Failed(String),
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    failed: u64,
    moved: u64,
    mixed: u64,
    versions: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, took: Duration, outcome: &Outcome) {
        self.latencies_us.push(took.as_micros() as u64);
        match outcome {
            Outcome::Ok { version, mixed } => {
                self.ok += 1;
                self.mixed += u64::from(*mixed);
                *self.versions.entry(version.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
            }
            Outcome::Moved => self.moved += 1,
            Outcome::Failed(why) => {
                self.failed += 1;
                *self.errors.entry(why.clone()).or_default() += 1;
            }
        }
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let at = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[at] as f64 / 1000.0
    }
}

struct Shop {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
    timeout_ms: String,
    sessions: Vec<Mutex<Value>>,
}

/// An answer: status, the version that served it, the body.
struct Answer {
    status: u16,
    version: Option<String>,
    body: Value,
}

impl Shop {
    async fn post(&self, method: &str, user: &str, args: Value) -> Result<Answer, String> {
        let req = hyper::Request::post(format!("{}/frontend/{method}", self.url))
            .header("content-type", "application/json")
            .header("meshrpc-key", user) // a shopper's requests go to one version of a split
            .header("meshrpc-timeout-ms", &self.timeout_ms)
            .body(Full::new(Bytes::from(args.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| format!("http: {e}"))?;
        let status = resp.status().as_u16();
        let version = resp.headers().get("meshrpc-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.into_body().collect().await.map_err(|e| format!("http body: {e}"))?.to_bytes();
        let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // The gateway's envelope: `{"data": …}`, or `{"errors": […]}`.
        if status == 200 {
            body = body["data"].take();
        }
        Ok(Answer { status, version, body })
    }

    /// The answer as an outcome: a page whose own `version` differs from the one the
    /// gateway pinned is mixed.
    fn judge(answer: Answer) -> Outcome {
        if answer.status != 200 {
            let code = answer.body["errors"][0]["code"].as_str().unwrap_or("?").to_owned();
            return Outcome::Failed(format!("{} {code}", answer.status));
        }
        let page = answer.body["version"].as_str();
        let mixed = matches!((&answer.version, page), (Some(pinned), Some(page)) if pinned != page);
        Outcome::Ok { version: answer.version.or(page.map(str::to_owned)), mixed }
    }

    async fn run(&self, kind: Kind, n: usize) -> Outcome {
        let user_index = n % self.sessions.len();
        let session = self.sessions[user_index].lock().unwrap().clone();
        let user = session["user_id"].as_str().unwrap_or_default().to_owned();
        let product = PRODUCTS[n % PRODUCTS.len()];
        let result = match kind {
            Kind::Index => self.post("home", &user, json!({ "session": session })).await,
            Kind::SetCurrency => {
                let currency = CURRENCIES[n % CURRENCIES.len()];
                let answer =
                    self.post("set_currency", &user, json!({ "session": session, "currency": currency })).await;
                if let Ok(a) = &answer {
                    if a.status == 200 {
                        *self.sessions[user_index].lock().unwrap() = a.body.clone();
                        // A session is no page: it names no version of its own.
                        return Outcome::Ok { version: a.version.clone(), mixed: false };
                    }
                }
                answer
            }
            Kind::BrowseProduct => {
                self.post("product", &user, json!({ "session": session, "product_id": product })).await
            }
            Kind::AddToCart => {
                let args = json!({ "session": session, "product_id": product, "quantity": 1 + n % 3 });
                self.post("add_to_cart", &user, args).await
            }
            Kind::ViewCart => self.post("view_cart", &user, json!({ "session": session })).await,
            Kind::Checkout => return self.checkout(&user, &session, product).await,
        };
        match result {
            Ok(answer) => Shop::judge(answer),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// As upstream: add something to the cart, then check out. The order names the
    /// versions of checkout and payment (`ord-v2-…`, `txn-v2-…`).
    async fn checkout(&self, user: &str, session: &Value, product: &str) -> Outcome {
        let added = self.post("add_to_cart", user, json!({ "session": session, "product_id": product, "quantity": 1 }));
        let added = match added.await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => return Shop::judge(a),
            Err(e) => return Outcome::Failed(e),
        };
        let form = json!({
            "email": format!("{user}@example.com"),
            "address": {
                "street_address": "1600 Amphitheatre Parkway", "city": "Mountain View", "state": "CA",
                "country": "United States", "zip_code": 94043
            },
            "credit_card": {
                "credit_card_number": "4432-8015-6152-0454", "credit_card_cvv": 672,
                "credit_card_expiration_year": 2099, "credit_card_expiration_month": 1
            }
        });
        let answer = match self.post("checkout", user, json!({ "session": session, "form": form })).await {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(e),
        };
        let empty_cart = answer.status == 422 && answer.body.to_string().contains("EmptyCart");
        if empty_cart && added.version != answer.version {
            return Outcome::Moved;
        }
        let order = &answer.body["order"];
        let named = |id: &Value| id.as_str().and_then(|id| id.split('-').nth(1)).map(str::to_owned);
        let (placed_by, charged_by) = (named(&order["order_id"]), named(&order["transaction_id"]));
        match Shop::judge(answer) {
            Outcome::Ok { version, mixed } => {
                let page = version.clone();
                let mixed = mixed || placed_by != page || charged_by != page;
                Outcome::Ok { version, mixed }
            }
            other => other,
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let run_id = std::process::id();
    let sessions = (0..cli.users.max(1))
        .map(|i| Mutex::new(json!({ "user_id": format!("shopper-{run_id}-{i}"), "currency": "USD" })))
        .collect();
    let shop = Arc::new(Shop {
        client,
        url: cli.url.trim_end_matches('/').to_owned(),
        timeout_ms: cli.timeout_ms.to_string(),
        sessions,
    });
    let total_weight: u32 = Kind::MIX.iter().map(|(_, w)| w).sum();
    let tallies: Arc<Mutex<BTreeMap<Kind, Tally>>> = Arc::default();
    let second: Arc<Mutex<Tally>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut dropped = 0u64;
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / cli.rate.max(0.001));
    let stop = start + Duration::from_secs_f64(cli.duration_s);
    let mut next_report = start + Duration::from_secs(1);
    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let due = start + every.mul_f64(n as f64);
        if due >= stop {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        while Instant::now() >= next_report {
            let mut s = std::mem::take(&mut *second.lock().unwrap());
            let at = next_report.duration_since(start).as_secs();
            let line = json!({ "second": at, "ok": s.ok, "failed": s.failed, "moved": s.moved, "mixed": s.mixed,
                "versions": s.versions, "p50_ms": s.percentile_ms(0.5) });
            println!("{line}");
            next_report += Duration::from_secs(1);
        }
        // Pick a request type by weight (a fixed spread over the sequence: reproducible).
        let mut pick = (n as u32).wrapping_mul(2_654_435_761) % total_weight;
        let kind = Kind::MIX.iter().find(|(_, w)| {
            let hit = pick < *w;
            pick = pick.saturating_sub(*w);
            hit
        });
        let kind = kind.map_or(Kind::BrowseProduct, |(k, _)| *k);
        n += 1;
        if in_flight.load(Ordering::Relaxed) >= cli.max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (shop, tallies, second, in_flight) = (shop.clone(), tallies.clone(), second.clone(), in_flight.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let outcome = shop.run(kind, n).await;
            let took = began.elapsed();
            tallies.lock().unwrap().entry(kind).or_default().add(took, &outcome);
            second.lock().unwrap().add(took, &outcome);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let started = n as u64 - dropped;
    let drained = tokio::time::timeout(Duration::from_secs_f64(cli.drain_s), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let unfinished = if drained.is_err() { in_flight.load(Ordering::Relaxed) as u64 } else { 0 };
    let elapsed = start.elapsed().as_secs_f64();
    let mut tallies = std::mem::take(&mut *tallies.lock().unwrap());
    let mut by_kind = serde_json::Map::new();
    let mut table = Vec::new();
    let (mut ok, mut failed, mut moved, mut mixed) = (0, 0, 0, 0);
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, t) in tallies.iter_mut() {
        let (p50, p99) = (t.percentile_ms(0.5), t.percentile_ms(0.99));
        by_kind.insert(
            kind.name().into(),
            json!({ "count": t.latencies_us.len(), "ok": t.ok, "failed": t.failed, "moved": t.moved,
                "mixed": t.mixed, "p50_ms": p50, "p99_ms": p99 }),
        );
        table.push(format!(
            "{:<16} {:>7} {:>7} {:>7} {:>9.2} {:>9.2}",
            kind.name(),
            t.latencies_us.len(),
            t.ok,
            t.failed,
            p50,
            p99
        ));
        (ok, failed, moved, mixed) = (ok + t.ok, failed + t.failed, moved + t.moved, mixed + t.mixed);
        for (v, c) in &t.versions {
            *versions.entry(v.clone()).or_default() += c;
        }
        for (e, c) in &t.errors {
            *errors.entry(e.clone()).or_default() += c;
        }
    }
    let summary = json!({ "summary": {
        "offered_per_s": cli.rate, "started": started, "dropped": dropped, "unfinished": unfinished,
        "ok": ok, "failed": failed, "moved": moved, "mixed": mixed, "versions": versions, "errors": errors,
        "elapsed_s": elapsed, "by_kind": by_kind,
    }});
    println!("{summary}");
    eprintln!("{:<16} {:>7} {:>7} {:>7} {:>9} {:>9}", "REQUEST", "COUNT", "OK", "FAILED", "P50 ms", "P99 ms");
    for line in table {
        eprintln!("{line}");
    }
    eprintln!(
        "started {started} at {} /s, dropped {dropped}, unfinished {unfinished}, failed {failed}, mixed {mixed}, moved {moved}",
        cli.rate
    );
}
