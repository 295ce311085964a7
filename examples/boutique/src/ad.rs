//! The ad service: ads for the categories the user looks at.

use serde::{Deserialize, Serialize};

/// One text ad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Advert {
    /// Where clicking it goes.
    pub redirect_url: String,
    /// What it says.
    pub text: String,
}

/// What can go wrong serving ads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AdError {
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Ad {
    /// Ads for any of `context_keys` (categories); two general ones when none match.
    #[meshrpc(idempotent)]
    async fn get_ads(&self, context_keys: Vec<String>) -> Result<Vec<Advert>, AdError>;
}

/// Ads by category, in memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeywordAds;

const ADS: &[(&str, &str, &str)] = &[
    ("clothing", "/product/66VCHSJNUP", "Tank top for sale. 20% off."),
    ("accessories", "/product/1YMWWN1N4O", "Watch for sale. Buy one, get second kit for free"),
    ("footwear", "/product/L9ECAV7KIM", "Loafers for sale. Buy one, get second one for free"),
    ("hair", "/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off."),
    ("decor", "/product/0PUK6V6EV0", "Candle holder for sale. 30% off."),
    ("kitchen", "/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."),
];

#[meshrpc::async_trait]
impl Ad for KeywordAds {
    async fn get_ads(&self, context_keys: Vec<String>) -> Result<Vec<Advert>, AdError> {
        let ad = |(_, url, text): &(&str, &str, &str)| Advert { redirect_url: (*url).into(), text: (*text).into() };
        let matching: Vec<Advert> =
            ADS.iter().filter(|(key, ..)| context_keys.iter().any(|k| k == key)).map(ad).collect();
        Ok(if matching.is_empty() { ADS.iter().take(2).map(ad).collect() } else { matching })
    }
}
