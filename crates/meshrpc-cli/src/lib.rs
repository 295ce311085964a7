//! The `meshrpc` command: run a local mesh, a gateway, call services, inspect the
//! cluster, and write generated code to files. The binary is a one-line `main` over
//! [`run`], so integration tests can build the very same command.

mod call;
mod cert;
mod compat;
mod complete;
mod dashboard;
mod demo;
mod expose;
mod gateway;
mod join;
mod memory;
mod mirror;
mod openapi;
mod probe;
mod proto;
mod sidecar;
mod split;
mod status;
mod top;
mod types;
mod typescript;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meshrpc", version, about = "Automatic RPC and service mesh for Rust services")]
struct Cli {
    /// Project root that paths are relative to (as Go meshRPC's -R).
    #[arg(short = 'R', long = "project-root", global = true, default_value = ".")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole local mesh: the example gateway on :8282 and greeter replicas.
    ///
    /// Example: meshrpc demo --replicas 3
    Demo(demo::DemoArgs),
    /// Run the generic API gateway: every service of the cluster behind one HTTP port.
    ///
    /// Example: meshrpc gateway --listen 0.0.0.0:8282 --nodes greeter
    Gateway(Box<gateway::GatewayArgs>),
    /// Call a method from the shell; prints the JSON result.
    ///
    /// Examples:
    ///   meshrpc call greeter.greet '{"name":"Max"}' --nodes 127.0.0.1:11999
    ///   meshrpc call --list
    Call(call::CallArgs),
    /// Shift a service's calls between its versions, cluster-wide, at runtime.
    ///
    /// Examples:
    ///   meshrpc split greeter v1=90 v2=10 --nodes 127.0.0.1:11999
    ///   meshrpc split greeter --clear
    Split(split::SplitArgs),
    /// Copy a share of a service's calls of idempotent methods to another version and
    /// compare the answers (the copies' answers are dropped).
    ///
    /// Examples:
    ///   meshrpc mirror greeter --to v2 --percent 10 --nodes 127.0.0.1:11999
    ///   meshrpc mirror greeter --clear
    Mirror(mirror::MirrorArgs),
    /// Show members, services and replica latency.
    ///
    /// Examples:
    ///   meshrpc status --nodes 127.0.0.1:11999
    ///   meshrpc status --json | jq .services
    Status(status::StatusArgs),
    /// Live requests/s, success rate and p50/p95/p99 per service and method, cluster-wide,
    /// and the calls between nodes (gathered from every node over the mesh).
    ///
    /// Examples:
    ///   meshrpc top --nodes 127.0.0.1:11999
    ///   meshrpc top --json --once
    Top(top::TopArgs),
    /// Serve the live dashboard of a cluster without a gateway (a gateway serves it at
    /// /dashboard).
    ///
    /// Example: meshrpc dashboard --listen 127.0.0.1:8383 --nodes 127.0.0.1:11999
    Dashboard(dashboard::DashboardArgs),
    /// Print the OpenAPI 3.1 document of every service in the cluster (JSON Schemas from
    /// services declared with `#[meshrpc::service(schema)]`).
    ///
    /// Example: meshrpc openapi --nodes 127.0.0.1:11999 -o openapi.json
    Openapi(openapi::OpenapiArgs),
    /// Write a `.proto` file per service, as the gateway serves them over gRPC (typed
    /// from the JSON Schemas of services declared with `#[meshrpc::service(schema)]`).
    ///
    /// Example: meshrpc proto --nodes 127.0.0.1:11999 -o protos/
    Proto(proto::ProtoArgs),
    /// Publish gRPC servers that are not meshrpc services (tonic, grpc-go…) in the mesh,
    /// from a node beside them; callers reach them with `Cluster::grpc_channel`.
    ///
    /// Example: meshrpc sidecar --grpc boutique.CurrencyService=127.0.0.1:7000 --nodes 127.0.0.1:11999
    Sidecar(sidecar::SidecarArgs),
    /// Write a service trait's generated server and client to files.
    ///
    /// Example: meshrpc -R . expose -P greeter src/
    Expose(expose::ExposeArgs),
    /// Exit 0 if an HTTP GET of the URL answers 2xx (container health checks).
    ///
    /// Example: meshrpc probe http://127.0.0.1:11999/__heartbeat__
    Probe(probe::ProbeArgs),
    /// The cluster CA (mutual TLS, docs/security.md).
    ///
    /// Example: meshrpc ca init --dir ./ca --tag prod
    #[command(subcommand)]
    Ca(cert::CaCommand),
    /// Node certificates: issue, show.
    ///
    /// Examples:
    ///   meshrpc cert issue --ca ./ca --node greeter-1 --service greeter --out ./greeter-1
    ///   meshrpc cert show ./greeter-1/node.pem
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Say which changes between two versions of a crate's services break their callers
    /// (JSON callers and generated clients), as `buf breaking` does: exit 1 if any does.
    ///
    /// Examples:
    ///   meshrpc compat v0.3.0:src src
    ///   meshrpc compat old/api.rs new/api.rs --level json
    Compat(compat::CompatArgs),
    /// Print the shell completion script of `meshrpc` (subcommands and flags).
    ///
    /// Examples:
    ///   source <(meshrpc completions bash)
    ///   meshrpc completions zsh > ~/.zfunc/_meshrpc
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run an example node in this process (used by `demo`).
    #[command(subcommand, hide = true)]
    Example(Example),
}

#[derive(Subcommand)]
enum Example {
    /// A greeter replica.
    Greeter(greeter::node::NodeArgs),
    /// The custom API gateway.
    MeshApi(mesh_api::ApiArgs),
}

/// Parses the command line and runs the command.
pub fn run() -> std::process::ExitCode {
    // `COMPLETE=bash meshrpc` writes the shell's completion code; while completing, the
    // shell runs `meshrpc` again with COMPLETE set, and it answers here and exits.
    {
        use clap::CommandFactory;
        clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    }
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "meshrpc", &mut std::io::stdout());
        return std::process::ExitCode::SUCCESS;
    }
    if let Command::Compat(args) = cli.command {
        return compat::run(&cli.root, args);
    }
    // The commands that run a node: its logs, and room for its connections.
    if matches!(cli.command, Command::Gateway(_) | Command::Example(_)) {
        meshrpc::init_logging("info");
        let _ = meshrpc::server::raise_fd_limit();
    }
    meshrpc::telemetry::Telemetry::from_env().install();
    memory::give_back_periodically();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Gateway(args) => gateway::run(*args).await,
            Command::Call(args) => call::run(args).await,
            Command::Split(args) => split::run(args).await,
            Command::Mirror(args) => mirror::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Dashboard(args) => dashboard::run(args).await,
            Command::Openapi(args) => openapi::run(args).await,
            Command::Proto(args) => proto::run(args).await,
            Command::Sidecar(args) => sidecar::run(args).await,
            Command::Expose(args) => expose::run(&cli.root, args),
            Command::Probe(args) => probe::run(args).await,
            Command::Ca(command) => cert::ca(command),
            Command::Cert(command) => cert::cert(command),
            Command::Example(Example::Greeter(args)) => Ok(greeter::node::run(args).await?),
            Command::Example(Example::MeshApi(args)) => Ok(mesh_api::run(args).await?),
            Command::Completions { .. } | Command::Compat(_) => unreachable!("answered before the runtime starts"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
