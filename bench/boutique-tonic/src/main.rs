//! `boutique-tonic checkout --listen 127.0.0.1:9009 --peer cart=127.0.0.1:9003 …`: one
//! service of Online Boutique as its own process on tonic; `frontend` serves HTTP JSON.
//! Prints `listening on ADDR` once it accepts connections.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use boutique::{
    ad::KeywordAds,
    cart::MemoryCart,
    checkout::{CheckoutDeps, CheckoutFlow},
    currency::FixedRates,
    email::CountingEmail,
    frontend::{FrontendDeps, Shopfront},
    payment::CardPayment,
    productcatalog::StaticCatalog,
    recommendation::CatalogRecommender,
    shipping::FlatRateShipping,
};
use boutique_tonic::{clients::Remote, pb, servers::Served};
use clap::Parser;
use tonic::transport::{server::TcpIncoming, Channel, Endpoint, Server};

#[derive(Parser)]
#[command(about = "One Online Boutique service on tonic (frontend: HTTP JSON)")]
struct Cli {
    /// The service: currency, productcatalog, cart, recommendation, shipping, payment,
    /// email, ad, checkout or frontend.
    service: String,
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// A service it calls and where: `cart=127.0.0.1:9003` (repeat).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(String, String)>,
}

fn parse_peer(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(n, a)| (n.to_owned(), a.to_owned())).ok_or_else(|| format!("`{s}`: want NAME=ADDR"))
}

/// One channel per peer: tonic's channel multiplexes every call to it over HTTP/2.
struct Peers(HashMap<String, Channel>);

impl Peers {
    fn new(peers: &[(String, String)]) -> Peers {
        let channel = |addr: &str| {
            Endpoint::from_shared(format!("http://{addr}")).expect("a peer address").tcp_nodelay(true).connect_lazy()
        };
        Peers(peers.iter().map(|(name, addr)| (name.clone(), channel(addr))).collect())
    }

    fn get(&self, name: &str) -> Channel {
        self.0.get(name).unwrap_or_else(|| panic!("no --peer {name}=ADDR")).clone()
    }

    fn catalog(&self) -> Arc<Remote<pb::product_catalog_service_client::ProductCatalogServiceClient<Channel>>> {
        Arc::new(Remote(pb::product_catalog_service_client::ProductCatalogServiceClient::new(
            self.get("productcatalog"),
        )))
    }
    fn currency(&self) -> Arc<Remote<pb::currency_service_client::CurrencyServiceClient<Channel>>> {
        Arc::new(Remote(pb::currency_service_client::CurrencyServiceClient::new(self.get("currency"))))
    }
    fn cart(&self) -> Arc<Remote<pb::cart_service_client::CartServiceClient<Channel>>> {
        Arc::new(Remote(pb::cart_service_client::CartServiceClient::new(self.get("cart"))))
    }
    fn shipping(&self) -> Arc<Remote<pb::shipping_service_client::ShippingServiceClient<Channel>>> {
        Arc::new(Remote(pb::shipping_service_client::ShippingServiceClient::new(self.get("shipping"))))
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let peers = Peers::new(&cli.peers);
    let listener = tokio::net::TcpListener::bind(cli.listen).await.expect("the listen address");
    println!("listening on {}", listener.local_addr().expect("bound"));
    if cli.service == "frontend" {
        let deps = FrontendDeps {
            currency: peers.currency(),
            catalog: peers.catalog(),
            cart: peers.cart(),
            recommendation: Arc::new(Remote(pb::recommendation_service_client::RecommendationServiceClient::new(
                peers.get("recommendation"),
            ))),
            shipping: peers.shipping(),
            checkout: Arc::new(Remote(pb::checkout_service_client::CheckoutServiceClient::new(peers.get("checkout")))),
            ad: Arc::new(Remote(pb::ad_service_client::AdServiceClient::new(peers.get("ad")))),
        };
        let router = boutique_tonic::frontend::router(Arc::new(Shopfront::new(deps, "tonic")));
        axum::serve(listener, router).await.expect("serving HTTP");
        return;
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    let server = &mut builder;
    use pb::*;
    let router = match cli.service.as_str() {
        "currency" => {
            server.add_service(currency_service_server::CurrencyServiceServer::new(Served::<
                dyn boutique::currency::Currency,
            >(Arc::new(FixedRates))))
        }
        "productcatalog" => {
            server.add_service(product_catalog_service_server::ProductCatalogServiceServer::new(Served::<
                dyn boutique::productcatalog::ProductCatalog,
            >(
                Arc::new(StaticCatalog::default()),
            )))
        }
        "cart" => server.add_service(cart_service_server::CartServiceServer::new(Served::<dyn boutique::cart::Cart>(
            Arc::new(MemoryCart::default()),
        ))),
        "recommendation" => {
            let recommender = CatalogRecommender::new(peers.catalog());
            server.add_service(recommendation_service_server::RecommendationServiceServer::new(Served::<
                dyn boutique::recommendation::Recommendation,
            >(Arc::new(
                recommender,
            ))))
        }
        "shipping" => server.add_service(shipping_service_server::ShippingServiceServer::new(Served::<
            dyn boutique::shipping::Shipping,
        >(Arc::new(
            FlatRateShipping,
        )))),
        "payment" => server.add_service(payment_service_server::PaymentServiceServer::new(Served::<
            dyn boutique::payment::Payment,
        >(Arc::new(
            CardPayment::new("tonic"),
        )))),
        "email" => {
            server.add_service(email_service_server::EmailServiceServer::new(Served::<dyn boutique::email::Email>(
                Arc::new(CountingEmail::default()),
            )))
        }
        "ad" => server
            .add_service(ad_service_server::AdServiceServer::new(Served::<dyn boutique::ad::Ad>(Arc::new(KeywordAds)))),
        "checkout" => {
            let deps = CheckoutDeps {
                cart: peers.cart(),
                catalog: peers.catalog(),
                currency: peers.currency(),
                shipping: peers.shipping(),
                payment: Arc::new(Remote(payment_service_client::PaymentServiceClient::new(peers.get("payment")))),
                email: Arc::new(Remote(email_service_client::EmailServiceClient::new(peers.get("email")))),
            };
            server.add_service(checkout_service_server::CheckoutServiceServer::new(Served::<
                dyn boutique::checkout::Checkout,
            >(Arc::new(
                CheckoutFlow::new(deps, "tonic"),
            ))))
        }
        other => panic!("no service `{other}`"),
    };
    router.serve_with_incoming(incoming).await.expect("serving gRPC");
}
