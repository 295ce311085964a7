//! Online Boutique (examples/boutique), one test body against three placements of the same
//! code (`meshrpc_tests::placements`): (a) one process, one node publishing everything
//! (calls between services take the colocated path); (b) one process, one node per service
//! over real sockets on loopback; (c) one OS process per service, from the `boutique`
//! binary. And the whole app in one command: the binary without `--group`, `three.toml`.

use std::time::{Duration, Instant};

use boutique::{
    cart::{CartClient, CartItem, UserCart},
    checkout::{CheckoutClient, CheckoutError, OrderItem, PlaceOrderRequest},
    currency::CurrencyClient,
    email::EmailClient,
    frontend::{CheckoutForm, FrontendClient, FrontendError, Session},
    payment::{CreditCardInfo, PaymentError},
    productcatalog::{CatalogError, ProductCatalogClient},
    shipping::Address,
    Money,
};
use meshrpc::{Cluster, ClusterBuilder};
use meshrpc_tests::{
    harness::{http, Node},
    placements::{three_placements, Placed},
};

use boutique::cart::Cart as _;
use boutique::checkout::Checkout as _;
use boutique::currency::Currency as _;
use boutique::email::Email as _;
use boutique::frontend::Frontend as _;
use boutique::productcatalog::ProductCatalog as _;

const BOUTIQUE: &str = env!("CARGO_BIN_EXE_boutique-example");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const THREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/boutique/placements/three.toml");

/// How long the services may take to become reachable, and the body to run.
const READY_WITHIN: Duration = Duration::from_secs(15);
const BODY_WITHIN: Duration = Duration::from_secs(30);

/// What a user of the app holds: clients of the services it calls.
struct Shop {
    checkout: CheckoutClient,
    cart: CartClient,
    catalog: ProductCatalogClient,
    currency: CurrencyClient,
    email: EmailClient,
    frontend: FrontendClient,
}

impl Shop {
    /// Clients over `cluster`, once every service answers there.
    async fn over(cluster: &Cluster) -> Shop {
        let started = Instant::now();
        cluster.wait_for(&boutique::placement::app().specs(), READY_WITHIN).await.expect("every service reachable");
        eprintln!("  services reachable after {:?}", started.elapsed());
        Shop {
            checkout: CheckoutClient::new(cluster.client(CheckoutClient::SPEC)),
            cart: CartClient::new(cluster.client(CartClient::SPEC)),
            catalog: ProductCatalogClient::new(cluster.client(ProductCatalogClient::SPEC)),
            currency: CurrencyClient::new(cluster.client(CurrencyClient::SPEC)),
            email: EmailClient::new(cluster.client(EmailClient::SPEC)),
            frontend: FrontendClient::new(cluster.client(FrontendClient::SPEC)),
        }
    }
}

/// A client-only node that joins the app through `seed`.
async fn shopper(tag: &str, seed: std::net::SocketAddr) -> Cluster {
    ClusterBuilder::from_env("shopper").tag(tag).seeds([seed.to_string()]).start().await.expect("the shopper joins")
}

fn euro(units: i64, nanos: i32) -> Money {
    Money::new("EUR", units, nanos).unwrap()
}

fn address() -> Address {
    Address {
        street_address: "1600 Amphitheatre Parkway".into(),
        city: "Mountain View".into(),
        state: "CA".into(),
        country: "United States".into(),
        zip_code: 94043,
    }
}

fn card(number: &str) -> CreditCardInfo {
    CreditCardInfo {
        credit_card_number: number.into(),
        credit_card_cvv: 672,
        credit_card_expiration_year: 2099,
        credit_card_expiration_month: 1,
    }
}

fn order(user: &str, card_number: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        user_id: user.into(),
        user_currency: "EUR".into(),
        address: address(),
        email: "someone@example.com".into(),
        credit_card: card(card_number),
    }
}

