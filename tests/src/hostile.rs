//! What the hardening tests do to a node: raw mesh connections that misbehave, and
//! readings of the node process (memory, descriptors, CPU time, its `/metrics`).

use std::{net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use meshrpc::{
    call::Metadata,
    proto::{CallerHandshake, Frame, DEFAULT_MAX_FRAME},
    Codec,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::http;

/// A TCP connection that completed the mesh handshake and speaks raw frames.
pub async fn handshaken(addr: SocketAddr) -> TcpStream {
    handshake(TcpStream::connect(addr).await.expect("connect")).await
}

/// As [`handshaken`], with a 4 KiB receive buffer (no autotuning): a caller that reads
/// nothing leaves its answers on the node, not in its own kernel.
pub async fn handshaken_small(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    handshake(socket.connect(addr).await.expect("connect")).await
}

/// Completes the mesh handshake on `stream`.
pub async fn handshake(mut stream: TcpStream) -> TcpStream {
    let shake = CallerHandshake::new("hostile", DEFAULT_MAX_FRAME);
    let mut hello = BytesMut::new();
    shake.hello(&mut hello);
    stream.write_all(&hello).await.unwrap();
    let mut answer = BytesMut::new();
    loop {
        if shake.receive(&mut answer).unwrap().is_some() {
            return stream;
        }
        assert!(stream.read_buf(&mut answer).await.unwrap() > 0, "closed during the handshake");
    }
}

/// The bytes of one JSON request frame.
pub fn request(id: u64, service: &'static str, method: &'static str, json: &'static str) -> Vec<u8> {
    let mut out = BytesMut::new();
    Frame::Request {
        id,
        codec: Codec::Json,
        deadline: Some(Duration::from_secs(30)),
        trace_id: u128::from(id),
        parent_span: 0,
        service: Bytes::from_static(service.as_bytes()),
        method: Bytes::from_static(method.as_bytes()),
        metadata: Metadata::default(),
        items: false,
        payload: Bytes::from_static(json.as_bytes()),
    }
    .encode(&mut out);
    out.to_vec()
}

/// True once the node closed `stream` (end of stream or reset), waiting up to `within`;
/// anything it sends meanwhile is read and dropped.
pub async fn closed_by_node(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A line of `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// CPU time a process used so far (user + system), in clock ticks (1/100 s here).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A counter from a node's `/metrics` (`name_total`).
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    scrape(addr, name, "_total").await
}

/// A gauge from a node's `/metrics` (no suffix, no labels).
pub async fn gauge(addr: SocketAddr, name: &str) -> u64 {
    scrape(addr, name, "").await
}

async fn scrape(addr: SocketAddr, name: &str, suffix: &str) -> u64 {
    let text = http("GET", &format!("http://{addr}/metrics"), "", &[]).await.body;
    let line = format!("{name}{suffix} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Makes `probes` HTTP probes (`GET path`, one at a time, each a new connection) while
/// 100 new silent connections arrive every 200 ms and stay open (the oldest are closed past
/// `FLOOD_HELD`, so the flood never runs this process out of descriptors: a fresh machine's
/// soft limit is 1,024); returns how many probes got a 2xx answer (each is given 5 s) and
/// prints why each of the others failed.
pub async fn probes_through_a_flood(addr: SocketAddr, path: &str, probes: usize) -> usize {
    const FLOOD_HELD: usize = 600;
    // The test process shares its descriptors with the tests running beside it: lift
    // its soft limit as the node binaries do (a fresh machine's soft limit is 1,024).
    let _ = meshrpc::server::raise_fd_limit();
    let flooding = tokio::spawn(async move {
        let mut silent = std::collections::VecDeque::new();
        loop {
            for _ in 0..100 {
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                    silent.push_back(s);
                }
                if silent.len() > FLOOD_HELD {
                    silent.pop_front();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answered = 0;
    for n in 0..probes {
        let probe = async {
            let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: probe\r\n\r\n").as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.map_err(|e| format!("read: {e}"))?;
            match head.starts_with(b"HTTP/1.1 2") {
                true => Ok(()),
                false => Err(format!("answered {:?}", String::from_utf8_lossy(&head))),
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(())) => answered += 1,
            Ok(Err(why)) => eprintln!("probe {n} of {path} failed: {why}"),
            Err(_) => eprintln!("probe {n} of {path} had no answer within 5 s"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flooding.abort();
    answered
}
