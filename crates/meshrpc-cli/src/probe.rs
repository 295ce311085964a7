//! `meshrpc probe [URL]`: exit 0 if an HTTP GET answers 2xx. A health check for images
//! that carry no curl. Without a URL it asks this node's `/__heartbeat__`: on the admin
//! port when `MESHRPC_ADMIN_ADDR` is set (a mutual-TLS mesh port takes no plaintext
//! probe), else on the mesh port 11999.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(clap::Args)]
pub(crate) struct ProbeArgs {
    /// `http://host:port/path` (default: this node's heartbeat, see above).
    url: Option<String>,
    /// The admin port, when the URL is not given.
    #[arg(long, env = "MESHRPC_ADMIN_ADDR", hide = true)]
    admin_addr: Option<String>,
    /// Seconds before giving up.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

pub(crate) async fn run(args: ProbeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let url = args.url.clone().unwrap_or_else(|| {
        let at = args.admin_addr.as_deref().map_or("127.0.0.1:11999".to_owned(), |a| a.replace("0.0.0.0", "127.0.0.1"));
        format!("http://{at}/__heartbeat__")
    });
    let rest = url.strip_prefix("http://").ok_or("probe takes an http:// URL")?;
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
    .map_err(|_| format!("{url}: no answer within {} s", args.timeout))??;
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {status}").into())
    }
}
