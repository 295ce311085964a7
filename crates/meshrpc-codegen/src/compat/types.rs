//! Structs and enums as their two encodings see them: JSON names fields and variants
//! (after serde's renames), postcard numbers them by position.

use std::collections::BTreeMap;

use syn::{visit::Visit, Attribute, Fields, Item, Type};

use super::{text, Change, Sides, Verdict};

/// A struct's or an enum's shape.
pub(crate) enum TypeDef {
    Struct(Shape),
    Enum(Vec<(String, Shape)>),
}

/// Fields of a struct or a variant.
#[derive(Clone)]
pub(crate) enum Shape {
    Unit,
    /// Positional types (a tuple struct or variant).
    Tuple(Vec<String>),
    /// Named fields in order: JSON name, type, may be missing (Option or serde default).
    Named(Vec<Field>),
}

#[derive(Clone)]
pub(crate) struct Field {
    name: String,
    ty: String,
    optional: bool,
}

/// Collects the structs and enums of `items`, at any module depth, by name.
pub(crate) fn collect(items: &[Item], types: &mut BTreeMap<String, TypeDef>) {
    for item in items {
        match item {
            Item::Struct(s) => {
                let serde = Serde::of(&s.attrs);
                types.insert(s.ident.to_string(), TypeDef::Struct(shape(&s.fields, &serde)));
            }
            Item::Enum(e) => {
                let serde = Serde::of(&e.attrs);
                let variants = e
                    .variants
                    .iter()
                    .filter(|v| !Serde::of(&v.attrs).skip)
                    .map(|v| {
                        let own = Serde::of(&v.attrs);
                        let name = own.rename.unwrap_or_else(|| serde.case(&v.ident.to_string()));
                        (name, shape(&v.fields, &Serde::default()))
                    })
                    .collect();
                types.insert(e.ident.to_string(), TypeDef::Enum(variants));
            }
            Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    collect(items, types);
                }
            }
            _ => {}
        }
    }
}

fn shape(fields: &Fields, container: &Serde) -> Shape {
    match fields {
        Fields::Unit => Shape::Unit,
        Fields::Unnamed(f) => Shape::Tuple(f.unnamed.iter().map(|f| text(&f.ty)).collect()),
        Fields::Named(f) => Shape::Named(
            f.named
                .iter()
                .filter_map(|f| {
                    let own = Serde::of(&f.attrs);
                    if own.skip {
                        return None; // in neither encoding
                    }
                    let ident = f.ident.as_ref().expect("named").to_string();
                    let ty = text(&f.ty);
                    Some(Field {
                        name: own.rename.unwrap_or_else(|| container.case(&ident)),
                        optional: own.default || container.default || ty.starts_with("Option<"),
                        ty,
                    })
                })
                .collect(),
        ),
    }
}

/// What the serde attributes of an item say about its encoding.
#[derive(Default)]
struct Serde {
    rename: Option<String>,
    rename_all: Option<String>,
    default: bool,
    skip: bool,
}

