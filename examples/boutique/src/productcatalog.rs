//! The product catalog: a fixed list of products, by id or by search.

use serde::{Deserialize, Serialize};

use crate::Money;

/// A product on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Product {
    /// Its id (`OLJCESPC7Z`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// A sentence about it.
    pub description: String,
    /// Its picture's path.
    pub picture: String,
    /// Its price in US dollars.
    pub price_usd: Money,
    /// Categories, for ads and search.
    pub categories: Vec<String>,
}

/// What can go wrong looking products up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CatalogError {
    /// No product has this id.
    #[error("no product with id {0}")]
    NotFound(String),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema, name = "productcatalog")]
pub trait ProductCatalog {
    /// Every product.
    #[meshrpc(idempotent)]
    async fn list_products(&self) -> Result<Vec<Product>, CatalogError>;
    /// One product by id.
    #[meshrpc(idempotent)]
    async fn get_product(&self, id: String) -> Result<Product, CatalogError>;
    /// Products whose name or description contains `query` (case-insensitive).
    #[meshrpc(idempotent)]
    async fn search_products(&self, query: String) -> Result<Vec<Product>, CatalogError>;
}

/// The catalog of Online Boutique's demo, in memory.
#[derive(Debug, Clone)]
pub struct StaticCatalog {
    products: Vec<Product>,
}

impl Default for StaticCatalog {
    fn default() -> Self {
        let p = |id: &str, name: &str, description: &str, units: i64, nanos: i32, categories: &[&str]| Product {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            picture: format!("/static/img/products/{}.jpg", name.to_lowercase().replace(' ', "-")),
            price_usd: Money { currency_code: "USD".into(), units, nanos },
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        };
        let products = vec![
            p("OLJCESPC7Z", "Sunglasses", "Add a modern touch to your outfits.", 19, 990_000_000, &["accessories"]),
            p("66VCHSJNUP", "Tank Top", "Perfectly cropped cotton tank.", 18, 990_000_000, &["clothing", "tops"]),
            p("1YMWWN1N4O", "Watch", "This gold-tone stainless steel watch.", 109, 990_000_000, &["accessories"]),
            p("L9ECAV7KIM", "Loafers", "A neat addition to your summer wardrobe.", 89, 990_000_000, &["footwear"]),
            p("2ZYFJ3GM2N", "Hairdryer", "Styling at home, frizz free.", 24, 990_000_000, &["hair", "beauty"]),
            p(
                "0PUK6V6EV0",
                "Candle Holder",
                "This small but intricate candle holder.",
                18,
                990_000_000,
                &["decor", "home"],
            ),
            p("LS4PSXUNUM", "Salt & Pepper Shakers", "Add some flavor to your kitchen.", 18, 490_000_000, &["kitchen"]),
            p("9SIQT8TOJO", "Bamboo Glass Jar", "This bamboo glass jar can hold 57 oz.", 5, 490_000_000, &["kitchen"]),
            p("6E92ZMYYFZ", "Mug", "A simple mug with a mustard interior.", 8, 990_000_000, &["kitchen"]),
            p("AAAAAAAAA0", "Typewriter", "A vintage typewriter, in working order.", 67, 990_000_000, &["vintage"]),
        ];
        StaticCatalog { products }
    }
}

#[meshrpc::async_trait]
impl ProductCatalog for StaticCatalog {
    async fn list_products(&self) -> Result<Vec<Product>, CatalogError> {
        Ok(self.products.clone())
    }

    async fn get_product(&self, id: String) -> Result<Product, CatalogError> {
        self.products.iter().find(|p| p.id == id).cloned().ok_or(CatalogError::NotFound(id))
    }

    async fn search_products(&self, query: String) -> Result<Vec<Product>, CatalogError> {
        let query = query.to_lowercase();
        let hit =
            |p: &&Product| p.name.to_lowercase().contains(&query) || p.description.to_lowercase().contains(&query);
        Ok(self.products.iter().filter(hit).cloned().collect())
    }
}
