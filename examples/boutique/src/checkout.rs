//! The checkout service: places an order, calling six other services through their traits.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    cart::{Cart, CartError, CartItem},
    currency::{Currency, CurrencyError},
    email::{Email, EmailError},
    payment::{CreditCardInfo, Payment, PaymentError},
    productcatalog::{CatalogError, ProductCatalog},
    shipping::{Address, Shipping, ShippingError},
    Money, MoneyError,
};

/// A line of an order: the item and its unit price in the user's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderItem {
    /// Product and quantity.
    pub item: CartItem,
    /// Price of one, in the order's currency.
    pub cost: Money,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderResult {
    /// The order's id.
    pub order_id: String,
    /// The shipper's tracking id.
    pub shipping_tracking_id: String,
    /// Shipping, in the order's currency.
    pub shipping_cost: Money,
    /// Where it goes.
    pub shipping_address: Address,
    /// What was bought.
    pub items: Vec<OrderItem>,
    /// Shipping plus each item's cost times its quantity: what was charged.
    pub total: Money,
    /// The payment's transaction id.
    pub transaction_id: String,
}

/// An order to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlaceOrderRequest {
    /// Whose cart to buy.
    pub user_id: String,
    /// The currency to charge in.
    pub user_currency: String,
    /// Where to ship.
    pub address: Address,
    /// Where to send the confirmation.
    pub email: String,
    /// What to charge.
    pub credit_card: CreditCardInfo,
}

/// Why an order was not placed; a step's own error as that service gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CheckoutError {
    /// Nothing to buy.
    #[error("the cart of {0} is empty")]
    EmptyCart(String),
    /// The cart service failed.
    #[error("cart: {0}")]
    Cart(CartError),
    /// The catalog failed (a product in the cart is gone).
    #[error("catalog: {0}")]
    Catalog(CatalogError),
    /// Conversion failed (an unsupported currency).
    #[error("currency: {0}")]
    Currency(CurrencyError),
    /// Shipping failed.
    #[error("shipping: {0}")]
    Shipping(ShippingError),
    /// The charge was refused.
    #[error("payment: {0}")]
    Payment(PaymentError),
    /// The confirmation could not be sent (the order was placed and charged).
    #[error("email: {0}")]
    Email(EmailError),
    /// Summing the order overflowed or mixed currencies.
    #[error("money: {0}")]
    Money(MoneyError),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract.
#[meshrpc::service(schema)]
pub trait Checkout {
    /// Buys the user's cart: prices, converts, quotes shipping, charges, ships, empties the
    /// cart and sends a confirmation. A refused charge leaves the cart as it was.
    async fn place_order(&self, request: PlaceOrderRequest) -> Result<OrderResult, CheckoutError>;
}

/// The services checkout calls (in the app: generated clients over the cluster).
#[derive(Clone)]
pub struct CheckoutDeps {
    /// Carts.
    pub cart: Arc<dyn Cart>,
    /// Products and prices.
    pub catalog: Arc<dyn ProductCatalog>,
    /// Conversion to the user's currency.
    pub currency: Arc<dyn Currency>,
    /// Quotes and shipping.
    pub shipping: Arc<dyn Shipping>,
    /// Charges.
    pub payment: Arc<dyn Payment>,
    /// Confirmations.
    pub email: Arc<dyn Email>,
}

/// Checkout as Online Boutique's: one order after another, each step a call. Its order
/// ids name the application version that placed them (`ord-v2-…`).
pub struct CheckoutFlow {
    deps: CheckoutDeps,
    version: String,
}

impl CheckoutFlow {
    /// Over the services it calls, placing orders as application `version`.
    pub fn new(deps: CheckoutDeps, version: impl Into<String>) -> Self {
        CheckoutFlow { deps, version: version.into() }
    }
}

#[meshrpc::async_trait]
impl Checkout for CheckoutFlow {
    async fn place_order(&self, req: PlaceOrderRequest) -> Result<OrderResult, CheckoutError> {
        let d = &self.deps;
        let cart = d.cart.get_cart(req.user_id.clone()).await.map_err(CheckoutError::Cart)?;
        if cart.items.is_empty() {
            return Err(CheckoutError::EmptyCart(req.user_id));
        }
        let mut items = Vec::with_capacity(cart.items.len());
        for item in &cart.items {
            let product = d.catalog.get_product(item.product_id.clone()).await.map_err(CheckoutError::Catalog)?;
            let cost = d
                .currency
                .convert(product.price_usd, req.user_currency.clone())
                .await
                .map_err(CheckoutError::Currency)?;
            items.push(OrderItem { item: item.clone(), cost });
        }
        let quote =
            d.shipping.get_quote(req.address.clone(), cart.items.clone()).await.map_err(CheckoutError::Shipping)?;
        let shipping_cost =
            d.currency.convert(quote, req.user_currency.clone()).await.map_err(CheckoutError::Currency)?;
        let lines: Vec<Money> = items
            .iter()
            .map(|i| i.cost.times(i.item.quantity))
            .collect::<Result<_, _>>()
            .map_err(CheckoutError::Money)?;
        let total =
            Money::sum(&req.user_currency, lines.iter().chain([&shipping_cost])).map_err(CheckoutError::Money)?;
        let transaction_id = d.payment.charge(total.clone(), req.credit_card).await.map_err(CheckoutError::Payment)?;
        let shipping_tracking_id =
            d.shipping.ship_order(req.address.clone(), cart.items).await.map_err(CheckoutError::Shipping)?;
        d.cart.empty_cart(req.user_id).await.map_err(CheckoutError::Cart)?;
        let order = OrderResult {
            order_id: crate::next_id("ord", &self.version),
            shipping_tracking_id,
            shipping_cost,
            shipping_address: req.address,
            items,
            total,
            transaction_id,
        };
        d.email.send_order_confirmation(req.email, order.clone()).await.map_err(CheckoutError::Email)?;
        Ok(order)
    }
}
