//! The boutique as a [`meshrpc::app::App`]: its ten services, each with the services it
//! calls and how a node publishes it. A placement file says which share a node:
//!
//! ```toml
//! groups = [["currency", "productcatalog"], ["checkout", "payment", "shipping", "email"], ...]
//! ```
//!
//! Every service is built with generated clients from its own node for the services it
//! calls: calls within a group take meshrpc's colocated path (in process), calls to other
//! groups cross the mesh.

use std::sync::Arc;

use meshrpc::{
    app::{App, Component},
    Cluster,
};

use crate::{
    ad::{AdClient, AdServer, KeywordAds},
    cart::{CartClient, CartServer, MemoryCart},
    checkout::{CheckoutClient, CheckoutDeps, CheckoutFlow, CheckoutServer},
    currency::{CurrencyClient, CurrencyServer, FixedRates},
    email::{CountingEmail, EmailClient, EmailServer},
    frontend::{FrontendClient, FrontendDeps, FrontendServer, Shopfront},
    payment::{v2, CardPayment, PaymentClient, PaymentServer},
    productcatalog::{ProductCatalogClient, ProductCatalogServer, StaticCatalog},
    recommendation::{CatalogRecommender, RecommendationClient, RecommendationServer},
    shipping::{FlatRateShipping, ShippingClient, ShippingServer},
};

/// The app: every service, each after the services it calls.
pub fn app() -> App {
    App::new("boutique")
        .with(Component::new(CurrencyClient::SPEC, |node| {
            node.publish(CurrencyServer::new(FixedRates));
        }))
        .with(Component::new(ProductCatalogClient::SPEC, |node| {
            node.publish(ProductCatalogServer::new(StaticCatalog::default()));
        }))
        .with(Component::new(CartClient::SPEC, |node| {
            node.publish(CartServer::new(MemoryCart::default()));
        }))
        .with(Component::new(ShippingClient::SPEC, |node| {
            node.publish(ShippingServer::new(FlatRateShipping));
        }))
        .with(
            Component::new(PaymentClient::SPEC, |node| {
                let version = version(node);
                match Release::of(&version) {
                    Release::One => node.publish(PaymentServer::new(CardPayment::new(&version))),
                    Release::Two => node.publish(v2::PaymentServer::new(CardPayment::new(&version))),
                };
            })
            .contract_at("v2", v2::PaymentClient::SPEC),
        )
        .with(Component::new(EmailClient::SPEC, |node| {
            node.publish(EmailServer::new(CountingEmail::default()));
        }))
        .with(Component::new(AdClient::SPEC, |node| {
            node.publish(AdServer::new(KeywordAds));
        }))
        .with(
            Component::new(RecommendationClient::SPEC, |node| {
                let catalog = Arc::new(ProductCatalogClient::new(node.client(ProductCatalogClient::SPEC)));
                node.publish(RecommendationServer::new(CatalogRecommender::new(catalog)));
            })
            .calls(&[ProductCatalogClient::SPEC]),
        )
        .with(
            Component::new(CheckoutClient::SPEC, |node| {
                let version = version(node);
                let flow = CheckoutFlow::new(checkout_deps(node, Release::of(&version)), &version);
                node.publish(CheckoutServer::new(flow));
            })
            .calls(&[
                CartClient::SPEC,
                ProductCatalogClient::SPEC,
                CurrencyClient::SPEC,
                ShippingClient::SPEC,
                PaymentClient::SPEC,
                EmailClient::SPEC,
            ]),
        )
        .with(
            Component::new(FrontendClient::SPEC, |node| {
                node.publish(FrontendServer::new(Shopfront::new(frontend_deps(node), version(node))));
            })
            .calls(&[
                CurrencyClient::SPEC,
                ProductCatalogClient::SPEC,
                CartClient::SPEC,
                RecommendationClient::SPEC,
                ShippingClient::SPEC,
                CheckoutClient::SPEC,
                AdClient::SPEC,
            ]),
        )
}

/// The application version `node` runs its services at.
fn version(node: &Cluster) -> String {
    node.service_version(FrontendClient::SPEC).to_owned()
}

/// Which release of the code a node runs: this binary carries two, so that a rollout can
/// be shown from one build. Release 2 (application version `v2`) changes the payment
/// contract ([`v2`]); every other version runs release 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The first release.
    One,
    /// Payment charges carry an idempotency key and answer receipts.
    Two,
}

impl Release {
    /// The release a node running application `version` runs.
    pub fn of(version: &str) -> Release {
        if version == "v2" {
            Release::Two
        } else {
            Release::One
        }
    }
}

/// Checkout's dependencies as generated clients over `cluster`, payment's of `release`.
pub fn checkout_deps(cluster: &Cluster, release: Release) -> CheckoutDeps {
    let payment: Arc<dyn crate::payment::Payment> = match release {
        Release::One => Arc::new(PaymentClient::new(cluster.client(PaymentClient::SPEC))),
        Release::Two => {
            Arc::new(v2::AsRelease1(Arc::new(v2::PaymentClient::new(cluster.client(v2::PaymentClient::SPEC)))))
        }
    };
    CheckoutDeps {
        cart: Arc::new(CartClient::new(cluster.client(CartClient::SPEC))),
        catalog: Arc::new(ProductCatalogClient::new(cluster.client(ProductCatalogClient::SPEC))),
        currency: Arc::new(CurrencyClient::new(cluster.client(CurrencyClient::SPEC))),
        shipping: Arc::new(ShippingClient::new(cluster.client(ShippingClient::SPEC))),
        payment,
        email: Arc::new(EmailClient::new(cluster.client(EmailClient::SPEC))),
    }
}

/// The frontend's dependencies as generated clients over `cluster`.
pub fn frontend_deps(cluster: &Cluster) -> FrontendDeps {
    FrontendDeps {
        currency: Arc::new(CurrencyClient::new(cluster.client(CurrencyClient::SPEC))),
        catalog: Arc::new(ProductCatalogClient::new(cluster.client(ProductCatalogClient::SPEC))),
        cart: Arc::new(CartClient::new(cluster.client(CartClient::SPEC))),
        recommendation: Arc::new(RecommendationClient::new(cluster.client(RecommendationClient::SPEC))),
        shipping: Arc::new(ShippingClient::new(cluster.client(ShippingClient::SPEC))),
        checkout: Arc::new(CheckoutClient::new(cluster.client(CheckoutClient::SPEC))),
        ad: Arc::new(AdClient::new(cluster.client(AdClient::SPEC))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_placements_are_valid() {
        let (app, dir) = (app(), concat!(env!("CARGO_MANIFEST_DIR"), "/placements"));
        assert_eq!(app.load_placement(format!("{dir}/one.toml")).unwrap(), app.one_group());
        let each = app.load_placement(format!("{dir}/each.toml")).unwrap();
        assert!(each.groups().len() == app.services().len() && each.groups().iter().all(|g| g.len() == 1));
        let three = app.load_placement(format!("{dir}/three.toml")).unwrap();
        assert_eq!(three.groups()[0], ["currency", "productcatalog", "ad", "recommendation", "frontend"]);
        assert_eq!(three.groups().len(), 3);
    }
}
