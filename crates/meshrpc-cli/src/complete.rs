//! Completion from a running cluster: `meshrpc call <TAB>` offers the `service.method`
//! names the cluster serves (`source <(COMPLETE=bash meshrpc)`; zsh, fish, elvish and
//! powershell alike). The cluster is the one `MESHRPC_CLUSTER_NODES` (default
//! `127.0.0.1:11999`) and `MESHRPC_CLUSTER_TAGNAME` name, as for the commands themselves.

use std::{
    ffi::OsStr,
    time::{Duration, Instant},
};

use clap_complete::CompletionCandidate;

/// How long a completion may take: a shell waits on it.
const WITHIN: Duration = Duration::from_secs(3);
/// How long the view must stay the same to be taken as whole.
const SETTLED: Duration = Duration::from_millis(200);

/// `service.method` names starting with what was typed, each with its arguments as help.
pub(crate) fn targets(typed: &OsStr) -> Vec<CompletionCandidate> {
    let typed = typed.to_string_lossy().into_owned();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Vec::new() };
    let methods = runtime.block_on(async { tokio::time::timeout(WITHIN, served()).await.ok().flatten() });
    // A DNS lookup of a seed may still run on a blocking thread: the shell waits for none.
    runtime.shutdown_background();
    let mut targets: Vec<(String, String)> = methods.unwrap_or_default();
    targets.retain(|(name, _)| name.starts_with(&typed));
    targets.sort();
    targets.dedup_by(|a, b| a.0 == b.0);
    targets.into_iter().map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into()))).collect()
}

/// Every method the cluster serves, named `service.method`, with its arguments.
async fn served() -> Option<Vec<(String, String)>> {
    let nodes = std::env::var("MESHRPC_CLUSTER_NODES").unwrap_or_else(|_| "127.0.0.1:11999".into());
    let tag = std::env::var("MESHRPC_CLUSTER_TAGNAME").unwrap_or_else(|_| "example".into());
    let cluster =
        meshrpc::ClusterBuilder::from_env("meshrpc-complete").tag(tag).seeds(nodes.split(',')).start().await.ok()?;
    // A service shows in the view once its method list is fetched, each apart: wait for
    // the first services, then until the view stays the same for a moment.
    let mut seen = (0, Instant::now());
    let view = loop {
        let view = cluster.view();
        let count = view.members.iter().map(|m| m.services.len()).sum::<usize>();
        if count != seen.0 {
            seen = (count, Instant::now());
        } else if count > 0 && seen.1.elapsed() >= SETTLED {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Leave at once, so that the cluster does not wait to find this member gone.
    let _ = tokio::time::timeout(Duration::from_millis(200), cluster.shutdown()).await;
    let mut out = Vec::new();
    for member in &view.members {
        for (service, advert) in &member.services {
            for method in &advert.methods {
                out.push((format!("{service}.{}", method.name), format!("({})", method.args.join(", "))));
            }
        }
    }
    Some(out)
}
