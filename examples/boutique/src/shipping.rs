//! The shipping service: quotes and ships.

use serde::{Deserialize, Serialize};

use crate::{cart::CartItem, Money};

/// Where to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Address {
    /// Street and number.
    pub street_address: String,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Country.
    pub country: String,
    /// Postal code.
    pub zip_code: i32,
}

/// What can go wrong shipping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ShippingError {
    /// An address without a street, city or country.
    #[error("incomplete address: no {0}")]
    IncompleteAddress(String),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Shipping {
    /// What shipping `items` to `address` costs, in US dollars.
    #[meshrpc(idempotent)]
    async fn get_quote(&self, address: Address, items: Vec<CartItem>) -> Result<Money, ShippingError>;
    /// Ships `items` to `address`; returns the tracking id.
    async fn ship_order(&self, address: Address, items: Vec<CartItem>) -> Result<String, ShippingError>;
}

/// A flat rate per order, as in Online Boutique: 8.99 USD, nothing for no items.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlatRateShipping;

/// The flat rate.
pub const FLAT_RATE_USD: (i64, i32) = (8, 990_000_000);

fn check(address: &Address) -> Result<(), ShippingError> {
    for (field, value) in [("street", &address.street_address), ("city", &address.city), ("country", &address.country)]
    {
        if value.trim().is_empty() {
            return Err(ShippingError::IncompleteAddress(field.into()));
        }
    }
    Ok(())
}

#[meshrpc::async_trait]
impl Shipping for FlatRateShipping {
    async fn get_quote(&self, address: Address, items: Vec<CartItem>) -> Result<Money, ShippingError> {
        check(&address)?;
        let count: u64 = items.iter().map(|i| u64::from(i.quantity)).sum();
        if count == 0 {
            return Ok(Money::zero("USD"));
        }
        Ok(Money { currency_code: "USD".into(), units: FLAT_RATE_USD.0, nanos: FLAT_RATE_USD.1 })
    }

    async fn ship_order(&self, address: Address, _items: Vec<CartItem>) -> Result<String, ShippingError> {
        check(&address)?;
        let zone: String = address.country.chars().filter(char::is_ascii_alphabetic).take(2).collect();
        Ok(format!("TRK{}-{}", zone.to_uppercase(), crate::next_serial()))
    }
}
