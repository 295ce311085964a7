//! `meshrpc probe URL`: exit 0 if an HTTP GET answers 2xx. A health check for images
//! that carry no curl.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// `http://host:port/path`
    url: String,
    /// Seconds before giving up.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

pub async fn run(args: ProbeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rest = args.url.strip_prefix("http://").ok_or("probe takes an http:// URL")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let status = tokio::time::timeout(Duration::from_secs_f64(args.timeout), async {
        let mut s = TcpStream::connect(authority).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[9..12]).into_owned())
    })
    .await
    .map_err(|_| format!("{}: no answer within {} s", args.url, args.timeout))??;
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("{}: HTTP {status}", args.url).into())
    }
}
