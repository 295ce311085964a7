//! The frontend: the shop's pages as a JSON API, composed from the other services as
//! Online Boutique's frontend composes them. Behind the gateway each method is
//! `POST /frontend/<method>` with its arguments as a JSON object; the session (user and
//! currency) travels in every request, as the upstream frontend keeps it in cookies.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    ad::{Ad, Advert},
    cart::{Cart, CartError, CartItem},
    checkout::{Checkout, CheckoutError, OrderResult, PlaceOrderRequest},
    currency::{Currency, CurrencyError},
    payment::CreditCardInfo,
    productcatalog::{CatalogError, Product, ProductCatalog},
    recommendation::{Recommendation, RecommendationError},
    shipping::{Address, Shipping, ShippingError},
    Money, MoneyError,
};

/// Who is shopping, in which currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Session {
    /// The shopper (the upstream frontend's session id).
    pub user_id: String,
    /// Prices are shown in this currency (`USD`, `EUR`, …).
    pub currency: String,
}

/// A product with its price in the session's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PricedProduct {
    /// The product.
    pub product: Product,
    /// Its price, converted.
    pub price: Money,
}

/// The home page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HomePage {
    /// The version of the application that served the page.
    pub version: String,
    /// Currencies the shopper may choose.
    pub currencies: Vec<String>,
    /// Every product, priced.
    pub products: Vec<PricedProduct>,
    /// Items in the shopper's cart.
    pub cart_size: u32,
    /// An ad, if the ad service had one (a failing ad service never fails a page).
    pub ad: Option<Advert>,
}

/// One product's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductPage {
    /// The version of the application that served the page.
    pub version: String,
    /// The product, priced.
    pub product: PricedProduct,
    /// Ids of other products to look at.
    pub recommendations: Vec<String>,
    /// An ad for its categories, if any.
    pub ad: Option<Advert>,
}

/// What adding to the cart answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CartSummary {
    /// The version of the application that served it.
    pub version: String,
    /// Items in the cart now.
    pub cart_size: u32,
}

/// A line of the cart page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CartLine {
    /// The product, priced.
    pub product: PricedProduct,
    /// How many.
    pub quantity: u32,
}

/// The cart page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CartPage {
    /// The version of the application that served the page.
    pub version: String,
    /// What is in the cart.
    pub items: Vec<CartLine>,
    /// Shipping for it to the default address, converted.
    pub shipping_cost: Money,
    /// Items and shipping.
    pub total: Money,
    /// Ids of other products to look at.
    pub recommendations: Vec<String>,
}

/// What the checkout form sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckoutForm {
    /// Where to send the confirmation.
    pub email: String,
    /// Where to ship.
    pub address: Address,
    /// What to charge.
    pub credit_card: CreditCardInfo,
}

/// The page after an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderPage {
    /// The version of the application that served the page.
    pub version: String,
    /// The order as checkout placed it.
    pub order: OrderResult,
}

/// Why a page could not be served: the step that failed, with that service's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, schemars::JsonSchema)]
pub enum FrontendError {
    /// A currency the shop does not take.
    #[error("unsupported currency `{0}`")]
    UnsupportedCurrency(String),
    /// Currency conversion failed.
    #[error("currency: {0}")]
    Currency(CurrencyError),
    /// The catalog failed (or has no such product).
    #[error("catalog: {0}")]
    Catalog(CatalogError),
    /// The cart failed.
    #[error("cart: {0}")]
    Cart(CartError),
    /// Recommendations failed.
    #[error("recommendation: {0}")]
    Recommendation(RecommendationError),
    /// The shipping quote failed.
    #[error("shipping: {0}")]
    Shipping(ShippingError),
    /// The order was not placed.
    #[error("checkout: {0}")]
    Checkout(CheckoutError),
    /// Summing prices failed.
    #[error("money: {0}")]
    Money(MoneyError),
    /// The call did not reach the service or its answer did not come back.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// The contract: one method per page or form of the shop.
#[meshrpc::service(schema)]
pub trait Frontend {
    /// The home page: every product priced in the session's currency, the cart's size,
    /// an ad.
    #[meshrpc(idempotent)]
    async fn home(&self, session: Session) -> Result<HomePage, FrontendError>;

    /// Switches the session to `currency` (one the shop takes): the session to use next.
    async fn set_currency(&self, session: Session, currency: String) -> Result<Session, FrontendError>;

    /// A product's page: the product priced, recommendations, an ad.
    #[meshrpc(idempotent)]
    async fn product(&self, session: Session, product_id: String) -> Result<ProductPage, FrontendError>;

    /// Adds `quantity` of a product (which must exist) to the cart.
    async fn add_to_cart(
        &self,
        session: Session,
        product_id: String,
        quantity: u32,
    ) -> Result<CartSummary, FrontendError>;

    /// The cart page: lines priced, shipping quoted, the total, recommendations.
    #[meshrpc(idempotent)]
    async fn view_cart(&self, session: Session) -> Result<CartPage, FrontendError>;

    /// Places the order for the cart.
    async fn checkout(&self, session: Session, form: CheckoutForm) -> Result<OrderPage, FrontendError>;
}

/// The services the frontend calls (in the app: generated clients over the cluster).
#[derive(Clone)]
pub struct FrontendDeps {
    /// Conversion and the currency list.
    pub currency: Arc<dyn Currency>,
    /// Products.
    pub catalog: Arc<dyn ProductCatalog>,
    /// Carts.
    pub cart: Arc<dyn Cart>,
    /// Recommendations.
    pub recommendation: Arc<dyn Recommendation>,
    /// Shipping quotes.
    pub shipping: Arc<dyn Shipping>,
    /// Orders.
    pub checkout: Arc<dyn Checkout>,
    /// Ads.
    pub ad: Arc<dyn Ad>,
}

/// The shop's frontend over its services, answering as `version` of the application.
pub struct Shopfront {
    deps: FrontendDeps,
    version: String,
}

impl Shopfront {
    /// Over the services it calls; its pages name `version`.
    pub fn new(deps: FrontendDeps, version: impl Into<String>) -> Self {
        Shopfront { deps, version: version.into() }
    }

