//! The seed's greeter: a trait is the contract, an implementation serves it.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A postcard to send, as in the seed README.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postcard {
    pub picture_url: String,
    pub address: String,
    pub recipient: String,
    pub message: String,
}

/// What can go wrong when greeting. Transport failures fold in via `From<meshrpc::Error>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum GreetError {
    #[error("no recipient")]
    NoRecipient,
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service]
pub trait Greeter {
    /// Says hello.
    async fn greet(&self, name: String) -> Result<String, GreetError>;
    /// Sends a postcard.
    async fn send_postcard(&self, card: Postcard) -> Result<(), GreetError>;
}

/// The local implementation.
#[derive(Default)]
pub struct MyGreeter {
    /// Postcards received so far (a real service would store them elsewhere).
    pub postcards: Mutex<Vec<Postcard>>,
}

#[meshrpc::async_trait]
impl Greeter for MyGreeter {
    async fn greet(&self, name: String) -> Result<String, GreetError> {
        Ok(format!("Hello, {name}"))
    }

    async fn send_postcard(&self, card: Postcard) -> Result<(), GreetError> {
        if card.recipient.is_empty() {
            return Err(GreetError::NoRecipient);
        }
        tracing::info!(?card, "postcard received");
        self.postcards.lock().unwrap().push(card);
        Ok(())
    }
}
