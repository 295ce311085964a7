//! Draining on SIGTERM or Ctrl-C: a helper for binaries, called explicitly.

use super::Cluster;
use crate::error::Error;

impl Cluster {
    /// Serves until SIGTERM or Ctrl-C, then drains.
    pub async fn serve_until_signal(&self) -> Result<(), Error> {
        let me = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: draining");
            me.shutdown().await;
        });
        self.serve().await
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
