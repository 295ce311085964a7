//! The custom API gateway: `mesh-api` (HTTP on :8282, mesh on :11999).

use clap::Parser;

#[derive(Parser)]
#[command(about = "The example API gateway of a meshrpc cluster")]
struct Cli {
    #[command(flatten)]
    api: mesh_api::ApiArgs,
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    meshrpc::init_logging("info");
    meshrpc::telemetry::Telemetry::from_env().install();
    let _ = meshrpc::server::raise_fd_limit();
    mesh_api::run(Cli::parse().api).await
}
