//! `meshrpc demo`: the seed's walkthrough as one command. Starts the example gateway
//! and greeter replicas as separate processes (this binary, re-run), prints what to
//! try, and stops them all on Ctrl-C.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Greeter replicas to start.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// HTTP port of the gateway.
    #[arg(long, default_value_t = 8282)]
    http_port: u16,
    /// Mesh port of the gateway (the replicas join through it).
    #[arg(long, default_value_t = 11999)]
    mesh_port: u16,
}

pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let seed = format!("127.0.0.1:{}", args.mesh_port);
    let mut children = Vec::new();
    let (gateway, mut gateway_lines) = spawn(
        &me,
        &[
            "example",
            "mesh-api",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            &args.http_port.to_string(),
            "--listen-addr",
            &seed,
        ],
        "mesh-api",
    )?;
    let ready = wait_for_line(&mut gateway_lines, "ready");
    children.push(gateway);
    for i in 1..=args.replicas {
        let name = format!("greeter-{i}");
        children.push(spawn(&me, &["example", "greeter", "--nodes", &seed, "--listen-addr", "127.0.0.1:0"], &name)?.0);
    }
    let outcome = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), ready) => match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "the gateway stopped before it was ready (see its error above; are ports {} and {} free?)",
                args.http_port, args.mesh_port
            )
            .into()),
            Err(_) => Err("the gateway did not see a greeter within 30 s".into()),
        },
        _ = meshrpc::wait_for_signal() => Err("interrupted".into()),
    };
    drop(gateway_lines); // start-up is over: the relay keeps no more lines
    if outcome.is_ok() {
        let base = format!("http://localhost:{}", args.http_port);
        println!();
        println!("meshrpc demo: gateway on {base}, mesh on {seed}, {} greeter replicas", args.replicas);
        println!("try:");
        println!("  curl {base}/greeter/greet/Max");
        println!("  curl -d '{{\"name\":\"Max\"}}' {base}/greeter/greet");
        println!("  curl {base}/greeter/check");
        println!("  curl -X POST {base}/greeter/sendPostcard/Max/World/Hello");
        println!("  curl {base}/metrics");
        println!("scale out: meshrpc example greeter --nodes {seed} --listen-addr 127.0.0.1:0");
        println!("Ctrl-C stops everything.");
        meshrpc::wait_for_signal().await;
    }
    println!("stopping...");
    stop_all(children).await;
    outcome
}

type Lines = tokio::sync::mpsc::Receiver<String>;

/// Lines kept for whoever waits on a child's start-up; past it they are only printed.
const KEPT_LINES: usize = 256;

/// Starts `me args…`, prefixing its output with `name`. Its lines are also handed to
/// the returned receiver while it is kept and has room (never queued without bound: a
/// busy gateway prints a line per request).
fn spawn(me: &std::path::Path, args: &[&str], name: &str) -> std::io::Result<(Child, Lines)> {
    let mut child = Command::new(me)
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let (tx, lines) = tokio::sync::mpsc::channel(KEPT_LINES);
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            println!("[{name}] {line}");
            let _ = tx.try_send(line);
        }
    });
    Ok((child, lines))
}

async fn wait_for_line(lines: &mut Lines, prefix: &str) -> bool {
    while let Some(line) = lines.recv().await {
        if line.starts_with(prefix) {
            return true;
        }
    }
    false
}

/// SIGTERM everyone (they drain), then wait; whoever lingers past 10 s is killed.
async fn stop_all(children: Vec<Child>) {
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
    }
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
