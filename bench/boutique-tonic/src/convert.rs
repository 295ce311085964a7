//! The boutique's types to and from their protobuf messages, and its errors to and from
//! gRPC statuses (an application error travels as `FAILED_PRECONDITION` with the error as
//! JSON, so callers get it typed; anything else is a transport failure).

use boutique::{
    ad::Advert,
    cart::{CartItem, UserCart},
    checkout::{OrderItem, OrderResult, PlaceOrderRequest},
    payment::CreditCardInfo,
    productcatalog::Product,
    shipping::Address,
    Money,
};

use crate::pb;

/// A message field protobuf makes optional, present or defaulted.
fn some<T: Default>(field: Option<T>) -> T {
    field.unwrap_or_default()
}

impl From<Money> for pb::Money {
    fn from(m: Money) -> Self {
        pb::Money { currency_code: m.currency_code, units: m.units, nanos: m.nanos }
    }
}
impl From<pb::Money> for Money {
    fn from(m: pb::Money) -> Self {
        Money { currency_code: m.currency_code, units: m.units, nanos: m.nanos }
    }
}

impl From<CartItem> for pb::CartItem {
    fn from(i: CartItem) -> Self {
        pb::CartItem { product_id: i.product_id, quantity: i.quantity }
    }
}
impl From<pb::CartItem> for CartItem {
    fn from(i: pb::CartItem) -> Self {
        CartItem { product_id: i.product_id, quantity: i.quantity }
    }
}

impl From<UserCart> for pb::Cart {
    fn from(c: UserCart) -> Self {
        pb::Cart { user_id: c.user_id, items: c.items.into_iter().map(Into::into).collect() }
    }
}
impl From<pb::Cart> for UserCart {
    fn from(c: pb::Cart) -> Self {
        UserCart { user_id: c.user_id, items: c.items.into_iter().map(Into::into).collect() }
    }
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        pb::Product {
            id: p.id,
            name: p.name,
            description: p.description,
            picture: p.picture,
            price_usd: Some(p.price_usd.into()),
            categories: p.categories,
        }
    }
}
impl From<pb::Product> for Product {
    fn from(p: pb::Product) -> Self {
        Product {
            id: p.id,
            name: p.name,
            description: p.description,
            picture: p.picture,
            price_usd: some(p.price_usd).into(),
            categories: p.categories,
        }
    }
}

impl From<Address> for pb::Address {
    fn from(a: Address) -> Self {
        pb::Address {
            street_address: a.street_address,
            city: a.city,
            state: a.state,
            country: a.country,
            zip_code: a.zip_code,
        }
    }
}
impl From<pb::Address> for Address {
    fn from(a: pb::Address) -> Self {
        Address {
            street_address: a.street_address,
            city: a.city,
            state: a.state,
            country: a.country,
            zip_code: a.zip_code,
        }
    }
}

impl From<CreditCardInfo> for pb::CreditCardInfo {
    fn from(c: CreditCardInfo) -> Self {
        pb::CreditCardInfo {
            credit_card_number: c.credit_card_number,
            credit_card_cvv: c.credit_card_cvv,
            credit_card_expiration_year: c.credit_card_expiration_year,
            credit_card_expiration_month: c.credit_card_expiration_month,
        }
    }
}
impl From<pb::CreditCardInfo> for CreditCardInfo {
    fn from(c: pb::CreditCardInfo) -> Self {
        CreditCardInfo {
            credit_card_number: c.credit_card_number,
            credit_card_cvv: c.credit_card_cvv,
            credit_card_expiration_year: c.credit_card_expiration_year,
            credit_card_expiration_month: c.credit_card_expiration_month,
        }
    }
}

impl From<Advert> for pb::Ad {
    fn from(a: Advert) -> Self {
        pb::Ad { redirect_url: a.redirect_url, text: a.text }
    }
}
impl From<pb::Ad> for Advert {
    fn from(a: pb::Ad) -> Self {
        Advert { redirect_url: a.redirect_url, text: a.text }
    }
}

impl From<OrderItem> for pb::OrderItem {
    fn from(i: OrderItem) -> Self {
        pb::OrderItem { item: Some(i.item.into()), cost: Some(i.cost.into()) }
    }
}
impl From<pb::OrderItem> for OrderItem {
    fn from(i: pb::OrderItem) -> Self {
        OrderItem { item: some(i.item).into(), cost: some(i.cost).into() }
    }
}

impl From<OrderResult> for pb::OrderResult {
    fn from(o: OrderResult) -> Self {
        pb::OrderResult {
            order_id: o.order_id,
            shipping_tracking_id: o.shipping_tracking_id,
            shipping_cost: Some(o.shipping_cost.into()),
            shipping_address: Some(o.shipping_address.into()),
            items: o.items.into_iter().map(Into::into).collect(),
            total: Some(o.total.into()),
            transaction_id: o.transaction_id,
        }
    }
}
impl From<pb::OrderResult> for OrderResult {
    fn from(o: pb::OrderResult) -> Self {
        OrderResult {
            order_id: o.order_id,
            shipping_tracking_id: o.shipping_tracking_id,
            shipping_cost: some(o.shipping_cost).into(),
            shipping_address: some(o.shipping_address).into(),
            items: o.items.into_iter().map(Into::into).collect(),
            total: some(o.total).into(),
            transaction_id: o.transaction_id,
        }
    }
}

impl From<PlaceOrderRequest> for pb::PlaceOrderRequest {
    fn from(r: PlaceOrderRequest) -> Self {
        pb::PlaceOrderRequest {
            user_id: r.user_id,
            user_currency: r.user_currency,
            address: Some(r.address.into()),
            email: r.email,
            credit_card: Some(r.credit_card.into()),
        }
    }
}
impl From<pb::PlaceOrderRequest> for PlaceOrderRequest {
    fn from(r: pb::PlaceOrderRequest) -> Self {
        PlaceOrderRequest {
            user_id: r.user_id,
            user_currency: r.user_currency,
            address: some(r.address).into(),
            email: r.email,
            credit_card: some(r.credit_card).into(),
        }
    }
}

/// An application error as a status: `FAILED_PRECONDITION`, the error as JSON.
pub(crate) fn status<E: serde::Serialize + std::fmt::Display>(e: E) -> tonic::Status {
    match serde_json::to_string(&e) {
        Ok(json) => tonic::Status::failed_precondition(json),
        Err(_) => tonic::Status::internal(e.to_string()),
    }
}

/// A status as the caller's error: its application error when the status carries one,
/// else a transport failure.
pub(crate) fn error<E: serde::de::DeserializeOwned + From<meshrpc::Error>>(s: tonic::Status) -> E {
    if s.code() == tonic::Code::FailedPrecondition {
        if let Ok(e) = serde_json::from_str(s.message()) {
            return e;
        }
    }
    E::from(meshrpc::Error::unavailable(format!("gRPC {:?}: {}", s.code(), s.message())))
}
