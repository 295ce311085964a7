//! `meshrpc status`: members, services and replica latency, as a table or JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Refresh every two seconds until Ctrl-C.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    join: JoinArgs,
}

#[derive(Serialize)]
struct MemberRow {
    name: String,
    id: String,
    addr: Option<String>,
    state: meshrpc::cluster::MemberState,
    uptime_s: u64,
    services: Vec<String>,
    http: Vec<String>,
    ping_us: Option<u64>,
    /// SHA-256 of its certificate and when it expires (Unix s), with mutual TLS.
    cert_fingerprint: Option<String>,
    cert_not_after: Option<u64>,
    /// Its concurrency limit, what it refused, its retry budget and the replicas it
    /// ejected, as it answers for them (docs/resilience.md).
    policies: Option<meshrpc::cluster::Policies>,
}

#[derive(Serialize)]
struct Status {
    tag: String,
    members: Vec<MemberRow>,
    services: Vec<meshrpc::cluster::ServiceStatus>,
    /// Replicas gossiping a service their certificate does not carry (never called).
    unproven: Vec<meshrpc::cluster::UnprovenReplica>,
    /// Split and mirror rules refused lately (mutual TLS: unsigned, or by a writer not
    /// allowed to write them), as this node or the node it follows saw them.
    rejected_rules: Vec<meshrpc::cluster::RejectedRule>,
    /// Services advertised whose method lists could not be fetched, and why: this node
    /// (the CLI) cannot call them yet, nor see their members serve them.
    unfetched_method_lists: Vec<UnfetchedList>,
    /// Application versions running, the application split and each version's share of
    /// new requests.
    app: meshrpc::cluster::AppVersions,
}

#[derive(Serialize)]
struct UnfetchedList {
    service: String,
    reason: String,
}

pub(crate) async fn run(args: StatusArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(&args.join, "cluster", |v| v.members.len() > 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // let gossip settle
    loop {
        let status = collect(&cluster, &args.join.tag).await;
        if args.json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            print_table(&status);
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = meshrpc::wait_for_signal() => return Ok(()),
        }
    }
}

async fn collect(cluster: &meshrpc::Cluster, tag: &str) -> Status {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let mut members = Vec::new();
    for m in cluster.members().into_iter().filter(|m| !m.is_self) {
        let ping_us = match m.addr {
            Some(_) => cluster.ping_member(&m, Duration::from_secs(1)).await.ok().map(|rtt| rtt.as_micros() as u64),
            None => None,
        };
        let policies = match m.addr {
            Some(_) => cluster.member_policies(&m, Duration::from_secs(1)).await.ok(),
            None => None,
        };
        members.push(MemberRow {
            name: m.name,
            id: m.id,
            addr: m.addr.map(|a| a.to_string()),
            state: m.state,
            uptime_s: now_ms.saturating_sub(m.started_ms) / 1000,
            services: m.services.into_keys().collect(),
            http: m.http,
            ping_us,
            cert_fingerprint: m.cert_fingerprint,
            cert_not_after: m.cert_not_after,
            policies,
        });
    }
    Status {
        tag: tag.to_owned(),
        members,
        services: cluster.services(),
        unproven: cluster.unproven_replicas(),
        rejected_rules: cluster.rejected_rules(),
        app: cluster.app_versions(),
        unfetched_method_lists: cluster
            .unfetched_method_lists()
            .into_iter()
            .map(|(service, reason)| UnfetchedList { service, reason })
            .collect(),
    }
}

