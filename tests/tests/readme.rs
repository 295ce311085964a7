//! The README stays true: start the demo with the README's command (on free ports),
//! run every `$ curl …` line of its `console` blocks with the real curl, and compare
//! the output. Digits are compared as "some digit", so timestamps match.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use meshrpc_tests::harness::{free_port, terminate};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// `(command, expected output lines)` from every ```console block.
fn readme_commands() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        match line.trim_end() {
            "```console" => in_console = true,
            "```" => in_console = false,
            l if in_console => match l.strip_prefix("$ ") {
                Some(cmd) => out.push((cmd.to_owned(), Vec::new())),
                None => out.last_mut().expect("output before a command").1.push(l.to_owned()),
            },
            _ => {}
        }
    }
    out
}

fn digits_as_zero(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_curl_commands_answer_as_documented() {
    if !meshrpc_tests::harness::tool("curl") {
        return;
    }
    let commands = readme_commands();
    assert!(commands.len() >= 4, "README lost its curl walkthrough");

    let (http, mesh) = (free_port(), free_port());
    let mut demo = Command::new(MESHRPC)
        .args(["demo", "--http-port", &http.to_string(), "--mesh-port", &mesh.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let up = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("meshrpc demo:") {
                return;
            }
        }
        panic!("demo exited before it was up");
    })
    .await;
    assert!(up.is_ok(), "demo not up within 30 s");
    let rest = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    // Wait until every replica is in the gateway's view, so answers are stable.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (cmd, expected) in commands {
        assert!(cmd.starts_with("curl "), "README console blocks hold curl commands: {cmd}");
        let cmd = cmd.replace("localhost:8282", &format!("localhost:{http}"));
        let out = Command::new("sh").arg("-c").arg(format!("{cmd} -sS")).output().await.unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(digits_as_zero(got.trim_end()), digits_as_zero(&expected.join("\n")), "`{cmd}` printed:\n{got}");
    }

    // Ctrl-C/SIGTERM stops the gateway and every replica, cleanly.
    let status = terminate(&mut demo, Duration::from_secs(20)).await.expect("demo did not stop");
    assert!(status.success(), "{status:?}");
    let printed = rest.await.unwrap();
    assert!(printed.iter().any(|l| l.contains(
        "sending Postcard { picture_url: \"\", address: \"World\", recipient: \"Max\", message: \"Hello\" } to Max"
    )));
    assert!(printed.iter().any(|l| l == "stopping..."), "{printed:?}");
}
