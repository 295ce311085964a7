//! Which changes between two versions of a service's source break its callers: what
//! `meshrpc compat OLD NEW` reports, in the manner of `buf breaking`.
//!
//! Two kinds of callers see a service differently, so each change gets two verdicts:
//! - **json** callers (the gateway, node HTTP, `meshrpc call`, the Python client) name
//!   arguments and fields: a rename breaks them, a reorder does not;
//! - **typed** callers (generated clients over the mesh) are paired with replicas by the
//!   contract's fingerprint (method names, argument names, stream shapes: a change there
//!   means old clients call only replicas still at the old contract), and their payloads
//!   are postcard, which is positional: a field added, removed or moved inside a struct
//!   does not change the fingerprint, so both sides would pair and misread each other.
//!
//! Pure: it takes source text and returns a report; the command reads files or git.

mod types;

use std::collections::{BTreeMap, BTreeSet};

use quote::ToTokens;
use syn::Type;

use crate::{expose::find_services, ServiceDef};
use types::{compare_type, named_types, TypeDef};

/// A version of a crate's contract: its service traits and the types they use.
pub struct Contract {
    services: Vec<ServiceDef>,
    types: BTreeMap<String, TypeDef>,
}

/// Why a version's source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    /// A file is not valid Rust (or a service trait is not a valid service).
    #[error("{file}: {error}")]
    Parse {
        /// The file.
        file: String,
        /// What syn said.
        error: syn::Error,
    },
    /// No `#[meshrpc::service]` trait anywhere.
    #[error("no #[meshrpc::service] trait in {0}")]
    NoService(String),
}

impl Contract {
    /// Reads the service traits and struct and enum definitions of `files` (path, text).
    pub fn from_sources(what: &str, files: &[(String, String)]) -> Result<Contract, CompatError> {
        let mut services = Vec::new();
        let mut types = BTreeMap::new();
        for (path, text) in files {
            let parse = |error| CompatError::Parse { file: path.clone(), error };
            let file = syn::parse_file(text).map_err(parse)?;
            types::collect(&file.items, &mut types);
            services.extend(find_services(text).map_err(parse)?.into_iter().map(|f| f.def));
        }
        if services.is_empty() {
            return Err(CompatError::NoService(what.to_owned()));
        }
        Ok(Contract { services, types })
    }

    /// The services' names.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(|s| s.name.as_str())
    }
}

/// What a change does to one kind of caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Callers of the old version keep working.
    Safe,
    /// Some callers fail or misread: why.
    Breaking(String),
}

impl Verdict {
    fn breaking(why: impl Into<String>) -> Verdict {
        Verdict::Breaking(why.into())
    }

    /// Whether it breaks.
    pub fn is_breaking(&self) -> bool {
        matches!(self, Verdict::Breaking(_))
    }
}

/// One change between the versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where: `greeter.greet`, `Postcard.address`, `Color::Red`.
    pub place: String,
    /// What changed, in words.
    pub what: String,
    /// For callers that name things (JSON).
    pub json: Verdict,
    /// For generated clients over the mesh (fingerprint, postcard).
    pub typed: Verdict,
}

/// Every change found, services first, then the types they use.
#[derive(Debug, Default)]
pub struct Report {
    /// The changes, in the order found.
    pub changes: Vec<Change>,
    /// Services whose contract fingerprint differs (typed callers do not pair across).
    pub new_fingerprint: Vec<String>,
}

impl Report {
    /// Changes that break callers of the given kinds.
    pub fn breaking(&self, json: bool, typed: bool) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| (json && c.json.is_breaking()) || (typed && c.typed.is_breaking()))
    }
}

/// Where a type travels: in requests (callers write it) or answers (callers read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sides {
    pub(crate) request: bool,
    pub(crate) answer: bool,
}

const NEW_CONTRACT: &str =
    "the contract changes: clients generated from the old trait call only replicas still at the old one";

/// Compares two versions of a contract.
pub fn compare(old: &Contract, new: &Contract) -> Report {
    let mut report = Report::default();
    // Types reached from each side of each method, in the old version (what old callers
    // write and read).
    let mut sides: BTreeMap<String, Sides> = BTreeMap::new();
    for service in &old.services {
        let Some(next) = new.services.iter().find(|s| s.name == service.name) else {
            report.changes.push(Change {
                place: service.name.clone(),
                what: "service removed".into(),
                json: Verdict::breaking("callers get unknown_service"),
                typed: Verdict::breaking("callers find no replica"),
            });
            continue;
        };
        if fingerprint_of(service) != fingerprint_of(next) {
            report.new_fingerprint.push(service.name.clone());
        }
        compare_service(service, next, &mut report.changes);
        for method in &service.methods {
            let mut mark = |ty: &Type, request: bool| {
                for name in named_types(ty, &old.types) {
                    let side = sides.entry(name).or_default();
                    side.request |= request;
                    side.answer |= !request;
                }
            };
            for (_, ty) in &method.args {
                mark(ty, true);
            }
            mark(&method.value, false);
            mark(&method.error, false);
        }
    }
    for (name, side) in &sides {
        let (Some(before), Some(after)) = (old.types.get(name), new.types.get(name)) else { continue };
        compare_type(name, before, after, *side, &mut report.changes);
    }
    report
}

