//! A real Docker engine for the deployment tests (heavy tier, root): the `docker` and
//! `docker-compose` commands, a check of whether the tests can run here, clean-up that
//! runs even when a test fails, and HTTP load through a published port.

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

pub use crate::front::Front;

/// Runs `docker args…`: success, and stdout and stderr together.
pub fn docker(args: &[&str]) -> (bool, String) {
    run("docker", args)
}

/// Runs `program args…`: success, and stdout and stderr together.
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

/// A Docker engine to talk to: the running one, or a `dockerd` started here.
fn engine() -> bool {
    if docker(&["info"]).0 {
        return true;
    }
    let _ = Command::new("dockerd").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
    for _ in 0..60 {
        if docker(&["info"]).0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Whether the Docker tests run: the heavy tier, as root, with a Docker engine (started
/// here if needed) and each of `commands`. Otherwise they say they skipped and why;
/// under CI they fail instead.
pub fn docker_here(commands: &[&str]) -> bool {
    if !crate::tier::heavy("Docker") {
        return false;
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let missing: Vec<&str> = std::iter::once("docker")
        .chain(commands.iter().copied())
        .filter(|c| !Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .collect();
    if !root || !missing.is_empty() || !engine() {
        let why =
            format!("Docker needs root ({root}), an engine and {missing:?} (apt-get install docker.io docker-compose)");
        crate::tier::cannot_run(&why, false);
        return false;
    }
    true
}

/// Builds the runtime image `tag` from the test build's `meshrpc` binary with
/// `deploy/image.sh` (no registry); returns what the script printed.
pub fn build_image(meshrpc: &str, tag: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/image.sh");
    let built = Command::new(script).arg(tag).env("MESHRPC_BIN", meshrpc).output().unwrap();
    let said = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    assert!(built.status.success(), "{said}{}", String::from_utf8_lossy(&built.stderr));
    said
}

/// Commands run when dropped (last first), even when the test fails.
#[derive(Default)]
pub struct Cleanup(pub Vec<Box<dyn FnOnce() + Send>>);

impl Cleanup {
    pub fn docker(&mut self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.0.push(Box::new(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = docker(&args);
        }));
    }

    pub fn then(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

/// Running containers that carry every one of `labels` (`key=value`).
pub fn containers(labels: &[&str]) -> Vec<String> {
    let mut args = vec!["ps".to_owned(), "-q".to_owned()];
    for label in labels {
        args.extend(["--filter".to_owned(), format!("label={label}")]);
    }
    let (_, names) = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    names.lines().map(str::to_owned).collect()
}

/// Calls of `method` each container served since `since`, from the summary lines its
/// log has (`meshrpc::summary … method="greet" calls=N`).
pub fn calls_served(containers: &[String], method: &str, since: &str) -> BTreeMap<String, u64> {
    let method = format!("method=\"{method}\"");
    containers
        .iter()
        .map(|c| {
            let (_, logs) = docker(&["logs", "--since", since, c]);
            let calls = logs
                .lines()
                .filter(|l| l.contains("meshrpc::summary") && l.contains(&method))
                .filter_map(|l| l.split("calls=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
                .sum();
            (c.chars().take(12).collect(), calls)
        })
        .collect()
}

/// Now, for `docker logs --since` (RFC 3339, UTC).
pub fn now_utc() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A GET whose connection may fail (a task starting, a port not yet open): `None` then.
pub async fn try_get(front: &Front, path: &str) -> Option<(u16, String)> {
    front.get(path).await
}

/// GETs from `workers` tasks, each on its own keep-alive connection as real clients do,
/// each request with a 10 s guard (none may hang): answered and failed counts, and the
/// slowest request, since the last take. At most `workers` requests are in flight.
pub struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    slowest_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// GETs of `path` followed by the worker's number, through `front`.
    pub fn start(front: &Front, path: &str, workers: usize) -> Load {
        let (ok, failed, slowest_ms) = (Arc::default(), Arc::default(), Arc::<AtomicU64>::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let (ok, failed, slowest_ms): (Arc<AtomicU64>, Arc<AtomicU64>, _) =
                    (Arc::clone(&ok), Arc::clone(&failed), slowest_ms.clone());
                let (stop, path) = (stop.clone(), format!("{path}{w}"));
                let front = front.fresh();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let began = std::time::Instant::now();
                        let answer = tokio::time::timeout(Duration::from_secs(10), front.get(&path)).await;
                        slowest_ms.fetch_max(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                        match answer {
                            Ok(Some((200, _))) => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(other) => {
                                eprintln!("failed: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(_) => panic!("a request hung for 10 s"),
                        };
                    }
                })
            })
            .collect();
        Load { ok, failed, slowest_ms, stop, tasks }
    }

    /// Answered and failed requests since the last take.
    pub fn take(&self) -> (u64, u64) {
        (self.ok.swap(0, Ordering::Relaxed), self.failed.swap(0, Ordering::Relaxed))
    }

    /// The slowest request since the last call, in ms.
    pub fn slowest_ms(&self) -> u64 {
        self.slowest_ms.swap(0, Ordering::Relaxed)
    }

    pub async fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("no load task hung");
        }
        self.take()
    }
}
