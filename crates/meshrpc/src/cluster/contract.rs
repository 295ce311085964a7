//! Why a replica's contract is not ours: the first method that differs between the spec
//! a client was built from and the method list a replica advertises, in words a caller can
//! act on (the fingerprint only says that something differs).

use super::{gossip::AdvertisedMethod, View};
use crate::spec::ServiceSpec;

/// What replicas of `spec`'s service with another method set say, if the view has any:
/// how many, and the first difference from one whose method list is known.
pub(super) fn incompatibility(view: &View, spec: &ServiceSpec) -> Option<String> {
    let fingerprint = spec.fingerprint();
    let others: Vec<_> = view
        .members
        .iter()
        .filter_map(|m| m.services.get(spec.name))
        .filter(|advertised| advertised.fingerprint != fingerprint)
        .collect();
    others.first()?;
    let replicas = if others.len() == 1 { "1 replica serves" } else { "replicas serve" };
    let count = if others.len() == 1 { String::new() } else { format!("{} ", others.len()) };
    let difference = others
        .iter()
        .filter(|a| !a.methods.is_empty())
        .find_map(|a| first_difference(spec, &a.methods))
        .map_or_else(String::new, |d| format!(": {d}"));
    Some(format!("{count}{replicas} another version of its methods{difference}"))
}

/// The first difference between `ours` and `theirs`, in our methods' order, then theirs.
pub(super) fn first_difference(ours: &ServiceSpec, theirs: &[AdvertisedMethod]) -> Option<String> {
    let list = |args: &mut dyn Iterator<Item = &str>| args.collect::<Vec<_>>().join(", ");
    for method in ours.methods {
        let Some(there) = theirs.iter().find(|t| t.name == method.name) else {
            return Some(format!("`{}` is not there", method.name));
        };
        if there.args.iter().map(String::as_str).ne(method.args.iter().copied()) {
            return Some(format!(
                "`{}` takes ({}) there, ({}) here",
                method.name,
                list(&mut there.args.iter().map(String::as_str)),
                list(&mut method.args.iter().copied())
            ));
        }
        if there.items.as_deref() != method.items {
            let items =
                |i: Option<&str>| i.map_or_else(|| "no stream of items".to_owned(), |i| format!("items in `{i}`"));
            return Some(format!(
                "`{}` takes {} there, {} here",
                method.name,
                items(there.items.as_deref()),
                items(method.items)
            ));
        }
        if there.streams != method.streams {
            let answers = |s: bool| if s { "a stream" } else { "one value" };
            return Some(format!(
                "`{}` answers with {} there, {} here",
                method.name,
                answers(there.streams),
                answers(method.streams)
            ));
        }
    }
    theirs
        .iter()
        .find(|t| !ours.methods.iter().any(|m| m.name == t.name))
        .map(|t| format!("`{}` is there, not here", t.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MethodSpec;

    fn method(name: &'static str, args: &'static [&'static str]) -> MethodSpec {
        MethodSpec::unary(name, args)
    }

    fn advertised(name: &str, args: &[&str], items: Option<&str>, streams: bool) -> AdvertisedMethod {
        AdvertisedMethod {
            name: name.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            items: items.map(str::to_owned),
            streams,
            idempotent: false,
            timeout: None,
            hedge: false,
        }
    }

    #[test]
    fn the_first_difference_is_named() {
        let methods = Box::leak(Box::new([method("greet", &["name"]), method("whoami", &[])]));
        let ours = ServiceSpec { name: "lab", trait_name: "Lab", version: "1", methods: &methods[..] };
        let same = [advertised("greet", &["name"], None, false), advertised("whoami", &[], None, false)];
        assert_eq!(first_difference(&ours, &same), None);
        let cases = [
            (vec![advertised("whoami", &[], None, false)], "`greet` is not there"),
            (
                vec![advertised("greet", &["name", "greeting"], None, false), advertised("whoami", &[], None, false)],
                "`greet` takes (name, greeting) there, (name) here",
            ),
            (
                vec![advertised("greet", &["name"], Some("name"), false), advertised("whoami", &[], None, false)],
                "`greet` takes items in `name` there, no stream of items here",
            ),
            (
                vec![advertised("greet", &["name"], None, true), advertised("whoami", &[], None, false)],
                "`greet` answers with a stream there, one value here",
            ),
            (
                vec![
                    advertised("greet", &["name"], None, false),
                    advertised("whoami", &[], None, false),
                    advertised("reset", &[], None, false),
                ],
                "`reset` is there, not here",
            ),
        ];
        for (theirs, said) in cases {
            assert_eq!(first_difference(&ours, &theirs).as_deref(), Some(said));
        }
    }
}
