//! An application: many services in one binary, placed into nodes by configuration.
//!
//! Write the app once as services that call each other through generated clients over
//! [`Cluster::client`]; register each as a [`Component`] of an [`App`]; a [`Placement`]
//! (a TOML file) then says which services share a node. Calls between services of one
//! node take the colocated path (a method call in process); calls to other nodes cross
//! the mesh. Moving a service to another group changes no code and needs no rebuild.
//!
//! ```no_run
//! use std::sync::Arc;
//! use meshrpc::app::{App, Component};
//!
//! #[meshrpc::service]
//! pub trait Greeter {
//!     async fn hello(&self, name: String) -> Result<String, meshrpc::Error>;
//! }
//! #[meshrpc::service]
//! pub trait Front {
//!     async fn page(&self) -> Result<String, meshrpc::Error>;
//! }
//! struct Hello;
//! #[meshrpc::async_trait]
//! impl Greeter for Hello {
//!     async fn hello(&self, name: String) -> Result<String, meshrpc::Error> {
//!         Ok(format!("Hello, {name}"))
//!     }
//! }
//! struct Page(Arc<dyn Greeter>);
//! #[meshrpc::async_trait]
//! impl Front for Page {
//!     async fn page(&self) -> Result<String, meshrpc::Error> {
//!         self.0.hello("you".into()).await
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), meshrpc::app::AppError> {
//!     let app = App::new("shop")
//!         .with(Component::new(GreeterClient::SPEC, |node| {
//!             node.publish(GreeterServer::new(Hello));
//!         }))
//!         .with(
//!             Component::new(FrontClient::SPEC, |node| {
//!                 // A generated client from the same node: in process when the
//!                 // placement puts the greeter here too, over the mesh otherwise.
//!                 let greeter = Arc::new(GreeterClient::new(node.client(GreeterClient::SPEC)));
//!                 node.publish(FrontServer::new(Page(greeter)));
//!             })
//!             .calls(&[GreeterClient::SPEC]),
//!         );
//!     // MESHRPC_PLACEMENT=placement.toml MESHRPC_PLACEMENT_GROUP=1 ./shop
//!     app.run_from_env().await
//! }
//! ```

mod placement;

use std::{path::Path, sync::Arc, time::Duration};

pub use placement::{AppError, Placement};

use crate::{
    cluster::{Cluster, ClusterBuilder},
    spec::ServiceSpec,
};

/// One service of an [`App`]: its contract, the services it calls, and how a node
/// publishes it.
#[derive(Clone)]
pub struct Component {
    spec: &'static ServiceSpec,
    calls: Vec<&'static str>,
    contracts: Vec<(String, &'static ServiceSpec)>,
    publish: Arc<dyn Fn(&Cluster) + Send + Sync>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component").field("service", &self.spec.name).field("calls", &self.calls).finish()
    }
}

impl Component {
    /// The service of `spec`, published on a node by `publish` (which builds the
    /// implementation, with clients from that same node for the services it calls).
    pub fn new(spec: &'static ServiceSpec, publish: impl Fn(&Cluster) + Send + Sync + 'static) -> Component {
        Component { spec, calls: Vec::new(), contracts: Vec::new(), publish: Arc::new(publish) }
    }

    /// The services it calls: a node of its group is ready once they are reachable.
    pub fn calls(mut self, specs: &[&'static ServiceSpec]) -> Component {
        self.calls.extend(specs.iter().map(|s| s.name));
        self
    }

    /// Its contract at application `version`, when that release of the code changed it
    /// (its callers at that version wait for this contract, not the default one).
    ///
    /// # Panics
    /// If `spec` is another service's.
    pub fn contract_at(mut self, version: impl Into<String>, spec: &'static ServiceSpec) -> Component {
        assert_eq!(
            spec.name, self.spec.name,
            "a contract of `{}` at a version must be the same service",
            self.spec.name
        );
        self.contracts.push((version.into(), spec));
        self
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Its contract at `version` (`None`: the crate's own).
    fn spec_at(&self, version: Option<&str>) -> &'static ServiceSpec {
        let at = |(v, _): &&(String, &'static ServiceSpec)| Some(v.as_str()) == version;
        self.contracts.iter().find(at).map_or(self.spec, |(_, spec)| spec)
    }
}

/// An application's services, and how to run any placement of them.
#[derive(Debug, Clone)]
pub struct App {
    name: String,
    components: Vec<Component>,
}

impl App {
    /// An app named `name` (its nodes are named `{name}-{service}+{service}…`).
    pub fn new(name: impl Into<String>) -> App {
        App { name: name.into(), components: Vec::new() }
    }

    /// Adds a service. Add each after the services it calls: a node publishes its
    /// services in this order, so a client built for a service of the same node finds
    /// it published and takes the colocated path.
    ///
    /// # Panics
    /// If the service is already in the app, or calls one not added before it (a
    /// mistake in the code, like a conflicting route in axum).
    pub fn with(mut self, component: Component) -> App {
        let name = component.name();
        assert!(self.components.iter().all(|c| c.name() != name), "service `{name}` is in the app twice");
        for called in &component.calls {
            assert!(
                self.components.iter().any(|c| c.name() == *called),
                "service `{name}` calls `{called}`, which is not in the app before it"
            );
        }
        self.components.push(component);
        self
    }

    /// The services' names, in publishing order.
    pub fn services(&self) -> Vec<&'static str> {
        self.components.iter().map(Component::name).collect()
    }

    /// The specs of every service (what [`Cluster::wait_for`] takes).
    pub fn specs(&self) -> Vec<&'static ServiceSpec> {
        self.components.iter().map(|c| c.spec).collect()
    }

    /// Checks a placement file's text (`groups = [["a", "b"], ["c"]]`).
    pub fn placement(&self, toml: &str) -> Result<Placement, AppError> {
        Placement::parse(&self.services(), toml)
    }

    /// Reads and checks a placement file.
    pub fn load_placement(&self, path: impl AsRef<Path>) -> Result<Placement, AppError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| AppError::Read { path: path.display().to_string(), source })?;
        self.placement(&text)
    }

    /// Checks groups of names.
    pub fn placement_of<S: AsRef<str>>(&self, groups: &[Vec<S>]) -> Result<Placement, AppError> {
        Placement::check(&self.services(), groups)
    }

    /// Every service in one group: the monolith.
    pub fn one_group(&self) -> Placement {
        Placement { groups: vec![self.services()] }
    }

    /// One service per group: microservices.
    pub fn group_each(&self) -> Placement {
        Placement { groups: self.services().into_iter().map(|s| vec![s]).collect() }
    }

    fn component(&self, name: &str) -> &Component {
        self.components.iter().find(|c| c.name() == name).expect("a placement holds the app's services only")
    }

    /// Starts the node of group `index` from `node` (its tag, seeds, address, TLS, …;
    /// the app names it) and publishes the group's services. Serve it with
    /// [`Cluster::serve`] or [`Cluster::serve_until_signal`].
    pub async fn start_group(
        &self,
        placement: &Placement,
        index: usize,
        mut node: ClusterBuilder,
    ) -> Result<Cluster, AppError> {
        let services = placement.group(index)?;
        node.name = format!("{}-{}", self.name, services.join("+"));
        let cluster = node.start().await.map_err(|source| AppError::Start { group: index, source })?;
        for name in services {
            (self.component(name).publish)(&cluster);
        }
        Ok(cluster)
    }

    /// Starts every group of `placement` in this process, each its own node built by
    /// `node`: the first listens where that builder says, the others on the same IP, a
    /// free port each, and join through the first.
    pub async fn start_all(
        &self,
        placement: &Placement,
        node: impl Fn() -> ClusterBuilder,
    ) -> Result<Vec<Cluster>, AppError> {
        let mut nodes: Vec<Cluster> = Vec::with_capacity(placement.groups().len());
        for index in 0..placement.groups().len() {
            let mut builder = node();
            if let Some(first) = nodes.first().and_then(Cluster::local_addr) {
                builder = builder.seeds([first.to_string()]);
                if let Some(listen) = &builder.listen {
                    let ip = listen.rsplit_once(':').map_or(listen.as_str(), |(ip, _)| ip);
                    builder.listen = Some(format!("{ip}:0"));
                }
            }
            nodes.push(self.start_group(placement, index, builder).await?);
        }
        Ok(nodes)
    }

    /// Waits until every service that group `index`'s services call is reachable from
    /// `node` (at the contract of `node`'s application version).
    pub async fn wait_ready(
        &self,
        placement: &Placement,
        index: usize,
        node: &Cluster,
        timeout: Duration,
    ) -> Result<(), crate::Error> {
        let version = node.version_override();
        let mut specs: Vec<&'static ServiceSpec> = Vec::new();
        let services = placement.group(index).map_err(|e| crate::Error::bad_request(e.to_string()))?;
        for called in services.iter().flat_map(|s| &self.component(s).calls) {
            if !specs.iter().any(|s| s.name == *called) {
                specs.push(self.component(called).spec_at(version));
            }
        }
        node.wait_for(&specs, timeout).await
    }

    /// [`wait_ready`](Self::wait_ready) for the nodes [`start_all`](Self::start_all) returned.
    pub async fn wait_all_ready(
        &self,
        placement: &Placement,
        nodes: &[Cluster],
        timeout: Duration,
    ) -> Result<(), crate::Error> {
        for (index, node) in nodes.iter().enumerate() {
            self.wait_ready(placement, index, node, timeout).await?;
        }
        Ok(())
    }

    /// A binary's main: starts group `group` of `placement` (or, without one, every group
    /// in this process) from `node`, prints `ADDR serves a, b` per node, then
    /// `listening on ADDR` (the first node: the one to join through), then `ready` once
    /// every node reaches the services its group calls (or what it still misses after a
    /// minute), and serves until SIGINT/SIGTERM, then drains.
    pub async fn run(
        &self,
        placement: &Placement,
        group: Option<usize>,
        node: impl Fn() -> ClusterBuilder,
    ) -> Result<(), AppError> {
        let (nodes, first) = match group {
            Some(index) => (vec![self.start_group(placement, index, node()).await?], index),
            None => (self.start_all(placement, node).await?, 0),
        };
        for (offset, node) in nodes.iter().enumerate() {
            let services = placement.group(first + offset)?;
            println!("{} serves {}", addr(node), services.join(", "));
        }
        println!("listening on {}", addr(&nodes[0]));
        let ready = (self.clone(), placement.clone(), nodes.clone());
        tokio::spawn(async move {
            let (app, placement, nodes) = ready;
            let wait = Duration::from_secs(60);
            let mut waited = Ok(());
            for (offset, node) in nodes.iter().enumerate() {
                waited = waited.and(app.wait_ready(&placement, first + offset, node, wait).await);
            }
            match waited {
                Ok(()) => println!("ready"),
                Err(e) => eprintln!("{}: not ready: {e}", app.name),
            }
        });
        let served: Vec<_> =
            nodes.into_iter().map(|node| tokio::spawn(async move { node.serve_until_signal().await })).collect();
        for node in served {
            node.await.map_err(|e| AppError::Serve(crate::Error::internal(e.to_string())))?.map_err(AppError::Serve)?;
        }
        Ok(())
    }

    /// [`run`](Self::run) as the environment says: `MESHRPC_PLACEMENT` (the file; without
    /// it, every service in one node), `MESHRPC_PLACEMENT_GROUP` (without it, every
    /// group), `MESHRPC_CLUSTER_NODES`, `MESHRPC_LISTEN_ADDR` (default `127.0.0.1:0`),
    /// `MESHRPC_CLUSTER_TAGNAME` (default: the app's name), and what
    /// [`ClusterBuilder::from_env`] reads (`MESHRPC_SERVICE_VERSION`, …).
    pub async fn run_from_env(&self) -> Result<(), AppError> {
        let settings = RunSettings::from_env()?;
        let placement = match &settings.placement {
            Some(path) => self.load_placement(path)?,
            None => self.one_group(),
        };
        let tag = settings.tag.clone().unwrap_or_else(|| self.name.clone());
        let node =
            || ClusterBuilder::from_env(&self.name).seeds_from_env().tag(tag.clone()).listen(settings.listen.clone());
        self.run(&placement, settings.group, node).await
    }
}

/// What [`App::run_from_env`] reads (env.rs reads it).
pub(crate) struct RunSettings {
    pub(crate) placement: Option<std::path::PathBuf>,
    pub(crate) group: Option<usize>,
    pub(crate) listen: String,
    pub(crate) tag: Option<String>,
}

fn addr(node: &Cluster) -> String {
    node.local_addr().map_or_else(|| "(no port)".to_owned(), |a| a.to_string())
}
