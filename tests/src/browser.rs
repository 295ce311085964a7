//! A real headless Chromium driven over the DevTools protocol: open a page, evaluate
//! JavaScript in it, take a screenshot. Run with the flags of
//! `../shared/tools/chromium-local` (decisions.md): no name resolves but 127.0.0.1 and
//! localhost, every proxied request goes to a closed port, background services are off.

use std::{process::Stdio, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{client_async, tungstenite::Message, WebSocketStream};

use crate::harness::http;

/// The flags that keep Chromium on this machine.
pub const LOCAL_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--disable-features=DnsOverHttps,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost",
];

/// The browser binary, if installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| crate::harness::tool(b))
}

pub struct Browser {
    _child: Child,
    _profile: std::path::PathBuf,
    page: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium on `url` at `width`×`height`.
    pub async fn open(url: &str, width: u32, height: u32) -> Browser {
        let bin = chromium().expect("chromium is installed");
        // A profile of its own: two browsers cannot share one.
        static OPENED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("meshrpc-chromium-{}-{n}", std::process::id()));
        let mut child = Command::new(bin)
            .args(LOCAL_FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromium");
        // `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…`
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromium never said where DevTools listens");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let targets = http("GET", &format!("http://127.0.0.1:{port}/json/list"), "", &[]).await.json();
        let ws = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (page, _) = client_async(ws.as_str(), stream).await.expect("DevTools WebSocket");
        Browser { _child: child, _profile: profile, page, next_id: 0 }
    }

    /// Sends a DevTools command; its result.
    pub async fn command(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.page.send(Message::text(msg.to_string())).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(msg)) = self.page.next().await {
                if let Message::Text(text) = msg {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
            }
            panic!("DevTools closed");
        })
        .await
        .expect("DevTools answered within 30 s");
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self
            .command("Runtime.evaluate", serde_json::json!({ "expression": expression, "returnByValue": true }))
            .await;
        result["result"]["value"].clone()
    }

    /// A PNG of the page as it is.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let result = self.command("Page.captureScreenshot", serde_json::json!({ "format": "png" })).await;
        base64(result["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64 (no dependency for one screenshot).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(c.len().saturating_sub(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64("aGVsbG8="), b"hello");
        assert_eq!(super::base64("aGk="), b"hi");
        assert_eq!(super::base64("YWJj"), b"abc");
    }
}
