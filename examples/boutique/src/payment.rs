//! The payment service: charges credit cards.

use serde::{Deserialize, Serialize};

use crate::Money;

/// A credit card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreditCardInfo {
    /// The card number (digits; spaces and dashes are ignored).
    pub credit_card_number: String,
    /// The verification code.
    pub credit_card_cvv: i32,
    /// Expiry year (`2030`).
    pub credit_card_expiration_year: i32,
    /// Expiry month, 1 to 12.
    pub credit_card_expiration_month: i32,
}

/// Why a charge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PaymentError {
    /// Not a card number (fails the Luhn check, or not 13 to 19 digits).
    #[error("invalid credit card number ending in {last4}")]
    InvalidCardNumber {
        /// Its last four characters, for the message.
        last4: String,
    },
    /// A card past its expiry month.
    #[error("credit card expired on {month:02}/{year}")]
    Expired {
        /// Expiry month.
        month: i32,
        /// Expiry year.
        year: i32,
    },
    /// Charging nothing, or less.
    #[error("invalid amount to charge: {0}")]
    InvalidAmount(Money),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Payment {
    /// Charges `amount` to `card`; returns the transaction id.
    async fn charge(&self, amount: Money, card: CreditCardInfo) -> Result<String, PaymentError>;
}

/// Accepts any valid, unexpired card (there is no bank behind it); its transaction ids
/// name the application version that charged (`txn-v2-…`).
#[derive(Debug)]
pub struct CardPayment {
    version: String,
    /// Receipts of recent release-2 charges by idempotency key (at most
    /// [`v2::REMEMBERED`]): a charge sent again gets the first one's receipt.
    recent: std::sync::Mutex<std::collections::VecDeque<(String, v2::Receipt)>>,
}

impl CardPayment {
    /// Charging as application `version`.
    pub fn new(version: impl Into<String>) -> Self {
        CardPayment { version: version.into(), recent: Default::default() }
    }
}

impl Default for CardPayment {
    fn default() -> Self {
        CardPayment::new(env!("CARGO_PKG_VERSION"))
    }
}

/// The Luhn checksum of a 13 to 19 digit number.
pub fn luhn_valid(number: &str) -> bool {
    let digits: Option<Vec<u32>> = number.chars().filter(|c| *c != ' ' && *c != '-').map(|c| c.to_digit(10)).collect();
    let Some(digits) = digits else { return false };
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The current (year, month), UTC, without a date-time dependency.
pub fn current_year_month() -> (i32, i32) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as i32)
}

#[meshrpc::async_trait]
impl Payment for CardPayment {
    async fn charge(&self, amount: Money, card: CreditCardInfo) -> Result<String, PaymentError> {
        if amount.check().is_err() || amount.total_nanos() <= 0 {
            return Err(PaymentError::InvalidAmount(amount));
        }
        if !luhn_valid(&card.credit_card_number) {
            let n = &card.credit_card_number;
            let last4 = n.chars().skip(n.chars().count().saturating_sub(4)).collect();
            return Err(PaymentError::InvalidCardNumber { last4 });
        }
        let (year, month) = (card.credit_card_expiration_year, card.credit_card_expiration_month);
        if (year, month) < current_year_month() || !(1..=12).contains(&month) {
            return Err(PaymentError::Expired { month, year });
        }
        Ok(crate::next_id("txn", &self.version))
    }
}

/// Release 2 of the contract (`--app-version v2`): a charge carries an idempotency key
/// and answers with a receipt. Same service name, another method set: a release-1
/// caller's client never matches a release-2 replica (nor the reverse), so during a
/// rollout the two releases run side by side, each calling its own.
pub mod v2 {
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use super::{CardPayment, CreditCardInfo, PaymentError};
    use crate::Money;

    /// Receipts a payment replica remembers for keys sent again.
    pub const REMEMBERED: usize = 1024;

