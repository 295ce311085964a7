//! Which services run together: a TOML file of groups, each group one cluster node.
//!
//! ```toml
//! groups = [["currency", "productcatalog"], ["checkout", "payment", "shipping", "email"], ...]
//! ```
//!
//! Every service appears exactly once. A group's node publishes its services, each built
//! with generated clients from that same node for the services it calls: calls within a
//! group take meshrpc's colocated path (in process), calls to other groups cross the mesh.

use std::{fmt, path::Path, str::FromStr, sync::Arc};

use meshrpc::{spec::ServiceSpec, Cluster};
use serde::Deserialize;

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

/// One of the app's services, named as its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// `currency`
    Currency,
    /// `productcatalog`
    ProductCatalog,
    /// `cart`
    Cart,
    /// `shipping`
    Shipping,
    /// `payment`
    Payment,
    /// `email`
    Email,
    /// `ad`
    Ad,
    /// `recommendation` (calls productcatalog)
    Recommendation,
    /// `checkout` (calls cart, productcatalog, currency, shipping, payment, email)
    Checkout,
    /// `frontend` (the shop's JSON API: calls currency, productcatalog, cart,
    /// recommendation, shipping, checkout, ad)
    Frontend,
}

impl Service {
    /// Every service, each after the services it calls (the order a node publishes them
    /// in, so that a client built for a service of the same node finds it published).
    pub const ALL: [Service; 10] = [
        Service::Currency,
        Service::ProductCatalog,
        Service::Cart,
        Service::Shipping,
        Service::Payment,
        Service::Email,
        Service::Ad,
        Service::Recommendation,
        Service::Checkout,
        Service::Frontend,
    ];

    /// The services it calls.
    pub fn dependencies(self) -> &'static [Service] {
        match self {
            Service::Recommendation => &[Service::ProductCatalog],
            Service::Checkout => &[
                Service::Cart,
                Service::ProductCatalog,
                Service::Currency,
                Service::Shipping,
                Service::Payment,
                Service::Email,
            ],
            Service::Frontend => &[
                Service::Currency,
                Service::ProductCatalog,
                Service::Cart,
                Service::Recommendation,
                Service::Shipping,
                Service::Checkout,
                Service::Ad,
            ],
            _ => &[],
        }
    }

    /// Its spec (what `Cluster::wait_for` takes).
    pub fn spec(self) -> &'static ServiceSpec {
        match self {
            Service::Currency => CurrencyClient::SPEC,
            Service::ProductCatalog => ProductCatalogClient::SPEC,
            Service::Cart => CartClient::SPEC,
            Service::Shipping => ShippingClient::SPEC,
            Service::Payment => PaymentClient::SPEC,
            Service::Email => EmailClient::SPEC,
            Service::Ad => AdClient::SPEC,
            Service::Recommendation => RecommendationClient::SPEC,
            Service::Checkout => CheckoutClient::SPEC,
            Service::Frontend => FrontendClient::SPEC,
        }
    }

    /// Its spec in `release` of the code (payment's contract changes in release 2).
    pub fn spec_in(self, release: Release) -> &'static ServiceSpec {
        match (self, release) {
            (Service::Payment, Release::Two) => v2::PaymentClient::SPEC,
            _ => self.spec(),
        }
    }

    /// Its name in placement files (and on the mesh).
    pub fn name(self) -> &'static str {
        match self {
            Service::Currency => "currency",
            Service::ProductCatalog => "productcatalog",
            Service::Cart => "cart",
            Service::Shipping => "shipping",
            Service::Payment => "payment",
            Service::Email => "email",
            Service::Ad => "ad",
            Service::Recommendation => "recommendation",
            Service::Checkout => "checkout",
            Service::Frontend => "frontend",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = ();

    fn from_str(s: &str) -> Result<Service, ()> {
        Service::ALL.into_iter().find(|svc| svc.name() == s).ok_or(())
    }
}

/// What is wrong with a placement, or with starting a group.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or not `groups = [[...], ...]`.
    #[error("not a placement (`groups = [[\"service\", ...], ...]`): {0}")]
    Syntax(String),
    /// A name that is no service of the app.
    #[error("group {group}: unknown service `{name}` (services: {known})")]
    Unknown {
        /// The group's index (from 0).
        group: usize,
        /// The name.
        name: String,
        /// The names that would do.
        known: String,
    },
    /// A service placed twice.
    #[error("service `{service}` is placed twice: in group {first} and in group {second}")]
    Duplicate {
        /// The service.
        service: Service,
        /// The group it is first in.
        first: usize,
        /// The group it is in again.
        second: usize,
    },
    /// Services placed nowhere.
    #[error("services not placed in any group: {}", .0.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "))]
    Missing(Vec<Service>),
    /// A group without services.
    #[error("group {0} is empty")]
    EmptyGroup(usize),
    /// A group index past the last group.
    #[error("no group {index}: the placement has {count} groups (0 to {})", .count.saturating_sub(1))]
    NoSuchGroup {
        /// The index asked for.
        index: usize,
        /// How many groups there are.
        count: usize,
    },
    /// The node could not start.
    #[error("starting the node of group {group}: {source}")]
    Start {
        /// The group.
        group: usize,
        /// Why.
        source: meshrpc::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    groups: Vec<Vec<String>>,
}