/// The test body: what a user sees, whatever the placement.
async fn shop(s: &Shop) {
    let user = "alice";
    let products = s.catalog.list_products().await.unwrap();
    assert_eq!(products.len(), 10, "the catalog lists ten products");
    let (sunglasses, loafers) = (&products[0], &products[3]);
    assert_eq!((sunglasses.name.as_str(), loafers.name.as_str()), ("Sunglasses", "Loafers"));
    assert_eq!(sunglasses.price_usd, Money::new("USD", 19, 990_000_000).unwrap());

    s.cart.add_item(user.into(), CartItem { product_id: sunglasses.id.clone(), quantity: 2 }).await.unwrap();
    s.cart.add_item(user.into(), CartItem { product_id: loafers.id.clone(), quantity: 1 }).await.unwrap();
    let cart = s.cart.get_cart(user.into()).await.unwrap();
    let bought = vec![
        CartItem { product_id: sunglasses.id.clone(), quantity: 2 },
        CartItem { product_id: loafers.id.clone(), quantity: 1 },
    ];
    assert_eq!(cart, UserCart { user_id: user.into(), items: bought.clone() });

    // 19.99 USD at 1.1305 USD per EUR: 17.682441397… EUR, to the nano toward zero.
    let sunglasses_eur = s.currency.convert(sunglasses.price_usd.clone(), "EUR".into()).await.unwrap();
    assert_eq!(sunglasses_eur, euro(17, 682_441_397));
    let loafers_eur = s.currency.convert(loafers.price_usd.clone(), "EUR".into()).await.unwrap();
    assert_eq!(loafers_eur, euro(79, 601_946_041)); // 89.99 USD
    let shipping_eur = euro(7, 952_233_524); // the flat 8.99 USD

    let sent_before = s.email.sent_count().await.unwrap();
    let placed = s.checkout.place_order(order(user, "4432-8015-6152-0454")).await.expect("the order is placed");
    assert_eq!(
        placed.items,
        vec![
            OrderItem { item: bought[0].clone(), cost: sunglasses_eur.clone() },
            OrderItem { item: bought[1].clone(), cost: loafers_eur.clone() },
        ]
    );
    assert!(placed.shipping_tracking_id.starts_with("TRKUN"), "tracking id {}", placed.shipping_tracking_id);
    assert!(placed.order_id.starts_with("ord-") && placed.transaction_id.starts_with("txn-"), "{placed:?}");
    assert_eq!(placed.shipping_cost, shipping_eur);
    assert_eq!(placed.shipping_address, address());
    // 2 × 17.682441397 + 79.601946041 + 7.952233524 = 122.919062359 EUR: nanos carry into units.
    let expected = 2 * sunglasses_eur.total_nanos() + loafers_eur.total_nanos() + shipping_eur.total_nanos();
    assert_eq!(expected, 122_919_062_359);
    assert_eq!(placed.total, euro(122, 919_062_359));
    assert_eq!(s.cart.get_cart(user.into()).await.unwrap().items, vec![], "the cart is empty after the order");
    assert_eq!(s.email.sent_count().await.unwrap(), sent_before + 1, "one confirmation more");

    // A bad card number: the payment service's own error reaches the caller, typed, and the
    // cart is kept.
    s.cart.add_item(user.into(), bought[1].clone()).await.unwrap();
    let refused = s.checkout.place_order(order(user, "4432-8015-6152-0455")).await;
    assert_eq!(refused, Err(CheckoutError::Payment(PaymentError::InvalidCardNumber { last4: "0455".into() })));
    let mut expired = order(user, "4432801561520454");
    expired.credit_card.credit_card_expiration_year = 2020;
    let refused = s.checkout.place_order(expired).await;
    assert_eq!(refused, Err(CheckoutError::Payment(PaymentError::Expired { month: 1, year: 2020 })));
    assert_eq!(s.cart.get_cart(user.into()).await.unwrap().items, vec![bought[1].clone()], "the cart is kept");
    assert_eq!(s.email.sent_count().await.unwrap(), sent_before + 1, "no confirmation for a refused order");

    // The frontend composes the others: the pages a shopper's browser gets.
    let f = &s.frontend;
    let session = Session { user_id: "bob".into(), currency: "USD".into() };
    let unsupported = f.set_currency(session.clone(), "XYZ".into()).await;
    assert_eq!(unsupported, Err(FrontendError::UnsupportedCurrency("XYZ".into())));
    let session = f.set_currency(session, "EUR".into()).await.unwrap();
    assert_eq!(session.currency, "EUR");
    let home = f.home(session.clone()).await.unwrap();
    assert_eq!((home.products.len(), home.cart_size), (10, 0));
    assert_eq!(home.products[0].price, sunglasses_eur);
    assert!(home.currencies.contains(&"EUR".to_owned()) && home.ad.is_some(), "{home:?}");
    let page = f.product(session.clone(), sunglasses.id.clone()).await.unwrap();
    assert_eq!(page.product.price, sunglasses_eur);
    assert_eq!(page.recommendations.len(), 5);
    assert!(!page.recommendations.contains(&sunglasses.id), "{:?}", page.recommendations);
    let missing = f.add_to_cart(session.clone(), "NOSUCHTHING".into(), 1).await;
    assert_eq!(missing, Err(FrontendError::Catalog(CatalogError::NotFound("NOSUCHTHING".into()))));
    assert_eq!(f.add_to_cart(session.clone(), sunglasses.id.clone(), 2).await.unwrap().cart_size, 2);
    let cart = f.view_cart(session.clone()).await.unwrap();
    assert_eq!((cart.items.len(), cart.items[0].quantity, &cart.shipping_cost), (1, 2, &shipping_eur));
    // 2 × 17.682441397 + 7.952233524 EUR.
    assert_eq!(cart.total, euro(43, 317_116_318));
    let form =
        CheckoutForm { email: "bob@example.com".into(), address: address(), credit_card: card("4432801561520454") };
    let placed = f.checkout(session.clone(), form).await.expect("the order is placed through the frontend");
    assert_eq!(placed.order.total, cart.total);
    assert_eq!(f.home(session).await.unwrap().cart_size, 0, "the cart is empty after the order");
    // Every page names the application version that served it.
    assert!([&home.version, &page.version, &cart.version].iter().all(|v| **v == placed.version), "{home:?}");
}

