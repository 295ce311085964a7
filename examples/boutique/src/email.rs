//! The email service: order confirmations, counted.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use serde::{Deserialize, Serialize};

use crate::checkout::OrderResult;

/// What can go wrong sending mail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EmailError {
    /// Not an email address.
    #[error("invalid email address: {0:?}")]
    InvalidAddress(String),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Email {
    /// Sends the confirmation of `order` to `email`.
    async fn send_order_confirmation(&self, email: String, order: OrderResult) -> Result<(), EmailError>;
    /// Confirmations sent so far by this replica.
    #[meshrpc(idempotent)]
    async fn sent_count(&self) -> Result<u64, EmailError>;
}

/// "Sends" by counting, and keeps the last order's id.
#[derive(Debug, Default)]
pub struct CountingEmail {
    sent: AtomicU64,
    /// The id of the last order confirmed.
    pub last_order: Mutex<Option<String>>,
}

#[meshrpc::async_trait]
impl Email for CountingEmail {
    async fn send_order_confirmation(&self, email: String, order: OrderResult) -> Result<(), EmailError> {
        let valid = email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
        if !valid {
            return Err(EmailError::InvalidAddress(email));
        }
        *self.last_order.lock().unwrap() = Some(order.order_id);
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn sent_count(&self) -> Result<u64, EmailError> {
        Ok(self.sent.load(Ordering::SeqCst))
    }
}
