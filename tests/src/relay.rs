//! A two-service app for `meshrpc::app` (tests/tests/placements.rs): the greeter, and a
//! relay that calls it. Each answer names the process that served it, so a test sees
//! where the placement put each service.

use std::sync::Arc;

use greeter::{Greeter, GreeterClient, GreeterServer, MyGreeter};
use meshrpc::app::{App, Component};
use serde::{Deserialize, Serialize};

/// What can go wrong relaying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RelayError {
    /// The greeter's own error.
    #[error("greeter: {0}")]
    Greeter(String),
    /// Transport failures.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// Greets through the greeter, and says where it runs.
#[meshrpc::service]
pub trait Relay {
    /// The greeter's greeting for `name`, twice, and the relay's process id.
    async fn greet_twice(&self, name: String) -> Result<(Vec<String>, u32), RelayError>;
}

/// The relay over a greeter (a generated client in the app).
pub struct GreeterRelay(pub Arc<dyn Greeter>);

#[meshrpc::async_trait]
impl Relay for GreeterRelay {
    async fn greet_twice(&self, name: String) -> Result<(Vec<String>, u32), RelayError> {
        let mut said = Vec::new();
        for _ in 0..2 {
            said.push(self.0.greet(name.clone()).await.map_err(|e| RelayError::Greeter(e.to_string()))?);
        }
        Ok((said, std::process::id()))
    }
}

/// The app: the greeter, then the relay that calls it.
pub fn app() -> App {
    App::new("relay")
        .with(Component::new(GreeterClient::SPEC, |node| {
            node.publish(GreeterServer::new(MyGreeter::default()));
        }))
        .with(
            Component::new(RelayClient::SPEC, |node| {
                let greeter = Arc::new(GreeterClient::new(node.client(GreeterClient::SPEC)));
                node.publish(RelayServer::new(GreeterRelay(greeter)));
            })
            .calls(&[GreeterClient::SPEC]),
        )
}
