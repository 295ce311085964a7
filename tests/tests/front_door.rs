//! Issue 21: the front door under load — idle keep-alive connections cost little, the
//! memory of a burst is given back, and a well-behaved client sees nothing of it.

use std::time::{Duration, Instant};

use meshrpc_tests::{
    harness::{http, Node},
    hostile::status_kib,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

const GREET: &[u8] =
    b"POST /greeter/greet HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"name\":\"Max\"}";

/// `meshrpc gateway` with one replica behind it, answering.
async fn gateway(tag: &str) -> (Node, Node) {
    let args = ["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag];
    let gateway = Node::start(MESHRPC, &args).await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let lab = Node::start(LABNODE, &["--tag", tag, "--nodes", &mesh]).await;
    let url = gateway.url("/greeter/greet");
    let ready = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        (http("POST", &url, r#"{"name":"x"}"#, &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never answered");
    (gateway, lab)
}

/// Sends one request on `conn` and reads its whole answer (a JSON envelope).
async fn ask(conn: &mut TcpStream) -> String {
    conn.write_all(GREET).await.unwrap();
    answers(conn, 1).await
}

/// Reads `n` whole answers.
async fn answers(conn: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while String::from_utf8_lossy(&got).matches("\"errors\":[]}").count() < n {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_parks_and_serves_again() {
    let (gateway, _lab) = gateway("door1").await;
    let mut conn = TcpStream::connect(gateway.addr).await.unwrap();
    assert!(ask(&mut conn).await.starts_with("HTTP/1.1 200"));
    // Past the park delay the connection holds no HTTP state; the next request, and a
    // pipelined pair, are answered on the same socket as before.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(ask(&mut conn).await.contains("Hello, Max"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    conn.write_all(&[GREET, GREET].concat()).await.unwrap();
    let second = answers(&mut conn, 2).await;
    assert_eq!(second.matches("Hello, Max").count(), 2, "{second}");
    assert!(!second.to_ascii_lowercase().contains("connection: close"), "{second}");
}

/// How many clients this process can hold (its fd limit raised to the hard limit, less
/// a margin): `want`, or fewer on a machine that allows fewer (said on stderr); `None`
/// below 1,000.
fn clients_allowed(want: usize) -> Option<usize> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if soft < hard {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
    let allowed = want.min(soft.saturating_sub(500) as usize);
    if allowed < 1_000 {
        meshrpc_tests::tier::cannot_run(&format!("1,500 file descriptors or more (the hard limit is {soft})"), false);
        return None;
    }
    if allowed < want {
        eprintln!("the file descriptor limit ({soft}) allows {allowed} clients, not {want}");
    }
    Some(allowed)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_keep_alive_clients_come_and_go_and_the_memory_comes_back() {
    let Some(clients_wanted) = clients_allowed(5_000) else { return };
    let (gateway, _lab) = gateway("door2").await;
    let pid = gateway.child.id().unwrap();
    // Warm: the first requests allocate what every later one reuses.
    let mut warm = TcpStream::connect(gateway.addr).await.unwrap();
    for _ in 0..100 {
        ask(&mut warm).await;
    }
    drop(warm);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let base = status_kib(pid, "VmRSS");

    // A well-behaved client keeps calling throughout.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let addr = gateway.addr;
    let steady = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut conn = TcpStream::connect(addr).await.unwrap();
        while !*stopped.borrow_and_update() {
            match tokio::time::timeout(Duration::from_secs(5), ask(&mut conn)).await {
                Ok(answer) if answer.starts_with("HTTP/1.1 200") => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });

    let mut clients = Vec::with_capacity(clients_wanted);
    for _ in 0..clients_wanted {
        clients.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    for c in clients.iter_mut() {
        c.write_all(GREET).await.unwrap(); // a small write: the socket takes it at once
    }
    for c in clients.iter_mut() {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    // Held open, past the park delay and a trim of the allocator (the process gives freed
    // memory back every 5 s), well within the keep-alive timeout (60 s): what each costs.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let held = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    let per_client = held.saturating_sub(base) as f64 / clients_wanted as f64;
    drop(clients);

    // Gone: the memory comes back (the allocator is asked every few seconds).
    let start = Instant::now();
    let bound = base + (peak - base) / 10;
    let mut after = status_kib(pid, "VmRSS");
    while after > bound && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = status_kib(pid, "VmRSS");
    }
    stop.send_replace(true);
    let (ok, failed) = steady.await.unwrap();
    eprintln!(
        "front door, {clients_wanted} keep-alive clients: base {base} KiB, held {held} KiB ({per_client:.1} KiB each), peak {peak} KiB, {after} KiB {:.1} s after they left; steady client {ok} ok, {failed} failed",
        start.elapsed().as_secs_f64()
    );
    assert!(per_client <= 10.0, "{per_client:.1} KiB per idle keep-alive client");
    assert!(after <= bound, "RSS {after} KiB 30 s after the clients left (base {base}, peak {peak})");
    assert_eq!(failed, 0, "the steady client saw failures");
    assert!(ok > 10, "the steady client made {ok} calls");
}

/// README, Limits: the gateway's 10,000-connection cap (`meshrpc gateway
/// --max-connections`, default 10,000), reached for real: clients are served up to it,
/// the next ones get a fast 503 while `/ping` still answers, and a place freed is taken
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_connection_cap_is_reached_and_holds() {
    const CAP: usize = 10_000;
    let Some(allowed) = clients_allowed(CAP + 100) else { return };
    if allowed < CAP + 100 {
        meshrpc_tests::tier::cannot_run(&format!("{} file descriptors for the test's clients", CAP + 600), false);
        return;
    }
    let (gateway, _lab) = gateway("door-cap").await;
    // Clients, each held open after its answer, until one is refused: that is the cap.
    let mut clients = Vec::with_capacity(CAP + 1);
    let mut first_refused = None;
    while clients.len() <= CAP + 10 {
        let mut conn = TcpStream::connect(gateway.addr).await.unwrap();
        conn.write_all(GREET).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap_or(0);
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            clients.push(conn);
        } else {
            first_refused = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            break;
        }
    }
    let served = clients.len();
    let refusal = first_refused.expect("no client was refused past the cap");
    // Whatever the test's own readiness check still holds counts too.
    assert!((CAP - 2..=CAP).contains(&served), "{served} clients served under a cap of {CAP}");
    assert!(refusal.starts_with("HTTP/1.1 503"), "past the cap: {refusal}");
    // Every further client is refused at once while the cap holds; probes still answer.
    let over = |request: &'static [u8]| async move {
        let mut conn = TcpStream::connect(gateway.addr).await.unwrap();
        conn.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    for _ in 0..5 {
        let answer = over(GREET).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "past the cap: {answer}");
    }
    let ping = over(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(ping.starts_with("HTTP/1.1 204"), "{ping}");
    println!("the gateway served {served} clients at once, refused the next with a 503, and answered /ping");
    // Clients leave: their places are served again.
    clients.truncate(served - 100);
    let again = meshrpc_tests::harness::eventually(Duration::from_secs(10), || async {
        let mut conn = TcpStream::connect(gateway.addr).await.ok()?;
        conn.write_all(GREET).await.ok()?;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.ok()?.ok()?;
        buf[..n].starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(again.is_some(), "places freed below the cap were not served again");
}
