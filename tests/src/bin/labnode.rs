//! A node serving `Lab` (and the greeter), for the integration tests.
//! Prints `listening on ADDR` once it accepts connections.

use clap::Parser;
use meshrpc_tests::lab::{LabNode, LabServer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, default_value = "lab")]
    name: String,
    /// Largest accepted mesh frame and HTTP body, in bytes.
    #[arg(long)]
    max_frame: Option<u32>,
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())).init();
    let args = Args::parse();
    let mut config = meshrpc::ServerConfig::default();
    if let Some(max) = args.max_frame {
        config.max_frame = max;
        config.http.max_body = max as usize;
    }
    let server = meshrpc::Server::bind(&args.listen).await?.with_config(config);
    server.publish(LabServer::new(LabNode::new(args.name)));
    server.publish(greeter::GreeterServer::new(greeter::MyGreeter::default()));
    println!("listening on {}", server.local_addr());
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
        stop.shutdown();
    });
    server.serve().await
}
