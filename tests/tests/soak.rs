//! Issue 10's soak (heavy tier: `./test.sh --heavy`, which CI runs): a node under 200
//! hostile connections of four kinds for 20 s keeps its memory under 256 MiB and its
//! descriptors under its cap, while well-behaved callers through the gateway see no error.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use meshrpc_tests::{
    harness::{eventually, http, Node},
    hostile::{fd_count, handshaken, metric, request, status_kib},
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const CAP: usize = 400;

/// One hostile connection of kind `kind`, opened again whenever the node closes it, until
/// `stop`.
async fn hostile(addr: std::net::SocketAddr, kind: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        opened.fetch_add(1, Ordering::Relaxed);
        let attempt = async {
            match kind {
                // Pipelines requests for 100 kB answers and reads none of them.
                0 => {
                    let mut s = handshaken(addr).await;
                    let frame = request(1, "lab", "blob", r#"{"len":100000}"#);
                    while s.write_all(&frame).await.is_ok() {}
                }
                // Announces a 15 MiB frame, sends 1 MiB of it, goes silent.
                1 => {
                    let mut s = handshaken(addr).await;
                    let mut frame = (15u32 * 1024 * 1024).to_be_bytes().to_vec();
                    frame.push(1);
                    frame.extend(vec![0u8; 1024 * 1024]);
                    if s.write_all(&frame).await.is_ok() {
                        let _ = meshrpc_tests::hostile::closed_by_node(&mut s, Duration::from_secs(60)).await;
                    }
                }
                // Shakes hands, then says nothing.
                2 => {
                    let mut s = handshaken(addr).await;
                    let _ = meshrpc_tests::hostile::closed_by_node(&mut s, Duration::from_secs(60)).await;
                }
                // Sends 7 of the 8 preface bytes, then nothing.
                _ => {
                    let Ok(mut s) = TcpStream::connect(addr).await else { return };
                    if s.write_all(b"MESHRPC").await.is_ok() {
                        let _ = meshrpc_tests::hostile::closed_by_node(&mut s, Duration::from_secs(60)).await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(25), attempt).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_under_200_hostile_connections_stays_bounded_and_serves() {
    if !meshrpc_tests::tier::heavy("the soak") {
        return;
    }
    let tag = "soak";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let cap = CAP.to_string();
    let lab = Node::start(
        LABNODE,
        &[
            "--tag",
            tag,
            "--nodes",
            &mesh,
            "--frame-timeout-ms",
            "3000",
            "--stuck-ms",
            "3000",
            "--idle-ms",
            "4000",
            "--header-timeout-ms",
            "2000",
            "--max-connections",
            &cap,
        ],
    )
    .await;
    let pid = lab.child.id().unwrap();
    let url = gateway.url("/lab/whoami");
    let ready = eventually(Duration::from_secs(15), || async {
        (http("POST", &url, "{}", &[]).await.status == 200).then_some(())
    });
    assert!(ready.await.is_some(), "the gateway reaches the lab node");
    let rss_before = status_kib(pid, "VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> =
        (0..200).map(|i| tokio::spawn(hostile(lab.addr, i % 4, stop.clone(), opened.clone()))).collect();
    // Well-behaved callers through the gateway, all along.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, ok, failed, failures) =
                (url.clone(), stop.clone(), ok.clone(), failed.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = http("POST", &url, "{}", &[]).await;
                    if answer.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().unwrap().push(format!("{} {}", answer.status, answer.body));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(20);
    let mut max_fds = 0;
    let probe = meshrpc::connect(lab.addr).await.unwrap();
    let mut rtts = Vec::new();
    while Instant::now() < end {
        max_fds = max_fds.max(fd_count(pid));
        // The node's own answer time to a mesh ping while under attack.
        rtts.push(probe.ping(Duration::from_secs(10)).await.map_or(u128::MAX, |d| d.as_millis()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rtts.sort();
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    for a in attackers {
        a.abort();
    }
    let peak = status_kib(pid, "VmHWM");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "soak: {} hostile connections opened in 20 s; node RSS {} KiB before, peak {} KiB; max fds {}; callers {} ok, {} failed; node ping p50 {} ms, max {} ms; stuck {}, shed {}, slow {}, idle {}",
        opened.load(Ordering::Relaxed), rss_before, peak, max_fds, ok, failed, rtts[rtts.len() / 2], rtts[rtts.len() - 1],
        metric(lab.addr, "meshrpc_stuck_connections_closed").await,
        metric(lab.addr, "meshrpc_partial_frames_shed").await,
        metric(lab.addr, "meshrpc_slow_frames").await,
        metric(lab.addr, "meshrpc_idle_connections_closed").await,
    );
    assert!(peak <= 256 * 1024, "peak RSS {peak} KiB over 256 MiB");
    assert!(max_fds <= CAP + 64, "{max_fds} descriptors over the cap of {CAP} (plus the runtime's own)");
    let failures = failures.lock().unwrap();
    assert_eq!(failed, 0, "well-behaved callers failed ({ok} ok): {:?}", &failures[..failures.len().min(5)]);
    assert!(ok > 100, "callers were served: {ok}");
}
