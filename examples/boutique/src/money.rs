//! `Money` as in Online Boutique: whole units plus nanos (10^-9 units) of one currency,
//! both of the same sign, `|nanos| < 10^9`.

use serde::{Deserialize, Serialize};

/// Nanos in one unit.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// An amount of money in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Money {
    /// ISO 4217 code (`USD`, `EUR`).
    pub currency_code: String,
    /// Whole units.
    pub units: i64,
    /// Nanos of a unit, of the same sign as `units` (or either sign when `units` is 0).
    pub nanos: i32,
}

/// What can go wrong adding amounts of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum MoneyError {
    /// Units and nanos of different signs, or nanos out of range.
    #[error("invalid amount: {units} units and {nanos} nanos")]
    Invalid {
        /// The units given.
        units: i64,
        /// The nanos given.
        nanos: i32,
    },
    /// Adding amounts of two currencies.
    #[error("cannot add {0} to {1}")]
    CurrencyMismatch(String, String),
    /// The result does not fit in `i64` units.
    #[error("amount out of range")]
    Overflow,
}

impl Money {
    /// `units` and `nanos` of `currency_code`, checked.
    pub fn new(currency_code: impl Into<String>, units: i64, nanos: i32) -> Result<Money, MoneyError> {
        let money = Money { currency_code: currency_code.into(), units, nanos };
        money.check()?;
        Ok(money)
    }

    /// Zero of a currency.
    pub fn zero(currency_code: impl Into<String>) -> Money {
        Money { currency_code: currency_code.into(), units: 0, nanos: 0 }
    }

    /// An amount from its total in nanos (the sign carries to both parts).
    pub fn from_nanos(currency_code: impl Into<String>, total: i128) -> Result<Money, MoneyError> {
        let per = i128::from(NANOS_PER_UNIT);
        let units = i64::try_from(total / per).map_err(|_| MoneyError::Overflow)?;
        // |total % per| < 10^9 fits an i32; `%` keeps the sign of `total`, as `/` does.
        let nanos = (total % per) as i32;
        Ok(Money { currency_code: currency_code.into(), units, nanos })
    }

    /// Checks that units and nanos have the same sign and nanos are in range.
    pub fn check(&self) -> Result<(), MoneyError> {
        let in_range = i64::from(self.nanos).abs() < NANOS_PER_UNIT;
        let same_sign = (self.units >= 0 && self.nanos >= 0) || (self.units <= 0 && self.nanos <= 0);
        if in_range && same_sign {
            Ok(())
        } else {
            Err(MoneyError::Invalid { units: self.units, nanos: self.nanos })
        }
    }

    /// The amount in nanos.
    pub fn total_nanos(&self) -> i128 {
        i128::from(self.units) * i128::from(NANOS_PER_UNIT) + i128::from(self.nanos)
    }

    /// `self + other`, with the carry between nanos and units; both of one currency.
    pub fn add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.check()?;
        other.check()?;
        if self.currency_code != other.currency_code {
            return Err(MoneyError::CurrencyMismatch(other.currency_code.clone(), self.currency_code.clone()));
        }
        Money::from_nanos(self.currency_code.clone(), self.total_nanos() + other.total_nanos())
    }

    /// `self × n`.
    pub fn times(&self, n: u32) -> Result<Money, MoneyError> {
        self.check()?;
        Money::from_nanos(self.currency_code.clone(), self.total_nanos() * i128::from(n))
    }

    /// The sum of `amounts`, all of `currency_code` (zero when empty).
    pub fn sum<'a>(currency_code: &str, amounts: impl IntoIterator<Item = &'a Money>) -> Result<Money, MoneyError> {
        amounts.into_iter().try_fold(Money::zero(currency_code), |total, m| total.add(m))
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 || self.nanos < 0 { "-" } else { "" };
        let cents = (i64::from(self.nanos).abs() + 5_000_000) / 10_000_000;
        let (units, cents) =
            if cents == 100 { (self.units.unsigned_abs() + 1, 0) } else { (self.units.unsigned_abs(), cents) };
        write!(f, "{sign}{units}.{cents:02} {}", self.currency_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(units: i64, nanos: i32) -> Money {
        Money::new("USD", units, nanos).unwrap()
    }

    #[test]
    fn adds_with_carry() {
        assert_eq!(usd(1, 600_000_000).add(&usd(2, 500_000_000)).unwrap(), usd(4, 100_000_000));
        assert_eq!(usd(-1, -600_000_000).add(&usd(-2, -500_000_000)).unwrap(), usd(-4, -100_000_000));
        // Mixed signs borrow: 1.20 + (-3.50) = -2.30, both parts negative.
        assert_eq!(usd(1, 200_000_000).add(&usd(-3, -500_000_000)).unwrap(), usd(-2, -300_000_000));
        assert_eq!(usd(3, 0).add(&usd(0, -1)).unwrap(), usd(2, 999_999_999));
        assert_eq!(usd(0, 999_999_999).times(3).unwrap(), usd(2, 999_999_997));
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(Money::new("USD", 1, -1), Err(MoneyError::Invalid { units: 1, nanos: -1 }));
        assert_eq!(
            Money::new("USD", 0, 1_000_000_000).unwrap_err(),
            MoneyError::Invalid { units: 0, nanos: 1_000_000_000 }
        );
        let eur = Money::zero("EUR");
        assert_eq!(usd(1, 0).add(&eur), Err(MoneyError::CurrencyMismatch("EUR".into(), "USD".into())));
        assert_eq!(usd(i64::MAX, 0).add(&usd(1, 0)), Err(MoneyError::Overflow));
        assert_eq!(Money::sum("USD", [&usd(1, 0), &usd(2, 10)]).unwrap(), usd(3, 10));
    }

    #[test]
    fn displays_cents() {
        assert_eq!(usd(19, 990_000_000).to_string(), "19.99 USD");
        assert_eq!(usd(-0, -5_000_000).to_string(), "-0.01 USD");
    }
}