fn print_table(s: &Status) {
    println!("cluster tag: {}  ({} nodes)\n", s.tag, s.members.len());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    println!(
        "{:<14} {:<22} {:<9} {:>8} {:>9} {:>9} {:>6}  SERVICES",
        "NODE", "ADDRESS", "STATE", "UPTIME", "PING", "CERT", "LIMIT"
    );
    for m in &s.members {
        let state = serde_json::to_value(m.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let mut services = m.services.clone();
        services.extend(m.http.iter().map(|h| format!("{h} (http)")));
        let cert = m.cert_not_after.map_or("-".into(), |t| match t.checked_sub(now) {
            Some(left) if left > 0 => crate::cert::human(Duration::from_secs(left)),
            _ => "EXPIRED".into(),
        });
        let limit = m.policies.as_ref().and_then(|p| p.concurrency_limit).map_or("-".into(), |l| l.to_string());
        println!(
            "{:<14} {:<22} {:<9} {:>7}s {:>9} {:>9} {:>6}  {}",
            m.name,
            m.addr.as_deref().unwrap_or("-"),
            state,
            m.uptime_s,
            m.ping_us.map_or("-".into(), |us| format!("{:.2}ms", us as f64 / 1000.0)),
            cert,
            limit,
            services.join(", ")
        );
    }
    for m in &s.members {
        let Some(p) = &m.policies else { continue };
        if p.overloaded > 0 {
            println!("OVERLOADED: {} refused {} calls at its concurrency limit", m.name, p.overloaded);
        }
        if !p.ejected.is_empty() {
            println!("EJECTED: {} keeps {} out of its picks (answering badly)", m.name, p.ejected.join(", "));
        }
    }
    for u in &s.unproven {
        println!("UNPROVEN: {} gossips `{}` without a certificate for it (never called)", u.node, u.service);
    }
    for r in &s.rejected_rules {
        println!("REJECTED RULE: {} {} by {}: {}", r.kind, r.service, r.writer, r.reason);
    }
    for u in &s.unfetched_method_lists {
        println!("UNREACHABLE: `{}` is advertised, but its method list could not be fetched: {}", u.service, u.reason);
    }
    println!();
    println!("{:<14} {:>8}  {:<24} SPLIT", "SERVICE", "REPLICAS", "VERSIONS");
    for svc in &s.services {
        let replicas: usize = svc.versions.values().map(Vec::len).sum();
        let versions: Vec<String> = svc.versions.iter().map(|(v, ids)| format!("{v}×{}", ids.len())).collect();
        let split = svc.split.as_ref().map_or("-".to_owned(), |split| {
            let weights: Vec<String> = split.weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
            format!("{} (set by {} {} ago)", weights.join(" "), split.set_by, crate::cert::human(age(split.set_ms)))
        });
        let note = if svc.fingerprints.len() > 1 { "  (replicas built from different traits!)" } else { "" };
        let mirror = svc
            .mirror
            .as_ref()
            .and_then(|m| m.weights.first())
            .map_or(String::new(), |(v, p)| format!("  mirror {p} % to {v}"));
        println!("{:<14} {:>8}  {:<24} {split}{mirror}{note}", svc.name, replicas, versions.join(" "));
    }
    print_app(&s.app);
}

/// `APPLICATION VERSIONS`: each version's nodes and its share of new requests.
fn print_app(app: &meshrpc::cluster::AppVersions) {
    println!();
    let rule = match &app.split {
        Some(split) => {
            let weights: Vec<String> = split.weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
            format!(
                "split {} (set by {} {} ago)",
                weights.join(" "),
                split.set_by,
                crate::cert::human(age(split.set_ms))
            )
        }
        None => "no application split: requests are not pinned".to_owned(),
    };
    println!("APPLICATION VERSIONS  {rule}");
    for (version, nodes) in &app.versions {
        let share = match (&app.split, app.shares.get(version)) {
            (Some(_), Some(share)) => format!("{share:.0} % of new requests"),
            (Some(_), None) => "0 % of new requests".to_owned(),
            (None, _) => "-".to_owned(),
        };
        println!("{version:<14} {:>3} nodes  {share}", nodes.len());
    }
}

/// How long ago `ms` (Unix ms) was.
fn age(ms: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    Duration::from_millis(now.saturating_sub(ms))
}
