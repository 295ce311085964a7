//! Issue 32, part 4 (HTTP half): gzip on the RPC routes, driven by the real curl
//! against a real node: answers of 1 KiB or more compressed for callers that take them,
//! gzip request bodies read, a zip bomb refused within the body limit.

use std::{process::Stdio, time::Duration};

use meshrpc_tests::{harness::Node, hostile::status_kib};
use tokio::{io::AsyncWriteExt, process::Command};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

/// curl's headers (lower-cased) and body, sending `body` on stdin.
async fn curl(args: &[&str], body: &[u8]) -> (String, Vec<u8>) {
    let headers = std::env::temp_dir().join(format!("meshrpc-gzip-{}-{}", std::process::id(), rand_suffix()));
    let mut child = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs (test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.unwrap();
    let said = std::fs::read_to_string(&headers).unwrap_or_default().to_lowercase();
    let _ = std::fs::remove_file(&headers);
    (said, out.stdout)
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_and_bodies_are_gzipped_within_the_limits() {
    // A 1 MiB body limit.
    let node = Node::start(LABNODE, &["--max-frame", "1048576"]).await;
    let blob = node.url("/lab/blob");

    // 100 kB of answer: gzip for a caller that takes it (curl --compressed decodes it),
    // the same bytes as for one that does not.
    let (plain_headers, plain) = curl(&["-d", "@-", &blob], br#"{"len":100000}"#).await;
    assert!(plain_headers.starts_with("http/1.1 200"), "{plain_headers}");
    assert!(!plain_headers.contains("content-encoding"), "{plain_headers}");
    assert!(plain_headers.contains("vary: accept-encoding"), "{plain_headers}");
    let (gz_headers, decoded) = curl(&["--compressed", "-d", "@-", &blob], br#"{"len":100000}"#).await;
    assert!(gz_headers.contains("content-encoding: gzip"), "{gz_headers}");
    assert_eq!(decoded, plain, "curl --compressed reads the same answer");
    let (_, raw) = curl(&["-H", "Accept-Encoding: gzip", "-d", "@-", &blob], br#"{"len":100000}"#).await;
    assert!(raw.len() < plain.len() / 20, "{} bytes on the wire for {}", raw.len(), plain.len());
    // A small answer goes as it is; so does one for a caller that refuses gzip.
    let (small, _) = curl(&["--compressed", "-d", "@-", &blob], br#"{"len":10}"#).await;
    assert!(!small.contains("content-encoding"), "{small}");
    let (refused, _) = curl(&["-H", "Accept-Encoding: gzip;q=0", "-d", "@-", &blob], br#"{"len":100000}"#).await;
    assert!(!refused.contains("content-encoding"), "{refused}");

    // A gzip request body.
    let (headers, answer) =
        curl(&["-H", "Content-Encoding: gzip", "--data-binary", "@-", &blob], &gzip(br#"{"len":3}"#)).await;
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(String::from_utf8_lossy(&answer), r#"{"data":"xxx","errors":[]}"#);

    // A zip bomb: 64 KiB on the wire, 64 MiB once expanded. Refused at the 1 MiB limit
    // with 413 too_large; the node holds no more than the limit for it.
    let rss_before = status_kib(node.child.id().unwrap(), "VmRSS");
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 128 << 10, "{} bytes", bomb.len());
    for _ in 0..4 {
        let (headers, answer) = curl(&["-H", "Content-Encoding: gzip", "--data-binary", "@-", &blob], &bomb).await;
        assert!(headers.starts_with("http/1.1 413"), "{headers}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains(r#""code":"too_large""#) && answer.contains("expands past the body limit"), "{answer}");
    }
    let grew = status_kib(node.child.id().unwrap(), "VmHWM").saturating_sub(rss_before);
    eprintln!("4 zip bombs of 64 MiB: node peak RSS +{grew} KiB");
    assert!(grew < 16 * 1024, "peak RSS grew by {grew} KiB");

    // An encoding the node does not speak, and garbage that claims to be gzip.
    let (headers, answer) = curl(&["-H", "Content-Encoding: br", "--data-binary", "@-", &blob], b"xx").await;
    assert!(headers.starts_with("http/1.1 415"), "{headers}");
    assert!(String::from_utf8_lossy(&answer).contains("unsupported_encoding"));
    let (headers, answer) =
        curl(&["-H", "Content-Encoding: gzip", "--data-binary", "@-", &blob], b"not gzip at all").await;
    assert!(headers.starts_with("http/1.1 400"), "{headers}");
    assert!(String::from_utf8_lossy(&answer).contains("not valid gzip"));

    // And the node goes on serving.
    let (headers, _) = curl(&["-d", "@-", &blob], br#"{"len":1}"#).await;
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A TCP relay in front of `to`, counting the bytes that come back from it.
async fn counting_relay(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::{atomic::AtomicU64, Arc};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let back = Arc::new(AtomicU64::new(0));
    let counted = back.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(node) = tokio::net::TcpStream::connect(to).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut node_read, mut node_write) = node.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut node_write).await });
                let mut buf = vec![0u8; 64 * 1024];
                use tokio::io::AsyncReadExt;
                loop {
                    match node_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                up.abort();
            });
        }
    });
    (addr, back)
}

#[tokio::test(flavor = "multi_thread")]
async fn large_mesh_answers_cross_zstd_compressed_from_a_node_told_to() {
    use meshrpc::transport::{ConnectOptions, Connection};
    use meshrpc_tests::lab::{Lab, LabClient, Nested, Shape};
    use std::sync::atomic::Ordering;
    // A tree of 4,000 nodes with varied labels: about 300 kB of JSON, the kind of answer
    // zstd shrinks several times (a sender sends plain what would shrink more than 256×).
    let children = (0..4_000u32)
        .map(|i| Nested {
            label: format!("item {i}: {} of {}", i.wrapping_mul(2_654_435_761) % 9_973, i % 37),
            children: Vec::new(),
            shape: Some(Shape::Circle { radius: f64::from(i % 100) }),
        })
        .collect();
    let tree = Nested { label: "root".into(), children, shape: None };
    let json_len = serde_json::to_vec(&tree).unwrap().len();
    let mut sizes = Vec::new();
    // A node told to compress (`--compress`: ServerConfig::compress), then one that is not
    // (the default); the caller takes zstd either way.
    for args in [&["--compress"][..], &[]] {
        let node = Node::start(LABNODE, args).await;
        let (relay, back) = counting_relay(node.addr).await;
        let conn = Connection::connect(relay, ConnectOptions::default()).await.unwrap();
        let lab = LabClient::new(conn).with_codec(meshrpc::Codec::Json);
        let echoed = lab.echo(tree.clone()).await.expect("the tree back");
        assert!(echoed == tree, "the tree came back changed");
        sizes.push(back.load(Ordering::Relaxed));
    }
    println!("a {json_len}-byte answer on the wire: {} bytes with zstd, {} without", sizes[0], sizes[1]);
    assert!(sizes[0] * 3 < json_len as u64, "compressed: {sizes:?}");
    assert!(sizes[1] > json_len as u64, "a node not told to compress answers plain: {sizes:?}");
}