impl Serde {
    fn of(attrs: &[Attribute]) -> Serde {
        let mut serde = Serde::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
            let _ = attr.parse_nested_meta(|meta| {
                let value = || -> syn::Result<String> { Ok(meta.value()?.parse::<syn::LitStr>()?.value()) };
                if meta.path.is_ident("rename") {
                    serde.rename = value().ok();
                } else if meta.path.is_ident("rename_all") {
                    serde.rename_all = value().ok();
                } else if meta.path.is_ident("default") {
                    serde.default = true;
                    let _ = value(); // `default = "path"`
                } else if meta.path.is_ident("skip") {
                    serde.skip = true;
                } else if meta.input.peek(syn::Token![=]) {
                    let _ = value();
                }
                Ok(())
            });
        }
        serde
    }

    /// A field's or variant's JSON name under the container's `rename_all`.
    fn case(&self, ident: &str) -> String {
        let words: Vec<String> = {
            let mut words = vec![String::new()];
            for c in ident.chars() {
                if c == '_' {
                    words.push(String::new());
                } else {
                    if c.is_uppercase() && !words.last().unwrap().is_empty() {
                        words.push(String::new());
                    }
                    words.last_mut().unwrap().push(c);
                }
            }
            words.into_iter().filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
        };
        let capital = |w: &String| w[..1].to_uppercase() + &w[1..];
        match self.rename_all.as_deref() {
            Some("lowercase") => ident.to_lowercase(),
            Some("UPPERCASE") => ident.to_uppercase(),
            Some("snake_case") => words.join("_"),
            Some("SCREAMING_SNAKE_CASE") => words.join("_").to_uppercase(),
            Some("kebab-case") => words.join("-"),
            Some("SCREAMING-KEBAB-CASE") => words.join("-").to_uppercase(),
            Some("camelCase") => {
                words.iter().enumerate().map(|(i, w)| if i == 0 { w.clone() } else { capital(w) }).collect()
            }
            Some("PascalCase") => words.iter().map(capital).collect(),
            _ => ident.to_owned(),
        }
    }
}

/// The names of `types` that `ty` mentions, and those their definitions mention in turn.
pub(crate) fn named_types(ty: &Type, types: &BTreeMap<String, TypeDef>) -> Vec<String> {
    struct Names<'a>(&'a BTreeMap<String, TypeDef>, Vec<String>);
    impl<'ast> Visit<'ast> for Names<'_> {
        fn visit_path_segment(&mut self, seg: &'ast syn::PathSegment) {
            let name = seg.ident.to_string();
            if self.0.contains_key(&name) && !self.1.contains(&name) {
                self.1.push(name);
            }
            syn::visit::visit_path_segment(self, seg);
        }
    }
    let mut names = Names(types, Vec::new());
    names.visit_type(ty);
    // Their fields' types, until nothing new is found.
    let mut i = 0;
    while i < names.1.len() {
        let inner: Vec<String> = match &types[&names.1[i]] {
            TypeDef::Struct(shape) => shape.types(),
            TypeDef::Enum(variants) => variants.iter().flat_map(|(_, s)| s.types()).collect(),
        };
        for ty in inner {
            if let Ok(ty) = syn::parse_str::<Type>(&ty) {
                names.visit_type(&ty);
            }
        }
        i += 1;
    }
    names.1
}

impl Shape {
    fn types(&self) -> Vec<String> {
        match self {
            Shape::Unit => Vec::new(),
            Shape::Tuple(types) => types.clone(),
            Shape::Named(fields) => fields.iter().map(|f| f.ty.clone()).collect(),
        }
    }
}

const POSITIONAL: &str = "postcard is positional, and the fingerprint does not see it: both sides pair and misread";

/// Compares two definitions of type `name`, which travels on `sides`.
pub(crate) fn compare_type(name: &str, old: &TypeDef, new: &TypeDef, sides: Sides, changes: &mut Vec<Change>) {
    match (old, new) {
        (TypeDef::Struct(a), TypeDef::Struct(b)) => compare_shape(name, a, b, sides, changes),
        (TypeDef::Enum(a), TypeDef::Enum(b)) => compare_variants(name, a, b, sides, changes),
        _ => changes.push(Change {
            place: name.to_owned(),
            what: "changed between a struct and an enum".into(),
            json: Verdict::breaking("another shape"),
            typed: Verdict::breaking(POSITIONAL),
        }),
    }
}