/// A valid placement: groups of services, each service in exactly one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    groups: Vec<Vec<Service>>,
}

impl Placement {
    /// Reads and checks a placement file.
    pub fn load(path: impl AsRef<Path>) -> Result<Placement, PlacementError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| PlacementError::Read { path: path.display().to_string(), source })?;
        text.parse()
    }

    /// Checks groups of names.
    pub fn from_groups<S: AsRef<str>>(groups: &[Vec<S>]) -> Result<Placement, PlacementError> {
        let mut placed: Vec<(Service, usize)> = Vec::new();
        let mut out = Vec::with_capacity(groups.len());
        for (group, names) in groups.iter().enumerate() {
            if names.is_empty() {
                return Err(PlacementError::EmptyGroup(group));
            }
            let mut services = Vec::with_capacity(names.len());
            for name in names {
                let name = name.as_ref();
                let service = name.parse::<Service>().map_err(|()| PlacementError::Unknown {
                    group,
                    name: name.to_owned(),
                    known: Service::ALL.map(Service::name).join(", "),
                })?;
                if let Some(&(_, first)) = placed.iter().find(|(s, _)| *s == service) {
                    return Err(PlacementError::Duplicate { service, first, second: group });
                }
                placed.push((service, group));
                services.push(service);
            }
            services.sort(); // in publishing order
            out.push(services);
        }
        let missing: Vec<Service> = Service::ALL.into_iter().filter(|s| !placed.iter().any(|(p, _)| p == s)).collect();
        if !missing.is_empty() {
            return Err(PlacementError::Missing(missing));
        }
        Ok(Placement { groups: out })
    }

    /// Everything in one group.
    pub fn one() -> Placement {
        Placement { groups: vec![Service::ALL.to_vec()] }
    }

    /// One service per group.
    pub fn each() -> Placement {
        Placement { groups: Service::ALL.map(|s| vec![s]).to_vec() }
    }

    /// The groups.
    pub fn groups(&self) -> &[Vec<Service>] {
        &self.groups
    }

    /// The services of group `index`.
    pub fn group(&self, index: usize) -> Result<&[Service], PlacementError> {
        self.groups.get(index).map(Vec::as_slice).ok_or(PlacementError::NoSuchGroup { index, count: self.groups.len() })
    }
}

impl FromStr for Placement {
    type Err = PlacementError;

    fn from_str(text: &str) -> Result<Placement, PlacementError> {
        let file: PlacementFile = toml::from_str(text).map_err(|e| PlacementError::Syntax(e.to_string()))?;
        Placement::from_groups(&file.groups)
    }
}

/// Where a group's node joins: the cluster's tag, seed nodes, its own address.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Cluster tag: nodes with another tag are invisible.
    pub tag: String,
    /// Nodes to join through (`host[:port]`); none for the first node.
    pub seeds: Vec<String>,
    /// Address to serve on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The application version its services run at (`None`: the crate's).
    pub version: Option<String>,
}

