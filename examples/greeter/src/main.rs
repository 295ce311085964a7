//! A greeter node: `greeter --nodes 127.0.0.1:11999`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "A greeter node of a meshrpc cluster")]
struct Cli {
    #[command(flatten)]
    node: greeter::node::NodeArgs,
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    meshrpc::init_logging("info");
    meshrpc::telemetry::Telemetry::from_env().install();
    let _ = meshrpc::server::raise_fd_limit();
    greeter::node::run(Cli::parse().node).await
}
