//! The greeter contract with its server and client written to files by
//! `meshrpc -R examples/exposed-greeter expose -P exposed-greeter -y src/`, as Go
//! meshRPC users did. `#[meshrpc::service(expose)]` makes the trait object safe and
//! leaves the rest to the files. A test checks the files are what the command writes.

pub use greeter::{GreetError, Postcard};

/// The same contract as `greeter::Greeter`.
#[meshrpc::service(expose)]
pub trait Greeter {
    async fn greet(&self, name: String) -> Result<String, GreetError>;
    async fn send_postcard(&self, card: Postcard) -> Result<(), GreetError>;
    async fn countdown(&self, from: u32) -> Result<meshrpc::Stream<String, GreetError>, GreetError>;
}

include!("handler_gen.rs");
include!("client_gen.rs");

/// A local implementation.
pub struct Local;

#[meshrpc::async_trait]
impl Greeter for Local {
    async fn greet(&self, name: String) -> Result<String, GreetError> {
        Ok(format!("Hello, {name}"))
    }

    async fn send_postcard(&self, card: Postcard) -> Result<(), GreetError> {
        if card.recipient.is_empty() {
            return Err(GreetError::NoRecipient);
        }
        Ok(())
    }

    async fn countdown(&self, from: u32) -> Result<meshrpc::Stream<String, GreetError>, GreetError> {
        let lines: Vec<String> = (1..=from).rev().map(|n| format!("{n}…")).chain(["Hello!".to_string()]).collect();
        Ok(meshrpc::Stream::iter(lines))
    }
}
