//! Which services of an [`App`](super::App) run together: groups of services, each group
//! one cluster node, read from TOML.
//!
//! ```toml
//! groups = [["frontend", "currency"], ["checkout", "payment"], ["cart"]]
//! ```

use std::fmt;

use serde::Deserialize;

/// What is wrong with a placement, or with starting or serving its nodes.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The placement file could not be read.
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
        service: String,
        /// The group it is first in.
        first: usize,
        /// The group it is in again.
        second: usize,
    },
    /// Services placed nowhere.
    #[error("services not placed in any group: {}", .0.join(", "))]
    Missing(Vec<String>),
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
    /// A setting from the environment that does not parse.
    #[error("{variable}=`{value}`: {why}")]
    Env {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        why: &'static str,
    },
    /// A group's node could not start.
    #[error("starting the node of group {group}: {source}")]
    Start {
        /// The group.
        group: usize,
        /// Why.
        source: crate::Error,
    },
    /// A node stopped serving with an error.
    #[error("serving: {0}")]
    Serve(crate::Error),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    groups: Vec<Vec<String>>,
}

/// A valid placement of an app's services: every service in exactly one group. Made by
/// [`App::placement`](super::App::placement) and its siblings, which check it against the
/// app; it prints as the TOML it reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub(super) groups: Vec<Vec<&'static str>>,
}

impl Placement {
    /// Checks `groups` of names against `known` (the app's services, in publishing order);
    /// each group comes out in that order.
    pub(super) fn check<S: AsRef<str>>(known: &[&'static str], groups: &[Vec<S>]) -> Result<Placement, AppError> {
        let mut placed: Vec<(&'static str, usize)> = Vec::new();
        for (group, names) in groups.iter().enumerate() {
            if names.is_empty() {
                return Err(AppError::EmptyGroup(group));
            }
            for name in names {
                let name = name.as_ref();
                let service = known.iter().copied().find(|k| *k == name).ok_or_else(|| AppError::Unknown {
                    group,
                    name: name.to_owned(),
                    known: known.join(", "),
                })?;
                if let Some(&(_, first)) = placed.iter().find(|(s, _)| *s == service) {
                    return Err(AppError::Duplicate { service: service.to_owned(), first, second: group });
                }
                placed.push((service, group));
            }
        }
        let missing: Vec<String> =
            known.iter().filter(|k| !placed.iter().any(|(p, _)| p == *k)).map(|k| (*k).to_owned()).collect();
        if !missing.is_empty() {
            return Err(AppError::Missing(missing));
        }
        let groups = (0..groups.len())
            .map(|group| known.iter().copied().filter(|k| placed.contains(&(k, group))).collect())
            .collect();
        Ok(Placement { groups })
    }

    /// Parses TOML (`groups = [[...], ...]`) and checks it against `known`.
    pub(super) fn parse(known: &[&'static str], text: &str) -> Result<Placement, AppError> {
        let file: PlacementFile = toml::from_str(text).map_err(|e| AppError::Syntax(e.to_string()))?;
        Placement::check(known, &file.groups)
    }

    /// The groups, each a list of service names in publishing order.
    pub fn groups(&self) -> &[Vec<&'static str>] {
        &self.groups
    }

    /// The services of group `index`.
    pub fn group(&self, index: usize) -> Result<&[&'static str], AppError> {
        self.groups.get(index).map(Vec::as_slice).ok_or(AppError::NoSuchGroup { index, count: self.groups.len() })
    }
}

impl fmt::Display for Placement {
    /// The placement file: `groups = [["a", "b"], ["c"]]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("[{}]", g.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")))
            .collect();
        writeln!(f, "groups = [{}]", groups.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 4] = ["currency", "cart", "checkout", "frontend"];

    fn err(text: &str) -> String {
        Placement::parse(&KNOWN, text).unwrap_err().to_string()
    }

    #[test]
    fn groups_come_out_in_publishing_order_and_print_back() {
        let placement =
            Placement::parse(&KNOWN, r#"groups = [["frontend", "currency"], ["checkout", "cart"]]"#).unwrap();
        assert_eq!(placement.groups(), [vec!["currency", "frontend"], vec!["cart", "checkout"]]);
        assert_eq!(Placement::parse(&KNOWN, &placement.to_string()).unwrap(), placement);
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(
            err(r#"groups = [["currency", "cart", "checkout", "frontend"], ["cart"]]"#),
            "service `cart` is placed twice: in group 0 and in group 1"
        );
        assert_eq!(
            err(r#"groups = [["currency", "storefront"]]"#),
            "group 0: unknown service `storefront` (services: currency, cart, checkout, frontend)"
        );
        assert_eq!(err(r#"groups = [["currency", "cart"]]"#), "services not placed in any group: checkout, frontend");
        assert_eq!(err(r#"groups = [["currency", "cart", "checkout", "frontend"], []]"#), "group 1 is empty");
        assert!(err("groups = 3").starts_with("not a placement"));
        assert!(err("group = []").starts_with("not a placement"));
        let one = Placement::parse(&KNOWN, r#"groups = [["currency", "cart", "checkout", "frontend"]]"#).unwrap();
        assert_eq!(one.group(1).unwrap_err().to_string(), "no group 1: the placement has 1 groups (0 to 0)");
    }
}
