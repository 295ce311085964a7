//! The seed's greeter: a trait is the contract, an implementation serves it.

use std::sync::Mutex;

pub mod node;

use serde::{Deserialize, Serialize};

/// A postcard to send, as in the seed README.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Postcard {
    pub picture_url: String,
    pub address: String,
    pub recipient: String,
    pub message: String,
}

/// What can go wrong when greeting. Transport failures fold in via `From<meshrpc::Error>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum GreetError {
    #[error("no recipient")]
    NoRecipient,
    #[error("counting down from {0} would take too long (at most {MAX_COUNTDOWN})")]
    TooLong(u32),
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The longest countdown: 50 lines every half second end after 25 s, within the 30 s a call
/// (a stream: all of it) may take by default.
pub const MAX_COUNTDOWN: u32 = 50;

/// The contract. `schema`: its types are published as JSON Schema (OpenAPI at the
/// gateway's /openapi.json).
#[meshrpc::service(schema)]
pub trait Greeter {
    /// Says hello.
    async fn greet(&self, name: String) -> Result<String, GreetError>;
    /// Sends a postcard.
    async fn send_postcard(&self, card: Postcard) -> Result<(), GreetError>;
    /// Counts down from `from` (at most 50), one line every half second, then greets: a
    /// stream (`curl -N -X POST localhost:8080/greeter/countdown -d '{"from":3}'`). The
    /// call's deadline (30 s by default) covers the whole stream: 50 ends within it.
    async fn countdown(&self, from: u32) -> Result<meshrpc::Stream<String, GreetError>, GreetError>;
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
        // As the seed's greeter did: the struct as it arrived.
        println!("sending {card:?} to {}", card.recipient);
        self.postcards.lock().unwrap().push(card);
        Ok(())
    }

    async fn countdown(&self, from: u32) -> Result<meshrpc::Stream<String, GreetError>, GreetError> {
        if from > MAX_COUNTDOWN {
            return Err(GreetError::TooLong(from));
        }
        let (tx, lines) = meshrpc::Stream::channel(1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            for n in (1..=from).rev() {
                tick.tick().await;
                if tx.send(format!("{n}…")).await.is_err() {
                    return; // the caller hung up
                }
            }
            tick.tick().await;
            let _ = tx.send("Hello!".to_string()).await;
        });
        Ok(lines)
    }
}

/// Now as RFC 3339 UTC (`2026-11-24T13:11:02Z`), without a date-time dependency.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}
