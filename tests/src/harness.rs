//! Start real processes, wait for their ports, and speak HTTP to them.
//!
//! Test files name the binaries with `env!("CARGO_BIN_EXE_…")`: `meshrpc-cli` (the
//! `meshrpc` command, a one-line main over meshrpc-cli), `labnode` and `labcall`.

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A running node process; killed when dropped.
pub struct Node {
    pub child: Child,
    /// The address from its `listening on ADDR` line.
    pub addr: SocketAddr,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    more: std::sync::Arc<tokio::sync::Notify>,
}

/// Starts `bin args…` with stdout piped (stderr shows in the test output); the process
/// dies with its handle.
fn spawn_piped(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"))
}

impl Node {
    /// Starts `bin args…` and waits (up to 20 s) for its `listening on ADDR` line.
    pub async fn start(bin: &str, args: &[&str]) -> Node {
        Node::spawn(spawn_piped(bin, args, &[]), bin).await
    }

    /// As [`start`](Self::start), with more environment (`MESHRPC_REQUEST_LOG=on`, …).
    pub async fn start_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        Node::spawn(spawn_piped(bin, args, env), bin).await
    }

    /// As [`start`](Self::start), and its log (stderr) lines go to [`output`](Self::output)
    /// too, for tests that assert on what the node logged.
    pub async fn start_logged(bin: &str, args: &[&str]) -> Node {
        Node::start_logged_env(bin, args, &[]).await
    }

    /// As [`start_logged`](Self::start_logged), with more environment.
    pub async fn start_logged_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Node::spawn(child, bin).await
    }

    async fn spawn(mut child: Child, bin: &str) -> Node {
        let stderr = child.stderr.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // What it printed before listening (a log line at start) is kept too.
        let mut before = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.trim().parse::<SocketAddr>().unwrap();
                }
                before.push(line);
            }
            panic!("{bin} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("{bin} did not start listening in 20 s"));
        // Keep reading stdout (so the child never blocks on a full pipe) and keep it.
        let output = std::sync::Arc::new(std::sync::Mutex::new(before));
        let more = std::sync::Arc::new(tokio::sync::Notify::new());
        let (out, notify) = (output.clone(), more.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                out.lock().unwrap().push(line);
                notify.notify_waiters();
            }
        });
        if let Some(stderr) = stderr {
            let (out, notify) = (output.clone(), more.clone());
            let mut lines = BufReader::new(stderr).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{line}");
                    out.lock().unwrap().push(line);
                    notify.notify_waiters();
                }
            });
        }
        Node { child, addr, output, more }
    }

    /// Waits (up to `within`) for a line containing `text`.
    pub async fn logged(&self, text: &str, within: Duration) -> Option<String> {
        self.wait_line(within, |l| l.contains(text).then(|| l.to_owned())).await
    }

    /// Everything it printed but its `listening on` line.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Waits (up to `within`) for a line starting with `prefix`; returns its remainder.
    pub async fn line(&self, prefix: &str, within: Duration) -> Option<String> {
        self.wait_line(within, |l| l.strip_prefix(prefix).map(str::to_owned)).await
    }

    async fn wait_line(&self, within: Duration, pick: impl Fn(&str) -> Option<String>) -> Option<String> {
        let find = || self.output.lock().unwrap().iter().find_map(|l| pick(l));
        tokio::time::timeout(within, async {
            loop {
                let more = self.more.notified();
                if let Some(l) = find() {
                    return l;
                }
                more.await;
            }
        })
        .await
        .ok()
    }

    /// `http://ADDR`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM (graceful drain), then wait up to `within` for the exit.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id()?;
        Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await.ok()?;
        tokio::time::timeout(within, self.child.wait()).await.ok()?.ok()
    }
}

/// An HTTP answer: status and body text.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
    pub headers: hyper::HeaderMap,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with a real client.
pub async fn http(method: &str, url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> HttpAnswer {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("HTTP request timed out")
        .expect("HTTP request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned(), headers }
}

/// Polls `f` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `labcall` run: its stdout lines arrive on `lines`.
pub struct Caller {
    pub child: Child,
    pub lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Caller {
    pub fn start(bin: &str, args: &[&str]) -> Caller {
        let mut child = spawn_piped(bin, args, &[]);
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send(line);
            }
        });
        Caller { child, lines }
    }

    /// Waits for the line `calling` (the caller joined and starts its calls): as long as
    /// the caller itself may wait for the service and then for its replicas (`--wait-ms`,
    /// 30 s each in the scale scenarios), and a little more.
    pub async fn calling(&mut self) {
        let line = tokio::time::timeout(Duration::from_secs(65), self.lines.recv()).await;
        assert_eq!(line.ok().flatten().as_deref(), Some("calling"), "caller did not start calling");
    }

    /// The final JSON report (waits up to 60 s).
    pub async fn report(mut self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = tokio::time::timeout_at(deadline.into(), self.lines.recv())
                .await
                .expect("caller report timed out")
                .expect("caller exited without a report");
            if line.starts_with('{') {
                return serde_json::from_str(&line).unwrap();
            }
        }
    }
}

/// Failed calls in a caller's (`labcall`'s) report, all error codes together.
pub fn report_errors(report: &serde_json::Value) -> u64 {
    report["errors"].as_object().map_or(0, |e| e.values().filter_map(serde_json::Value::as_u64).sum())
}

/// When calls last failed in a caller's report: the end of the last 100 ms bucket with a
/// failure (Unix ms), if any failed.
pub fn last_failure_ms(report: &serde_json::Value) -> Option<u64> {
    let buckets = report["buckets"].as_object()?;
    buckets
        .iter()
        .filter(|(_, b)| b[1].as_u64().unwrap_or(0) > 0)
        .filter_map(|(t, _)| t.parse::<u64>().ok())
        .map(|t| t + 100)
        .max()
}

/// Milliseconds since the Unix epoch (the callers' reports use it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// SIGTERM a child, as `docker stop` or Ctrl-C would, and wait up to `within` for its exit.
pub async fn terminate(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id()?;
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await.ok()?;
    tokio::time::timeout(within, child.wait()).await.ok()?.ok()
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub use crate::tier::{python, tool};

/// A streamed answer's lines, as they arrive.
pub type Lines = tokio::sync::mpsc::UnboundedReceiver<String>;

/// Sends one HTTP/1.1 request and reads its answer line by line as it streams (NDJSON,
/// Server-Sent Events); the answer must be `200`. Returns the task reading it (abort it to
/// hang up) and the lines.
pub async fn read_lines(
    method: &str,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (tokio::task::JoinHandle<()>, Lines) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("HTTP request timed out")
        .expect("a streaming answer");
    assert_eq!(resp.status(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            pending.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let _ = tx.send(String::from_utf8_lossy(&line).trim().to_owned());
            }
        }
    });
    (reading, rx)
}

/// `meshrpc gateway` (the binary `bin`) on free ports in cluster `tag`: the gateway and the
/// mesh address other nodes join through.
pub async fn generic_gateway(bin: &str, tag: &str) -> (Node, String) {
    let gateway =
        Node::start(bin, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag]).await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("the gateway's mesh address");
    (gateway, mesh.trim().to_owned())
}
