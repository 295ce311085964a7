//! The currency service: converts money between currencies at fixed rates.

use serde::{Deserialize, Serialize};

use crate::{Money, MoneyError};

/// What can go wrong converting money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CurrencyError {
    /// A currency code the service has no rate for.
    #[error("unsupported currency: {0}")]
    Unsupported(String),
    /// The amount is invalid or the result out of range.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Currency {
    /// The currency codes `convert` accepts.
    #[meshrpc(idempotent)]
    async fn supported_currencies(&self) -> Result<Vec<String>, CurrencyError>;
    /// `from` in `to_code`, rounded toward zero to the nano.
    #[meshrpc(idempotent)]
    async fn convert(&self, from: Money, to_code: String) -> Result<Money, CurrencyError>;
}

/// Units of each currency one euro buys, in millionths (Online Boutique's table, in part).
pub const RATES: &[(&str, i64)] = &[
    ("EUR", 1_000_000),
    ("USD", 1_130_500),
    ("JPY", 126_400_000),
    ("GBP", 859_700),
    ("CAD", 1_512_800),
    ("CHF", 1_136_000),
    ("SEK", 10_552_000),
    ("TRY", 6_105_900),
];

/// Converts at the fixed [`RATES`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FixedRates;

impl FixedRates {
    fn rate(code: &str) -> Result<i64, CurrencyError> {
        RATES.iter().find(|(c, _)| *c == code).map(|(_, r)| *r).ok_or_else(|| CurrencyError::Unsupported(code.into()))
    }

    /// The conversion itself, without a call: `from` × rate(to) / rate(from).
    pub fn convert_now(from: &Money, to_code: &str) -> Result<Money, CurrencyError> {
        from.check()?;
        let (rate_from, rate_to) = (Self::rate(&from.currency_code)?, Self::rate(to_code)?);
        let total = from.total_nanos() * i128::from(rate_to) / i128::from(rate_from);
        Ok(Money::from_nanos(to_code, total)?)
    }
}

#[meshrpc::async_trait]
impl Currency for FixedRates {
    async fn supported_currencies(&self) -> Result<Vec<String>, CurrencyError> {
        Ok(RATES.iter().map(|(c, _)| (*c).to_owned()).collect())
    }

    async fn convert(&self, from: Money, to_code: String) -> Result<Money, CurrencyError> {
        FixedRates::convert_now(&from, &to_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn converts_through_the_euro() {
        let usd = Money::new("USD", 11, 305_000_000).unwrap();
        assert_eq!(FixedRates.convert(usd.clone(), "EUR".into()).await.unwrap(), Money::new("EUR", 10, 0).unwrap());
        assert_eq!(FixedRates.convert(usd.clone(), "USD".into()).await.unwrap(), usd);
        assert_eq!(FixedRates.convert(usd, "XYZ".into()).await, Err(CurrencyError::Unsupported("XYZ".into())));
        let cents = Money::new("USD", 0, 10_000_000).unwrap();
        // 0.01 USD = 0.008845643… EUR, rounded toward zero to the nano.
        assert_eq!(FixedRates.convert(cents, "EUR".into()).await.unwrap(), Money::new("EUR", 0, 8_845_643).unwrap());
    }
}
