//! `meshrpc dashboard --listen ADDR`: the live dashboard of a cluster without a gateway.

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct DashboardArgs {
    /// Where to serve it (`http://ADDR/dashboard`).
    #[arg(long, default_value = "127.0.0.1:8383")]
    listen: String,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: DashboardArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(&args.join, "cluster", |v| v.members.len() > 1).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("dashboard at http://{}/dashboard", listener.local_addr()?);
    let router = meshrpc::Gateway::new(cluster.clone()).dashboard();
    meshrpc::serve_http(listener, router, meshrpc::ServerConfig::default(), meshrpc::wait_for_signal()).await;
    cluster.shutdown().await;
    Ok(())
}