/// Starts the node of group `index` of `placement` and publishes its services, each
/// built with clients from this node for the services it calls. Serve it with
/// [`Cluster::serve`] (or `serve_until_signal`).
pub async fn start_group(placement: &Placement, index: usize, node: NodeOptions) -> Result<Cluster, PlacementError> {
    let services = placement.group(index)?;
    let name = format!("boutique-{}", services.iter().map(|s| s.name()).collect::<Vec<_>>().join("+"));
    let mut builder = Cluster::builder(name).tag(node.tag).seeds(&node.seeds).listen(node.listen);
    if let Some(version) = node.version {
        builder = builder.service_version(version);
    }
    let cluster = builder.start().await.map_err(|source| PlacementError::Start { group: index, source })?;
    publish(&cluster, services);
    Ok(cluster)
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

/// Publishes `services` on `cluster`, in dependency order ([`Service::ALL`]), from the
/// release of the code its version says ([`Release::of`]).
pub fn publish(cluster: &Cluster, services: &[Service]) {
    let version = cluster.service_version(FrontendClient::SPEC).to_owned();
    let release = Release::of(&version);
    for service in Service::ALL.into_iter().filter(|s| services.contains(s)) {
        match service {
            Service::Currency => cluster.publish(CurrencyServer::new(FixedRates)),
            Service::ProductCatalog => cluster.publish(ProductCatalogServer::new(StaticCatalog::default())),
            Service::Cart => cluster.publish(CartServer::new(MemoryCart::default())),
            Service::Shipping => cluster.publish(ShippingServer::new(FlatRateShipping)),
            Service::Payment => match release {
                Release::One => cluster.publish(PaymentServer::new(CardPayment::new(&version))),
                Release::Two => cluster.publish(v2::PaymentServer::new(CardPayment::new(&version))),
            },
            Service::Email => cluster.publish(EmailServer::new(CountingEmail::default())),
            Service::Ad => cluster.publish(AdServer::new(KeywordAds)),
            Service::Recommendation => {
                let catalog = Arc::new(ProductCatalogClient::new(cluster.client(ProductCatalogClient::SPEC)));
                cluster.publish(RecommendationServer::new(CatalogRecommender::new(catalog)))
            }
            Service::Checkout => {
                let flow = CheckoutFlow::new(checkout_deps(cluster, release), &version);
                cluster.publish(CheckoutServer::new(flow))
            }
            Service::Frontend => cluster.publish(FrontendServer::new(Shopfront::new(frontend_deps(cluster), &version))),
        };
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

/// The specs of every service, for `Cluster::wait_for`.
pub fn all_specs() -> Vec<&'static ServiceSpec> {
    Service::ALL.map(Service::spec).to_vec()
}

/// Waits until every service that `services` call is reachable from `cluster`: the node
/// of a group is ready when its own calls can go out (a caller's `wait_for` on its own
/// node says nothing of what the checkout node already sees).
pub async fn wait_for_dependencies(
    cluster: &Cluster,
    services: &[Service],
    timeout: std::time::Duration,
) -> Result<(), meshrpc::Error> {
    let release = Release::of(cluster.service_version(FrontendClient::SPEC));
    let mut specs: Vec<&'static ServiceSpec> = Vec::new();
    for dependency in services.iter().flat_map(|s| s.dependencies()) {
        if !specs.iter().any(|s| s.name == dependency.spec().name) {
            specs.push(dependency.spec_in(release));
        }
    }
    cluster.wait_for(&specs, timeout).await
}

/// Waits until the nodes `start_all` returned each reach the services their group calls.
pub async fn wait_all_ready(
    placement: &Placement,
    nodes: &[Cluster],
    timeout: std::time::Duration,
) -> Result<(), meshrpc::Error> {
    for (node, services) in nodes.iter().zip(placement.groups()) {
        wait_for_dependencies(node, services, timeout).await?;
    }
    Ok(())
}

/// Starts every group of `placement` in this process, each its own node on its own port
/// of `ip` (the first with `seeds`, the others joining through the first).
pub async fn start_all(
    placement: &Placement,
    tag: &str,
    seeds: &[String],
    ip: &str,
    version: Option<&str>,
) -> Result<Vec<Cluster>, PlacementError> {
    let mut nodes: Vec<Cluster> = Vec::with_capacity(placement.groups().len());
    for index in 0..placement.groups().len() {
        let seeds = match nodes.first().and_then(Cluster::local_addr) {
            Some(first) => vec![first.to_string()],
            None => seeds.to_vec(),
        };
        let options =
            NodeOptions { tag: tag.to_owned(), seeds, listen: format!("{ip}:0"), version: version.map(str::to_owned) };
        nodes.push(start_group(placement, index, options).await?);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_placements_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/placements");
        assert_eq!(Placement::load(format!("{dir}/one.toml")).unwrap(), Placement::one());
        let each = Placement::load(format!("{dir}/each.toml")).unwrap();
        assert!(each.groups().len() == Service::ALL.len() && each.groups().iter().all(|g| g.len() == 1));
        let three = Placement::load(format!("{dir}/three.toml")).unwrap();
        assert_eq!(
            three.groups()[0],
            [Service::Currency, Service::ProductCatalog, Service::Ad, Service::Recommendation, Service::Frontend]
        );
        assert_eq!(three.groups().len(), 3);
    }

    #[test]
    fn errors_are_precise() {
        let err = |text: &str| text.parse::<Placement>().unwrap_err().to_string();
        let all_but = |skip: &str| {
            Service::ALL.iter().filter(|s| s.name() != skip).map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        };
        assert_eq!(
            err(&format!("groups = [[{}], [\"cart\"]]", all_but("ad"))),
            "service `cart` is placed twice: in group 0 and in group 1"
        );
        assert!(err(&format!("groups = [[{}, \"storefront\"]]", all_but("")))
            .starts_with("group 0: unknown service `storefront`"));
        assert_eq!(err(&format!("groups = [[{}]]", all_but("email"))), "services not placed in any group: email");
        assert_eq!(err(&format!("groups = [[{}], []]", all_but(""))), "group 1 is empty");
        assert!(err("groups = 3").starts_with("not a placement"));
        assert!(err("group = []").starts_with("not a placement"));
        assert_eq!(
            Placement::one().group(1).unwrap_err().to_string(),
            "no group 1: the placement has 1 groups (0 to 0)"
        );
    }
}