/// What the runtime's fingerprint hashes: method names, argument names, stream shapes.
fn fingerprint_of(service: &ServiceDef) -> Vec<(String, Vec<String>, Option<String>, bool)> {
    service
        .methods
        .iter()
        .map(|m| {
            let items = m.input.map(|i| m.args[i].0.to_string());
            (m.name.clone(), m.payload_args().map(|(a, _)| a.to_string()).collect(), items, m.output.is_some())
        })
        .collect()
}

fn text(ty: &Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}

fn compare_service(old: &ServiceDef, new: &ServiceDef, changes: &mut Vec<Change>) {
    let mut push =
        |place: String, what: String, json: Verdict, typed: Verdict| changes.push(Change { place, what, json, typed });
    for method in &old.methods {
        let place = format!("{}.{}", old.name, method.name);
        let Some(next) = new.methods.iter().find(|m| m.name == method.name) else {
            push(
                place,
                "method removed".into(),
                Verdict::breaking("callers get unknown_method"),
                Verdict::breaking(NEW_CONTRACT),
            );
            continue;
        };
        let before: Vec<(String, String)> = method.payload_args().map(|(a, t)| (a.to_string(), text(t))).collect();
        let after: Vec<(String, String)> = next.payload_args().map(|(a, t)| (a.to_string(), text(t))).collect();
        let names = |args: &[(String, String)]| args.iter().map(|(a, _)| a.clone()).collect::<BTreeSet<_>>();
        let (names_before, names_after) = (names(&before), names(&after));
        for (i, (arg, ty)) in before.iter().enumerate() {
            match after.iter().find(|(a, _)| a == arg) {
                Some((_, t)) if t != ty => push(
                    place.clone(),
                    format!("argument `{arg}` retyped: {ty} → {t}"),
                    Verdict::breaking(format!("old callers send a {ty}")),
                    Verdict::breaking(NEW_CONTRACT),
                ),
                Some(_) => {}
                None => match after.get(i).filter(|(a, t)| t == ty && !names_before.contains(a)) {
                    Some((renamed, _)) => push(
                        place.clone(),
                        format!("argument `{arg}` renamed to `{renamed}`"),
                        Verdict::breaking(format!("old callers send `{arg}`, not `{renamed}`")),
                        Verdict::breaking(NEW_CONTRACT),
                    ),
                    None => push(
                        place.clone(),
                        format!("argument `{arg}` removed"),
                        Verdict::Safe,
                        Verdict::breaking(NEW_CONTRACT),
                    ),
                },
            }
        }
        for (i, (arg, ty)) in after.iter().enumerate() {
            let renamed = before.get(i).is_some_and(|(a, t)| t == ty && !names_after.contains(a));
            if names_before.contains(arg) || renamed {
                continue;
            }
            let json = if ty.starts_with("Option<") {
                Verdict::Safe
            } else {
                Verdict::breaking(format!("old callers do not send `{arg}` (an Option<…> would be safe)"))
            };
            push(place.clone(), format!("argument `{arg}: {ty}` added"), json, Verdict::breaking(NEW_CONTRACT));
        }
        let common = |args: &[(String, String)], other: &BTreeSet<String>| {
            args.iter().filter(|(a, _)| other.contains(a)).map(|(a, _)| a.clone()).collect::<Vec<_>>()
        };
        if common(&before, &names_after) != common(&after, &names_before) {
            push(place.clone(), "arguments reordered".into(), Verdict::Safe, Verdict::breaking(NEW_CONTRACT));
        }
        let shape = |m: &crate::MethodDef| (m.input.map(|i| m.args[i].0.to_string()), m.output.is_some());
        if shape(method) != shape(next) {
            push(
                place.clone(),
                "stream shape changed (items taken or answered)".into(),
                Verdict::breaking("callers and servers disagree on streaming"),
                Verdict::breaking(NEW_CONTRACT),
            );
        }
        for (part, a, b) in [("answer", &method.value, &next.value), ("error", &method.error, &next.error)] {
            if text(a) != text(b) && shape(method) == shape(next) {
                push(
                    place.clone(),
                    format!("{part} type changed: {} → {}", text(a), text(b)),
                    Verdict::breaking(format!("old callers read a {}", text(a))),
                    Verdict::breaking(format!("old callers decode a {}: the fingerprint does not see it", text(a))),
                );
            }
        }
    }
    for method in &new.methods {
        if !old.methods.iter().any(|m| m.name == method.name) {
            push(
                format!("{}.{}", new.name, method.name),
                "method added".into(),
                Verdict::Safe,
                Verdict::breaking(NEW_CONTRACT),
            );
        }
    }
}

#[cfg(test)]
mod tests;
