//! What a node counts, as `/metrics` shows it: each layer lists its own figures (the port,
//! the concurrency limit, the cluster's policies) and the `http` feature renders them.

use std::sync::Arc;

/// One figure: a counter (only grows) or a gauge (the state now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figure {
    /// The metric name, without `_total`.
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) value: u64,
    pub(crate) counter: bool,
    /// One label, for figures of one family (`state="serving"`).
    pub(crate) label: Option<(&'static str, &'static str)>,
}

impl Figure {
    pub(crate) const fn counter(name: &'static str, help: &'static str, value: u64) -> Figure {
        Figure { name, help, value, counter: true, label: None }
    }

    pub(crate) const fn gauge(name: &'static str, help: &'static str, value: u64) -> Figure {
        Figure { name, help, value, counter: false, label: None }
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))] // members by state
    pub(crate) const fn with_label(mut self, name: &'static str, value: &'static str) -> Figure {
        self.label = Some((name, value));
        self
    }
}

/// Where a node's figures come from, read at each scrape.
pub(crate) type Figures = Arc<dyn Fn() -> Vec<Figure> + Send + Sync>;