    /// A charge.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct ChargeRequest {
        /// Charges sent again with the same key are charged once.
        pub idempotency_key: String,
        /// What to charge.
        pub amount: Money,
        /// The card.
        pub card: CreditCardInfo,
    }

    /// What a charge answers.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Receipt {
        /// The transaction's id.
        pub transaction_id: String,
        /// What was charged.
        pub charged: Money,
    }

    /// The contract, release 2.
    #[meshrpc::service(schema, name = "payment")]
    pub trait Payment {
        /// Charges the request's amount to its card, once per idempotency key.
        async fn charge(&self, request: ChargeRequest) -> Result<Receipt, PaymentError>;
    }

    #[meshrpc::async_trait]
    impl Payment for CardPayment {
        async fn charge(&self, request: ChargeRequest) -> Result<Receipt, PaymentError> {
            let remembered = |recent: &std::collections::VecDeque<(String, Receipt)>| {
                recent.iter().find(|(key, _)| *key == request.idempotency_key).map(|(_, r)| r.clone())
            };
            if let Some(receipt) = remembered(&self.recent.lock().unwrap()) {
                return Ok(receipt);
            }
            let charged = request.amount.clone();
            let transaction_id = super::Payment::charge(self, request.amount, request.card).await?;
            let receipt = Receipt { transaction_id, charged };
            let mut recent = self.recent.lock().unwrap();
            if recent.len() >= REMEMBERED {
                recent.pop_front();
            }
            recent.push_back((request.idempotency_key, receipt.clone()));
            Ok(receipt)
        }
    }

    /// A release-2 payment held as release 1's trait (what checkout calls): each charge
    /// gets a key of its own.
    pub struct AsRelease1(pub Arc<dyn Payment>);

    #[meshrpc::async_trait]
    impl super::Payment for AsRelease1 {
        async fn charge(&self, amount: Money, card: CreditCardInfo) -> Result<String, PaymentError> {
            let request = ChargeRequest { idempotency_key: crate::next_id("charge", "key"), amount, card };
            self.0.charge(request).await.map(|receipt| receipt.transaction_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str, year: i32) -> CreditCardInfo {
        CreditCardInfo {
            credit_card_number: number.into(),
            credit_card_cvv: 672,
            credit_card_expiration_year: year,
            credit_card_expiration_month: 1,
        }
    }

    #[tokio::test]
    async fn charges_valid_cards_only() {
        let ten = Money::new("EUR", 10, 0).unwrap();
        let payment = CardPayment::new("v1");
        assert!(payment.charge(ten.clone(), card("4432-8015-6152-0454", 2099)).await.is_ok());
        assert_eq!(
            payment.charge(ten.clone(), card("4432-8015-6152-0455", 2099)).await,
            Err(PaymentError::InvalidCardNumber { last4: "0455".into() })
        );
        assert_eq!(
            payment.charge(ten.clone(), card("4432801561520454", 2001)).await,
            Err(PaymentError::Expired { month: 1, year: 2001 })
        );
        assert_eq!(
            payment.charge(Money::zero("EUR"), card("4432801561520454", 2099)).await,
            Err(PaymentError::InvalidAmount(Money::zero("EUR")))
        );
    }

    #[tokio::test]
    async fn release_2_charges_a_key_once() {
        let payment = CardPayment::new("v2");
        let charge = |request| v2::Payment::charge(&payment, request);
        let ten = Money::new("EUR", 10, 0).unwrap();
        let request = v2::ChargeRequest {
            idempotency_key: "k1".into(),
            amount: ten.clone(),
            card: card("4432-8015-6152-0454", 2099),
        };
        let first = charge(request.clone()).await.unwrap();
        assert!(first.transaction_id.starts_with("txn-v2-"), "{first:?}");
        assert_eq!(charge(request.clone()).await.unwrap(), first, "the same key, the same receipt");
        let other = charge(v2::ChargeRequest { idempotency_key: "k2".into(), ..request }).await.unwrap();
        assert_ne!(other.transaction_id, first.transaction_id);
    }
}
