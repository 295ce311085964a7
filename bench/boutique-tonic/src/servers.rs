//! Each service's gRPC server: the boutique's own implementation behind the generated
//! tonic service trait, messages converted at the edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{convert::status, pb};

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Answer<T> {
    Ok(Response::new(value))
}

/// One service's implementation, served over gRPC.
pub struct Served<T: ?Sized>(pub Arc<T>);

#[tonic::async_trait]
impl pb::cart_service_server::CartService for Served<dyn boutique::cart::Cart> {
    async fn add_item(&self, req: Request<pb::AddItemRequest>) -> Answer<pb::Empty> {
        let req = req.into_inner();
        self.0.add_item(req.user_id, req.item.unwrap_or_default().into()).await.map_err(status)?;
        ok(pb::Empty {})
    }
    async fn get_cart(&self, req: Request<pb::UserRequest>) -> Answer<pb::Cart> {
        ok(self.0.get_cart(req.into_inner().user_id).await.map_err(status)?.into())
    }
    async fn empty_cart(&self, req: Request<pb::UserRequest>) -> Answer<pb::Empty> {
        self.0.empty_cart(req.into_inner().user_id).await.map_err(status)?;
        ok(pb::Empty {})
    }
}

#[tonic::async_trait]
impl pb::product_catalog_service_server::ProductCatalogService
    for Served<dyn boutique::productcatalog::ProductCatalog>
{
    async fn list_products(&self, _: Request<pb::Empty>) -> Answer<pb::ListProductsResponse> {
        let products = self.0.list_products().await.map_err(status)?;
        ok(pb::ListProductsResponse { products: products.into_iter().map(Into::into).collect() })
    }
    async fn get_product(&self, req: Request<pb::GetProductRequest>) -> Answer<pb::Product> {
        ok(self.0.get_product(req.into_inner().id).await.map_err(status)?.into())
    }
    async fn search_products(&self, req: Request<pb::SearchProductsRequest>) -> Answer<pb::ListProductsResponse> {
        let products = self.0.search_products(req.into_inner().query).await.map_err(status)?;
        ok(pb::ListProductsResponse { products: products.into_iter().map(Into::into).collect() })
    }
}

#[tonic::async_trait]
impl pb::currency_service_server::CurrencyService for Served<dyn boutique::currency::Currency> {
    async fn get_supported_currencies(&self, _: Request<pb::Empty>) -> Answer<pb::GetSupportedCurrenciesResponse> {
        ok(pb::GetSupportedCurrenciesResponse { currency_codes: self.0.supported_currencies().await.map_err(status)? })
    }
    async fn convert(&self, req: Request<pb::CurrencyConversionRequest>) -> Answer<pb::Money> {
        let req = req.into_inner();
        ok(self.0.convert(req.from.unwrap_or_default().into(), req.to_code).await.map_err(status)?.into())
    }
}

#[tonic::async_trait]
impl pb::recommendation_service_server::RecommendationService for Served<dyn boutique::recommendation::Recommendation> {
    async fn list_recommendations(
        &self,
        req: Request<pb::ListRecommendationsRequest>,
    ) -> Answer<pb::ListRecommendationsResponse> {
        let req = req.into_inner();
        let product_ids = self.0.list_recommendations(req.user_id, req.product_ids).await.map_err(status)?;
        ok(pb::ListRecommendationsResponse { product_ids })
    }
}

#[tonic::async_trait]
impl pb::shipping_service_server::ShippingService for Served<dyn boutique::shipping::Shipping> {
    async fn get_quote(&self, req: Request<pb::ShippingRequest>) -> Answer<pb::Money> {
        let req = req.into_inner();
        let items = req.items.into_iter().map(Into::into).collect();
        ok(self.0.get_quote(req.address.unwrap_or_default().into(), items).await.map_err(status)?.into())
    }
    async fn ship_order(&self, req: Request<pb::ShippingRequest>) -> Answer<pb::ShipOrderResponse> {
        let req = req.into_inner();
        let items = req.items.into_iter().map(Into::into).collect();
        let tracking_id = self.0.ship_order(req.address.unwrap_or_default().into(), items).await.map_err(status)?;
        ok(pb::ShipOrderResponse { tracking_id })
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for Served<dyn boutique::payment::Payment> {
    async fn charge(&self, req: Request<pb::ChargeRequest>) -> Answer<pb::ChargeResponse> {
        let req = req.into_inner();
        let (amount, card) = (req.amount.unwrap_or_default().into(), req.credit_card.unwrap_or_default().into());
        ok(pb::ChargeResponse { transaction_id: self.0.charge(amount, card).await.map_err(status)? })
    }
}

#[tonic::async_trait]
impl pb::email_service_server::EmailService for Served<dyn boutique::email::Email> {
    async fn send_order_confirmation(&self, req: Request<pb::SendOrderConfirmationRequest>) -> Answer<pb::Empty> {
        let req = req.into_inner();
        self.0.send_order_confirmation(req.email, req.order.unwrap_or_default().into()).await.map_err(status)?;
        ok(pb::Empty {})
    }
    async fn sent_count(&self, _: Request<pb::Empty>) -> Answer<pb::SentCountResponse> {
        ok(pb::SentCountResponse { count: self.0.sent_count().await.map_err(status)? })
    }
}

#[tonic::async_trait]
impl pb::ad_service_server::AdService for Served<dyn boutique::ad::Ad> {
    async fn get_ads(&self, req: Request<pb::AdRequest>) -> Answer<pb::AdResponse> {
        let ads = self.0.get_ads(req.into_inner().context_keys).await.map_err(status)?;
        ok(pb::AdResponse { ads: ads.into_iter().map(Into::into).collect() })
    }
}

#[tonic::async_trait]
impl pb::checkout_service_server::CheckoutService for Served<dyn boutique::checkout::Checkout> {
    async fn place_order(&self, req: Request<pb::PlaceOrderRequest>) -> Answer<pb::PlaceOrderResponse> {
        let order = self.0.place_order(req.into_inner().into()).await.map_err(status)?;
        ok(pb::PlaceOrderResponse { order: Some(order.into()) })
    }
}
