//! `meshrpc call greeter.greet '{"name":"Max"}'`: one call from the shell.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use meshrpc::{call::Reply, Error};

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// `<service>.<method>`
    #[arg(required_unless_present = "list", add = clap_complete::ArgValueCompleter::new(crate::complete::targets))]
    target: Option<String>,
    /// Arguments as a JSON object keyed by parameter name.
    #[arg(default_value = "{}")]
    args: String,
    /// Sticky-session key.
    #[arg(long)]
    key: Option<String>,
    /// Deadline of the call, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// List services and methods with their arguments instead.
    #[arg(long)]
    list: bool,
    /// Send the call a stream of items read from stdin, one JSON value per line (NDJSON),
    /// for a method that takes a stream.
    #[arg(long)]
    items: bool,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: CallArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.list {
        return list(&args.join).await;
    }
    let target = args.target.as_deref().unwrap_or_default();
    let Some((service, method)) = target.split_once('.') else {
        return Err(format!("`{target}`: name the call as <service>.<method>, e.g. greeter.greet").into());
    };
    let parsed: serde_json::Value =
        serde_json::from_str(&args.args).map_err(|e| format!("arguments are not valid JSON: {e}"))?;
    if !parsed.is_object() {
        return Err("arguments must be a JSON object keyed by parameter name, e.g. '{\"name\":\"Max\"}'".into());
    }
    let cluster = join(&args.join, &format!("service `{service}`"), |v| v.knows(service)).await?;
    // A service that publishes its schemas has its arguments checked before the call.
    if let Some(doc) = schemas_of(&cluster, service).await {
        let described = doc["methods"].as_array().and_then(|ms| ms.iter().find(|m| m["name"] == method));
        if let Some(m) = described {
            if let Some(wrong) = crate::types::check_args(&parsed, &m["args"], &doc["components"]) {
                return Err(format!("{service}.{method}: {wrong}; nothing was sent").into());
            }
        }
    }
    let mut channel = cluster.channel().with_timeout(Duration::from_secs_f64(args.timeout));
    if let Some(key) = &args.key {
        channel = channel.with_key(key.as_str());
    }
    // A stream answer has no deadline but the one asked for: it runs until it ends.
    let input = args.items.then(stdin_items);
    let reply =
        channel.call_raw_items(service.to_owned(), method.to_owned(), args.args.clone().into(), input, true).await;
    match reply {
        Ok(Reply::Stream(mut items)) => {
            // Items are printed as they arrive, one JSON value per line.
            let mut out = std::io::stdout();
            while let Some(item) = items.next().await {
                match item {
                    Ok(Reply::Ok(bytes)) => {
                        out.write_all(&bytes)?;
                        out.write_all(b"\n")?;
                        out.flush()?;
                    }
                    Ok(Reply::AppError(bytes)) => {
                        return Err(
                            format!("{service}.{method}'s stream failed: {}", String::from_utf8_lossy(&bytes)).into()
                        )
                    }
                    Ok(Reply::Stream(_)) => return Err("a stream inside a stream".into()),
                    Err(e) => return Err(format!("{service}.{method}'s stream failed: {e}").into()),
                }
            }
            Ok(())
        }
        Ok(Reply::Ok(bytes)) => {
            if std::io::stdout().is_terminal() {
                let value: serde_json::Value = serde_json::from_slice(&bytes)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                // As the node sent it: numbers past 64 bits keep every digit.
                let mut out = std::io::stdout();
                out.write_all(if bytes.is_empty() { b"null" } else { &bytes })?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Ok(Reply::AppError(bytes)) => {
            Err(format!("{service}.{method} returned an error: {}", String::from_utf8_lossy(&bytes)).into())
        }
        Err(e @ Error::UnknownMethod { .. }) => {
            let known = methods_of(&cluster, service).join(", ");
            Err(format!("{e} (it has: {known})").into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Lines of stdin as the call's items (blank lines skipped; a line that is not JSON ends
/// the items with `bad_request` naming it).
fn stdin_items() -> meshrpc::call::Items {
    let (tx, items) = meshrpc::call::Items::channel(16);
    std::thread::spawn(move || {
        for (n, line) in std::io::stdin().lines().enumerate() {
            let item = match line {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(_) => Ok(Reply::Ok(line.into())),
                    Err(e) => Err(Error::BadRequest { message: format!("stdin line {}: {e}", n + 1) }),
                },
                Err(e) => Err(Error::BadRequest { message: format!("reading stdin: {e}") }),
            };
            let last = item.is_err();
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        }
    });
    items
}

/// What a replica of `service` publishes as its JSON Schemas, if anything (within 1 s).
async fn schemas_of(cluster: &meshrpc::Cluster, service: &str) -> Option<serde_json::Value> {
    let view = cluster.view();
    let member = view.replicas(service, None).next()?;
    cluster.service_schemas(member, service, Duration::from_secs(1)).await.ok().flatten()
}

fn methods_of(cluster: &meshrpc::Cluster, service: &str) -> Vec<String> {
    let members = cluster.members();
    let adv = members.iter().find_map(|m| m.services.get(service));
    adv.map(|a| a.methods.iter().map(|m| m.name.clone()).collect()).unwrap_or_default()
}

async fn list(args: &JoinArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(args, "any service", |v| v.members.iter().any(|m| !m.services.is_empty())).await?;
    // One more gossip round or two, so the listing is complete.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = std::collections::BTreeMap::new();
    for m in cluster.members() {
        for (name, adv) in m.services {
            seen.entry(name).or_insert(adv);
        }
    }
    for (name, adv) in seen {
        println!("{name}");
        let doc = schemas_of(&cluster, &name).await;
        let described =
            |method: &str| doc.as_ref()?["methods"].as_array()?.iter().find(|m| m["name"] == method).cloned();
        for m in adv.methods {
            let mut options = Vec::new();
            if m.idempotent {
                options.push("idempotent".to_owned());
            }
            if m.hedge {
                options.push("hedged".to_owned());
            }
            if let Some(t) = m.timeout {
                options.push(format!("timeout {t:?}"));
            }
            if let Some(d) = described(&m.name) {
                // Typed: `lab.wide(a: u64, b: i128) -> (u64, i128)`.
                let typed: Vec<String> = m
                    .args
                    .iter()
                    .map(|a| match d["args"]["properties"].get(a) {
                        Some(t) => format!("{a}: {}", crate::types::type_name(t)),
                        None => format!("{a}: stream of {}", crate::types::type_name(&d["items"])),
                    })
                    .collect();
                let value = crate::types::type_name(&d["value"]);
                let value = if m.streams { format!("stream of {value}") } else { value };
                let options = if options.is_empty() { String::new() } else { format!(" ({})", options.join(", ")) };
                println!(
                    "  {name}.{}({}) -> {value}{options}    error: {}",
                    m.name,
                    typed.join(", "),
                    crate::types::type_name(&d["error"])
                );
                continue;
            }
            let plain: Vec<&String> = m.args.iter().filter(|a| m.items.as_ref() != Some(*a)).collect();
            let example: Vec<String> = plain.iter().map(|p| format!("\"{p}\":…")).collect();
            let params: Vec<String> = m
                .args
                .iter()
                .map(|a| if m.items.as_ref() == Some(a) { format!("{a}: stream") } else { a.clone() })
                .collect();
            let answer = if m.streams { " -> stream" } else { "" };
            let answer =
                if options.is_empty() { answer.to_owned() } else { format!("{answer} ({})", options.join(", ")) };
            let items = if m.items.is_some() { " --items < items.ndjson" } else { "" };
            println!("  {name}.{}({}){answer}    '{{{}}}'{items}", m.name, params.join(", "), example.join(","));
        }
    }
    Ok(())
}