/// Waits for a `boutique` process's `ready` line: its nodes reach the services they call.
async fn ready(node: &Node) {
    let ready = node.line("ready", READY_WITHIN).await;
    assert!(ready.is_some(), "{} not ready within {READY_WITHIN:?}: {:?}", node.addr, node.output());
}

fn tag(kind: &str) -> String {
    format!("boutique-{kind}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shop_in_three_placements() {
    three_placements(&boutique::placement::app(), BOUTIQUE, "boutique", BODY_WITHIN, |placed, caller| async move {
        let shop_ = Shop::over(&caller).await;
        // In one node the clients call the implementations in process; else over the mesh.
        let colocated = format!("colocated: {}", placed == Placed::OneNode);
        assert!(format!("{:?}", shop_.checkout).contains(&colocated), "{placed:?}: {:?}", shop_.checkout);
        shop(&shop_).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_app_in_one_command() {
    let tag = tag("command");
    // Without `--group`: every group of the file in one process, each its own node.
    let app = Node::start(BOUTIQUE, &["--placement", THREE, "--listen-addr", "127.0.0.1:0", "--tag", &tag]).await;
    ready(&app).await;
    let caller = shopper(&tag, app.addr).await;
    let shop_ = Shop::over(&caller).await;
    tokio::time::timeout(BODY_WITHIN, shop(&shop_)).await.expect("the shopping finishes in time");
    let groups = app.output().iter().filter(|l| l.contains(" serves ")).count();
    assert_eq!(groups, 3, "{:?}", app.output());

    // The frontend is the shop's JSON API behind the gateway: `POST /frontend/<method>`.
    let seed = app.addr.to_string();
    let gateway_args =
        ["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", &tag, "--nodes", &seed];
    let gateway = Node::start(MESHRPC, &gateway_args).await;
    let session = serde_json::json!({ "user_id": "carol", "currency": "USD" });
    let post = |path: &str, body: serde_json::Value| {
        let url = gateway.url(path);
        async move {
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                let answer = http("POST", &url, body.to_string(), &[("content-type", "application/json")]).await;
                // The gateway learns the app by gossip: until then it says so.
                let learning = answer.status == 503 || answer.body.contains("unknown_service");
                if !learning || Instant::now() > deadline {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let home = post("/frontend/home", serde_json::json!({ "session": session })).await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.json()["data"]["products"].as_array().map(Vec::len), Some(10));
    let session = post("/frontend/set_currency", serde_json::json!({ "session": session, "currency": "EUR" })).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let session = session.json()["data"].clone();
    let added = serde_json::json!({ "session": session, "product_id": "OLJCESPC7Z", "quantity": 2 });
    assert_eq!(post("/frontend/add_to_cart", added).await.json()["data"]["cart_size"], 2);
    let cart = post("/frontend/view_cart", serde_json::json!({ "session": session })).await.json();
    assert_eq!(cart["data"]["total"], serde_json::json!({ "currency_code": "EUR", "units": 43, "nanos": 317_116_318 }));
    let form = serde_json::json!({
        "email": "carol@example.com",
        "address": address(),
        "credit_card": card("4432-8015-6152-0455"),
    });
    let refused = post("/frontend/checkout", serde_json::json!({ "session": session, "form": form })).await;
    // The app's own error, typed, through the gateway (not a 500).
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("InvalidCardNumber"), "{}", refused.body);
}