fn compare_shape(place: &str, old: &Shape, new: &Shape, sides: Sides, changes: &mut Vec<Change>) {
    let mut push =
        |place: String, what: String, json: Verdict, typed: Verdict| changes.push(Change { place, what, json, typed });
    let (Shape::Named(old), Shape::Named(new)) = (old, new) else {
        if old.types() != new.types() || std::mem::discriminant(old) != std::mem::discriminant(new) {
            push(
                place.to_owned(),
                format!("fields changed: ({}) → ({})", old.types().join(", "), new.types().join(", ")),
                Verdict::breaking("positional fields differ"),
                Verdict::breaking(POSITIONAL),
            );
        }
        return;
    };
    let find = |fields: &[Field], name: &str| fields.iter().position(|f| f.name == name);
    for (i, field) in old.iter().enumerate() {
        let at = format!("{place}.{}", field.name);
        match find(new, &field.name) {
            Some(j) if new[j].ty != field.ty => push(
                at,
                format!("field retyped: {} → {}", field.ty, new[j].ty),
                Verdict::breaking(format!("old callers have a {}", field.ty)),
                Verdict::breaking(POSITIONAL),
            ),
            Some(_) => {}
            None => match new.get(i).filter(|f| f.ty == field.ty && find(old, &f.name).is_none()) {
                Some(renamed) => push(
                    at,
                    format!("field renamed to `{}`", renamed.name),
                    Verdict::breaking(format!("old callers use `{}`", field.name)),
                    Verdict::Safe,
                ),
                None => push(
                    at,
                    "field removed".into(),
                    if sides.answer && !field.optional {
                        Verdict::breaking(format!("old callers expect `{}` in answers", field.name))
                    } else {
                        Verdict::Safe
                    },
                    Verdict::breaking(POSITIONAL),
                ),
            },
        }
    }
    for (i, field) in new.iter().enumerate() {
        let renamed = old.get(i).is_some_and(|f| f.ty == field.ty && find(new, &f.name).is_none());
        if find(old, &field.name).is_some() || renamed {
            continue;
        }
        push(
            format!("{place}.{}", field.name),
            format!("field `{}: {}` added", field.name, field.ty),
            if sides.request && !field.optional {
                Verdict::breaking(format!(
                    "old callers do not send `{}` (an Option<…> or #[serde(default)] would be safe)",
                    field.name
                ))
            } else {
                Verdict::Safe
            },
            Verdict::breaking(POSITIONAL),
        );
    }
    let common = |a: &[Field], b: &[Field]| {
        a.iter().filter(|f| find(b, &f.name).is_some()).map(|f| f.name.clone()).collect::<Vec<_>>()
    };
    if common(old, new) != common(new, old) {
        push(place.to_owned(), "fields reordered".into(), Verdict::Safe, Verdict::breaking(POSITIONAL));
    }
}

fn compare_variants(
    place: &str,
    old: &[(String, Shape)],
    new: &[(String, Shape)],
    sides: Sides,
    changes: &mut Vec<Change>,
) {
    let find = |variants: &[(String, Shape)], name: &str| variants.iter().position(|(n, _)| n == name);
    for (i, (variant, shape)) in old.iter().enumerate() {
        let at = format!("{place}::{variant}");
        match find(new, variant) {
            Some(j) => {
                if j != i {
                    changes.push(Change {
                        place: at.clone(),
                        what: format!("variant moved from position {i} to {j}"),
                        json: Verdict::Safe,
                        typed: Verdict::breaking(POSITIONAL),
                    });
                }
                compare_shape(&at, shape, &new[j].1, sides, changes);
            }
            None => changes.push(Change {
                place: at,
                what: "variant removed".into(),
                json: Verdict::breaking(format!("old callers may send or expect `{variant}`")),
                typed: Verdict::breaking("old callers may send or expect it"),
            }),
        }
    }
    for (j, (variant, _)) in new.iter().enumerate() {
        if find(old, variant).is_some() {
            continue;
        }
        let unreadable = if sides.answer {
            Verdict::breaking(format!("old callers cannot read `{variant}` in answers"))
        } else {
            Verdict::Safe
        };
        let typed = if j < old.len() { Verdict::breaking(POSITIONAL) } else { unreadable.clone() };
        changes.push(Change {
            place: format!("{place}::{variant}"),
            what: if j < old.len() {
                format!("variant added at position {j}")
            } else {
                "variant added at the end".into()
            },
            json: unreadable,
            typed,
        });
    }
}