    async fn priced(&self, product: Product, currency: &str) -> Result<PricedProduct, FrontendError> {
        let price = self
            .deps
            .currency
            .convert(product.price_usd.clone(), currency.to_owned())
            .await
            .map_err(FrontendError::Currency)?;
        Ok(PricedProduct { product, price })
    }

    async fn ad(&self, keys: Vec<String>) -> Option<Advert> {
        self.deps.ad.get_ads(keys).await.ok().and_then(|ads| ads.into_iter().next())
    }

    async fn cart_size(&self, user_id: &str) -> Result<u32, FrontendError> {
        let cart = self.deps.cart.get_cart(user_id.to_owned()).await.map_err(FrontendError::Cart)?;
        Ok(cart.items.iter().map(|i| i.quantity).sum())
    }

    async fn recommendations(&self, user_id: &str, looking_at: Vec<String>) -> Result<Vec<String>, FrontendError> {
        let ids = self.deps.recommendation.list_recommendations(user_id.to_owned(), looking_at).await;
        ids.map_err(FrontendError::Recommendation)
    }
}

/// Where the cart page quotes shipping to (the upstream frontend's default address).
fn default_address() -> Address {
    Address {
        street_address: "1600 Amphitheatre Parkway".into(),
        city: "Mountain View".into(),
        state: "CA".into(),
        country: "United States".into(),
        zip_code: 94043,
    }
}

#[meshrpc::async_trait]
impl Frontend for Shopfront {
    async fn home(&self, session: Session) -> Result<HomePage, FrontendError> {
        let d = &self.deps;
        let currencies = d.currency.supported_currencies().await.map_err(FrontendError::Currency)?;
        let mut products = Vec::new();
        for product in d.catalog.list_products().await.map_err(FrontendError::Catalog)? {
            products.push(self.priced(product, &session.currency).await?);
        }
        let cart_size = self.cart_size(&session.user_id).await?;
        let ad = self.ad(Vec::new()).await;
        Ok(HomePage { version: self.version.clone(), currencies, products, cart_size, ad })
    }

    async fn set_currency(&self, session: Session, currency: String) -> Result<Session, FrontendError> {
        let supported = self.deps.currency.supported_currencies().await.map_err(FrontendError::Currency)?;
        if !supported.contains(&currency) {
            return Err(FrontendError::UnsupportedCurrency(currency));
        }
        Ok(Session { currency, ..session })
    }

    async fn product(&self, session: Session, product_id: String) -> Result<ProductPage, FrontendError> {
        let product = self.deps.catalog.get_product(product_id.clone()).await.map_err(FrontendError::Catalog)?;
        let keys = product.categories.clone();
        let product = self.priced(product, &session.currency).await?;
        let recommendations = self.recommendations(&session.user_id, vec![product_id]).await?;
        let ad = self.ad(keys).await;
        Ok(ProductPage { version: self.version.clone(), product, recommendations, ad })
    }

    async fn add_to_cart(
        &self,
        session: Session,
        product_id: String,
        quantity: u32,
    ) -> Result<CartSummary, FrontendError> {
        // Only products of the catalog go into carts.
        self.deps.catalog.get_product(product_id.clone()).await.map_err(FrontendError::Catalog)?;
        let item = CartItem { product_id, quantity };
        self.deps.cart.add_item(session.user_id.clone(), item).await.map_err(FrontendError::Cart)?;
        Ok(CartSummary { version: self.version.clone(), cart_size: self.cart_size(&session.user_id).await? })
    }

    async fn view_cart(&self, session: Session) -> Result<CartPage, FrontendError> {
        let d = &self.deps;
        let cart = d.cart.get_cart(session.user_id.clone()).await.map_err(FrontendError::Cart)?;
        let mut items = Vec::with_capacity(cart.items.len());
        let mut lines = Vec::with_capacity(cart.items.len());
        for item in &cart.items {
            let product = d.catalog.get_product(item.product_id.clone()).await.map_err(FrontendError::Catalog)?;
            let product = self.priced(product, &session.currency).await?;
            lines.push(product.price.times(item.quantity).map_err(FrontendError::Money)?);
            items.push(CartLine { product, quantity: item.quantity });
        }
        let quote =
            d.shipping.get_quote(default_address(), cart.items.clone()).await.map_err(FrontendError::Shipping)?;
        let shipping_cost =
            d.currency.convert(quote, session.currency.clone()).await.map_err(FrontendError::Currency)?;
        let total =
            Money::sum(&session.currency, lines.iter().chain([&shipping_cost])).map_err(FrontendError::Money)?;
        let in_cart = cart.items.into_iter().map(|i| i.product_id).collect();
        let recommendations = self.recommendations(&session.user_id, in_cart).await?;
        Ok(CartPage { version: self.version.clone(), items, shipping_cost, total, recommendations })
    }

    async fn checkout(&self, session: Session, form: CheckoutForm) -> Result<OrderPage, FrontendError> {
        let request = PlaceOrderRequest {
            user_id: session.user_id,
            user_currency: session.currency,
            address: form.address,
            email: form.email,
            credit_card: form.credit_card,
        };
        let order = self.deps.checkout.place_order(request).await.map_err(FrontendError::Checkout)?;
        Ok(OrderPage { version: self.version.clone(), order })
    }
}
