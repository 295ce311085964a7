//! The recommendation service: products the user is not looking at, from the catalog.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::productcatalog::{CatalogError, ProductCatalog};

/// What can go wrong recommending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RecommendationError {
    /// The catalog failed.
    #[error("catalog: {0}")]
    Catalog(CatalogError),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Recommendation {
    /// Up to five ids of products not in `product_ids`.
    #[meshrpc(idempotent)]
    async fn list_recommendations(
        &self,
        user_id: String,
        product_ids: Vec<String>,
    ) -> Result<Vec<String>, RecommendationError>;
}

/// Recommends from the catalog, which it calls through its trait.
pub struct CatalogRecommender {
    catalog: Arc<dyn ProductCatalog>,
}

impl CatalogRecommender {
    /// Over a catalog (in the app: a `ProductCatalogClient`).
    pub fn new(catalog: Arc<dyn ProductCatalog>) -> Self {
        CatalogRecommender { catalog }
    }
}

#[meshrpc::async_trait]
impl Recommendation for CatalogRecommender {
    async fn list_recommendations(
        &self,
        _user_id: String,
        product_ids: Vec<String>,
    ) -> Result<Vec<String>, RecommendationError> {
        let products = self.catalog.list_products().await.map_err(RecommendationError::Catalog)?;
        Ok(products.into_iter().map(|p| p.id).filter(|id| !product_ids.contains(id)).take(5).collect())
    }
}
