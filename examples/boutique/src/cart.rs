//! The cart service: each user's cart, in memory.

use std::{collections::HashMap, sync::Mutex};

use serde::{Deserialize, Serialize};

/// A quantity of one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CartItem {
    /// The product's id in the catalog.
    pub product_id: String,
    /// How many.
    pub quantity: u32,
}

/// A user's cart.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserCart {
    /// Whose cart.
    pub user_id: String,
    /// One entry per product, in the order first added.
    pub items: Vec<CartItem>,
}

/// What can go wrong with a cart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CartError {
    /// Adding nothing.
    #[error("quantity must be at least 1")]
    ZeroQuantity,
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Cart {
    /// Adds `item` to `user_id`'s cart (quantities of one product add up).
    async fn add_item(&self, user_id: String, item: CartItem) -> Result<(), CartError>;
    /// `user_id`'s cart (empty if they have none).
    #[meshrpc(idempotent)]
    async fn get_cart(&self, user_id: String) -> Result<UserCart, CartError>;
    /// Empties `user_id`'s cart.
    #[meshrpc(idempotent)]
    async fn empty_cart(&self, user_id: String) -> Result<(), CartError>;
}

/// Carts in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryCart {
    carts: Mutex<HashMap<String, Vec<CartItem>>>,
}

#[meshrpc::async_trait]
impl Cart for MemoryCart {
    async fn add_item(&self, user_id: String, item: CartItem) -> Result<(), CartError> {
        if item.quantity == 0 {
            return Err(CartError::ZeroQuantity);
        }
        let mut carts = self.carts.lock().unwrap();
        let items = carts.entry(user_id).or_default();
        match items.iter_mut().find(|i| i.product_id == item.product_id) {
            Some(held) => held.quantity += item.quantity,
            None => items.push(item),
        }
        Ok(())
    }

    async fn get_cart(&self, user_id: String) -> Result<UserCart, CartError> {
        let items = self.carts.lock().unwrap().get(&user_id).cloned().unwrap_or_default();
        Ok(UserCart { user_id, items })
    }

    async fn empty_cart(&self, user_id: String) -> Result<(), CartError> {
        self.carts.lock().unwrap().remove(&user_id);
        Ok(())
    }
}
