//! `meshrpc demo`: the seed's walkthrough as one command. Starts the example gateway
//! and greeter replicas as separate processes (this binary, re-run), prints what to
//! try, and stops them all on Ctrl-C.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Greeter replicas to start.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// HTTP port of the gateway.
    #[arg(long, default_value_t = 8282)]
    http_port: u16,
    /// Mesh port of the gateway (the replicas join through it).
    #[arg(long, default_value_t = 11999)]
    mesh_port: u16,
    /// Mutual TLS between all nodes: a fresh CA and certificates in a temporary
    /// directory, sealed gossip, and the policy `mesh-api → greeter.*`.
    #[arg(long)]
    tls: bool,
}

/// The policy of the TLS demo: the API gateway (and you, with the `cli` certificate) may
/// call the greeter; nobody else may call anything.
const DEMO_POLICY: &str = "# meshrpc demo --tls: who may call what (docs/security.md)
[[allow]]
from = [\"mesh-api\", \"cli\"]
to = \"greeter.*\"
";

/// Credentials for the TLS demo, in a fresh directory: one per node, one for the CLI.
fn demo_credentials(replicas: usize) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    use crate::cert::{ca, issue, CaCommand, IssueArgs};
    let root = std::env::temp_dir().join(format!("meshrpc-demo-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    ca(CaCommand::Init { dir: root.join("ca"), tag: "example".into(), days: 30 })?;
    let issue_as = |node: Option<&str>, caller: Option<&str>, services: &[&str], out: &str| {
        issue(IssueArgs {
            ca: root.join("ca"),
            node: node.map(str::to_owned),
            caller: caller.map(str::to_owned),
            service: services.iter().map(|s| s.to_string()).collect(),
            out: root.join(out),
            days: 30,
            valid_from: None,
        })
    };
    issue_as(Some("mesh-api"), None, &[], "mesh-api")?;
    // The CLI only calls: it gets no gossip key and reaches the cluster through a node.
    issue_as(None, Some("cli"), &[], "cli")?;
    for i in 1..=replicas {
        issue_as(Some(&format!("greeter-{i}")), None, &["greeter"], &format!("greeter-{i}"))?;
    }
    std::fs::write(root.join("policy.toml"), DEMO_POLICY)?;
    Ok(root)
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let seed = format!("127.0.0.1:{}", args.mesh_port);
    let credentials = if args.tls { Some(demo_credentials(args.replicas)?) } else { None };
    // With --tls each node gets its own directory; the greeters also the policy.
    let tls_flags = |node: &str, policy: bool| -> Vec<String> {
        let Some(root) = &credentials else { return Vec::new() };
        let mut flags = vec!["--tls-dir".to_owned(), root.join(node).display().to_string()];
        if policy {
            flags.extend(["--policy".to_owned(), root.join("policy.toml").display().to_string()]);
        }
        flags
    };
    let mut children = Vec::new();
    let http_port = args.http_port.to_string();
    let mut gateway_args = vec!["example", "mesh-api", "--http-host", "127.0.0.1", "--http-port", &http_port];
    gateway_args.extend(["--listen-addr", &seed]);
    let gateway_tls = tls_flags("mesh-api", false);
    gateway_args.extend(gateway_tls.iter().map(String::as_str));
    let (gateway, mut gateway_lines) = spawn(&me, &gateway_args, "mesh-api")?;
    let ready = wait_for_line(&mut gateway_lines, "ready");
    children.push(gateway);
    for i in 1..=args.replicas {
        let name = format!("greeter-{i}");
        let mut greeter_args = vec!["example", "greeter", "--nodes", &seed, "--listen-addr", "127.0.0.1:0"];
        let greeter_tls = tls_flags(&name, true);
        greeter_args.extend(greeter_tls.iter().map(String::as_str));
        children.push(spawn(&me, &greeter_args, &name)?.0);
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
        match &credentials {
            None => println!("scale out: meshrpc example greeter --nodes {seed} --listen-addr 127.0.0.1:0"),
            Some(root) => {
                let cli = root.join("cli");
                println!("mutual TLS is on: credentials and the policy are in {}", root.display());
                println!(
                    "  meshrpc call greeter.greet '{{\"name\":\"Max\"}}' --nodes {seed} --tls-dir {}",
                    cli.display()
                );
                println!("  meshrpc status --nodes {seed} --tls-dir {}", cli.display());
                println!(
                    "  meshrpc call greeter.greet '{{\"name\":\"Max\"}}' --nodes {seed}   # refused: no certificate"
                );
            }
        }
        println!("Ctrl-C stops everything.");
        meshrpc::wait_for_signal().await;
    }
    println!("stopping...");
    stop_all(children).await;
    if let Some(root) = credentials {
        let _ = std::fs::remove_dir_all(root);
    }
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
