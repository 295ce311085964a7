//! The boutique's traits over tonic's generated clients: what a service holds for each
//! service it calls (one HTTP/2 channel per peer, shared by every call to it).

use boutique::{
    ad::{Ad, AdError, Advert},
    cart::{Cart, CartError, CartItem, UserCart},
    checkout::{Checkout, CheckoutError, OrderResult, PlaceOrderRequest},
    currency::{Currency, CurrencyError},
    email::{Email, EmailError},
    payment::{CreditCardInfo, Payment, PaymentError},
    productcatalog::{CatalogError, Product, ProductCatalog},
    recommendation::{Recommendation, RecommendationError},
    shipping::{Address, Shipping, ShippingError},
    Money,
};
use tonic::transport::Channel;

use crate::{convert::error, pb};

/// The generated client of each service, over a channel to it.
pub struct Remote<C>(pub C);

type CartClient = pb::cart_service_client::CartServiceClient<Channel>;
type CatalogClient = pb::product_catalog_service_client::ProductCatalogServiceClient<Channel>;
type CurrencyClient = pb::currency_service_client::CurrencyServiceClient<Channel>;
type RecommendationClient = pb::recommendation_service_client::RecommendationServiceClient<Channel>;
type ShippingClient = pb::shipping_service_client::ShippingServiceClient<Channel>;
type PaymentClient = pb::payment_service_client::PaymentServiceClient<Channel>;
type EmailClient = pb::email_service_client::EmailServiceClient<Channel>;
type AdClient = pb::ad_service_client::AdServiceClient<Channel>;
type CheckoutClient = pb::checkout_service_client::CheckoutServiceClient<Channel>;

#[meshrpc::async_trait]
impl Cart for Remote<CartClient> {
    async fn add_item(&self, user_id: String, item: CartItem) -> Result<(), CartError> {
        let req = pb::AddItemRequest { user_id, item: Some(item.into()) };
        self.0.clone().add_item(req).await.map_err(error::<CartError>)?;
        Ok(())
    }
    async fn get_cart(&self, user_id: String) -> Result<UserCart, CartError> {
        Ok(self.0.clone().get_cart(pb::UserRequest { user_id }).await.map_err(error::<CartError>)?.into_inner().into())
    }
    async fn empty_cart(&self, user_id: String) -> Result<(), CartError> {
        self.0.clone().empty_cart(pb::UserRequest { user_id }).await.map_err(error::<CartError>)?;
        Ok(())
    }
}

#[meshrpc::async_trait]
impl ProductCatalog for Remote<CatalogClient> {
    async fn list_products(&self) -> Result<Vec<Product>, CatalogError> {
        let answer = self.0.clone().list_products(pb::Empty {}).await.map_err(error::<CatalogError>)?.into_inner();
        Ok(answer.products.into_iter().map(Into::into).collect())
    }
    async fn get_product(&self, id: String) -> Result<Product, CatalogError> {
        Ok(self
            .0
            .clone()
            .get_product(pb::GetProductRequest { id })
            .await
            .map_err(error::<CatalogError>)?
            .into_inner()
            .into())
    }
    async fn search_products(&self, query: String) -> Result<Vec<Product>, CatalogError> {
        let answer =
            self.0.clone().search_products(pb::SearchProductsRequest { query }).await.map_err(error::<CatalogError>)?;
        Ok(answer.into_inner().products.into_iter().map(Into::into).collect())
    }
}

#[meshrpc::async_trait]
impl Currency for Remote<CurrencyClient> {
    async fn supported_currencies(&self) -> Result<Vec<String>, CurrencyError> {
        let answer = self.0.clone().get_supported_currencies(pb::Empty {}).await.map_err(error::<CurrencyError>)?;
        Ok(answer.into_inner().currency_codes)
    }
    async fn convert(&self, from: Money, to_code: String) -> Result<Money, CurrencyError> {
        let req = pb::CurrencyConversionRequest { from: Some(from.into()), to_code };
        Ok(self.0.clone().convert(req).await.map_err(error::<CurrencyError>)?.into_inner().into())
    }
}

#[meshrpc::async_trait]
impl Recommendation for Remote<RecommendationClient> {
    async fn list_recommendations(
        &self,
        user_id: String,
        product_ids: Vec<String>,
    ) -> Result<Vec<String>, RecommendationError> {
        let req = pb::ListRecommendationsRequest { user_id, product_ids };
        Ok(self
            .0
            .clone()
            .list_recommendations(req)
            .await
            .map_err(error::<RecommendationError>)?
            .into_inner()
            .product_ids)
    }
}

fn shipping_request(address: Address, items: Vec<CartItem>) -> pb::ShippingRequest {
    pb::ShippingRequest { address: Some(address.into()), items: items.into_iter().map(Into::into).collect() }
}

#[meshrpc::async_trait]
impl Shipping for Remote<ShippingClient> {
    async fn get_quote(&self, address: Address, items: Vec<CartItem>) -> Result<Money, ShippingError> {
        let answer =
            self.0.clone().get_quote(shipping_request(address, items)).await.map_err(error::<ShippingError>)?;
        Ok(answer.into_inner().into())
    }
    async fn ship_order(&self, address: Address, items: Vec<CartItem>) -> Result<String, ShippingError> {
        let answer =
            self.0.clone().ship_order(shipping_request(address, items)).await.map_err(error::<ShippingError>)?;
        Ok(answer.into_inner().tracking_id)
    }
}

#[meshrpc::async_trait]
impl Payment for Remote<PaymentClient> {
    async fn charge(&self, amount: Money, card: CreditCardInfo) -> Result<String, PaymentError> {
        let req = pb::ChargeRequest { amount: Some(amount.into()), credit_card: Some(card.into()) };
        Ok(self.0.clone().charge(req).await.map_err(error::<PaymentError>)?.into_inner().transaction_id)
    }
}

#[meshrpc::async_trait]
impl Email for Remote<EmailClient> {
    async fn send_order_confirmation(&self, email: String, order: OrderResult) -> Result<(), EmailError> {
        let req = pb::SendOrderConfirmationRequest { email, order: Some(order.into()) };
        self.0.clone().send_order_confirmation(req).await.map_err(error::<EmailError>)?;
        Ok(())
    }
    async fn sent_count(&self) -> Result<u64, EmailError> {
        Ok(self.0.clone().sent_count(pb::Empty {}).await.map_err(error::<EmailError>)?.into_inner().count)
    }
}

#[meshrpc::async_trait]
impl Ad for Remote<AdClient> {
    async fn get_ads(&self, context_keys: Vec<String>) -> Result<Vec<Advert>, AdError> {
        let answer = self.0.clone().get_ads(pb::AdRequest { context_keys }).await.map_err(error::<AdError>)?;
        Ok(answer.into_inner().ads.into_iter().map(Into::into).collect())
    }
}

#[meshrpc::async_trait]
impl Checkout for Remote<CheckoutClient> {
    async fn place_order(&self, request: PlaceOrderRequest) -> Result<OrderResult, CheckoutError> {
        let answer =
            self.0.clone().place_order(pb::PlaceOrderRequest::from(request)).await.map_err(error::<CheckoutError>)?;
        Ok(answer.into_inner().order.unwrap_or_default().into())
    }
}
