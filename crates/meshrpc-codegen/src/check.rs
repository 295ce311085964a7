//! Validation: every shape meshrpc cannot carry over the network is rejected here,
//! at the span of the offending tokens, with what to write instead.

use syn::{
    spanned::Spanned, visit::Visit, FnArg, GenericArgument, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type,
};

use crate::{snake_case, MethodDef, Options, ServiceDef};

struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: impl Spanned, message: &str) {
        let e = syn::Error::new(span.span(), message);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

pub(crate) fn service(options: Options, item: ItemTrait) -> syn::Result<ServiceDef> {
    let mut errors = Errors(None);
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            &item.generics,
            "service traits cannot be generic: every node must agree on one set of concrete types",
        );
    }
    if let Some(unsafety) = &item.unsafety {
        errors.push(unsafety, "service traits cannot be `unsafe`");
    }
    for bound in &item.supertraits {
        let allowed = match bound {
            syn::TypeParamBound::Trait(t) => {
                t.path.segments.last().is_some_and(|s| s.ident == "Send" || s.ident == "Sync")
                    && t.path.segments.last().is_some_and(|s| s.arguments.is_none())
            }
            syn::TypeParamBound::Lifetime(l) => l.ident == "static",
            _ => false,
        };
        if !allowed {
            errors.push(
                bound,
                "a service trait's supertraits can only be `Send`, `Sync` or `'static`: the generated client implements this trait alone, so it cannot provide another one; call the other trait's methods through its own service",
            );
        }
    }
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(m) = method(f, &mut errors) {
                    methods.push(m);
                }
            }
            other => errors
                .push(other, "service traits hold only `async fn` methods: move constants and types outside the trait"),
        }
    }
    if let Some(e) = errors.0 {
        return Err(e);
    }
    let name = match &options.name {
        Some(lit) => {
            let v = lit.value();
            if v.is_empty() || v.len() > 255 || v.contains('/') {
                return Err(syn::Error::new(lit.span(), "a service name is 1 to 255 bytes without `/`"));
            }
            v
        }
        None => snake_case(&item.ident.to_string()),
    };
    Ok(ServiceDef { vis: item.vis.clone(), item, name, methods, exposed: options.expose, schema: options.schema })
}

/// The `#[meshrpc(...)]` options of a method.
#[derive(Default)]
struct MethodOptions {
    idempotent: bool,
    /// `timeout = "200ms"`, in nanoseconds.
    timeout: Option<u64>,
    /// Where `hedge` was written (checked once the method's shape is known).
    hedge: Option<proc_macro2::Span>,
}

const METHOD_OPTIONS: &str = "the ones there are `idempotent`, `timeout = \"200ms\"` and `hedge`";

fn method_options(f: &TraitItemFn, errors: &mut Errors) -> MethodOptions {
    let mut options = MethodOptions::default();
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("meshrpc")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                options.idempotent = true;
                Ok(())
            } else if meta.path.is_ident("hedge") {
                options.hedge = Some(meta.path.span());
                Ok(())
            } else if meta.path.is_ident("timeout") {
                let value = meta.value()?;
                let lit: syn::Lit = value.parse()?;
                let syn::Lit::Str(text) = &lit else {
                    return Err(syn::Error::new(
                        lit.span(),
                        "write the timeout as a string with a unit: `timeout = \"200ms\"`",
                    ));
                };
                options.timeout = Some(parse_duration(&text.value()).map_err(|why| syn::Error::new(text.span(), why))?);
                Ok(())
            } else {
                Err(meta.error(format!("unknown meshrpc option on a method: {METHOD_OPTIONS}")))
            }
        });
        if let Err(e) = parsed {
            errors.push(e.span(), &e.to_string());
        }
    }
    options
}

/// `"200ms"`, `"1.5s"`, `"2m"`, `"500us"` → nanoseconds (more than zero, at most a day).
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a number and a unit (`ms`, `s`, `m`, `us`), as in \"200ms\" or \"1.5s\""
        )
    };
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return Err(bad()),
    };
    let nanos = number * scale;
    if !(1e3..=86_400e9).contains(&nanos) {
        return Err(format!("timeout `{text}` is out of range: between 1us and 24 hours"));
    }
    Ok(nanos as u64)
}

fn method(f: &TraitItemFn, errors: &mut Errors) -> Option<MethodDef> {
    let sig = &f.sig;
    let before = errors.0.as_ref().map_or(0, |e| e.clone().into_iter().count());
    let options = method_options(f, errors);
    if sig.asyncness.is_none() {
        errors.push(sig.fn_token, "service methods must be `async fn`: every remote call waits on the network");
    }
    if let Some(c) = &sig.constness {
        errors.push(c, "service methods cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.push(u, "service methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, "service methods cannot have an `extern` ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.push(v, "service methods cannot be variadic");
    }
    let only_lifetimes = sig.generics.params.iter().all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
    if !sig.generics.params.is_empty() && only_lifetimes && sig.generics.where_clause.is_none() {
        errors.push(&sig.generics, "service methods cannot take lifetime parameters: arguments arrive as owned values decoded from the network; take them by value (`String`, `Vec<T>`) and drop the lifetimes");
    } else if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(&sig.generics, "service methods cannot be generic: use concrete argument types (a generic call cannot be decoded on the other side)");
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some() => errors.push(
            r,
            "take `&self`, not `&mut self`: a service is shared by concurrent calls; keep mutable state behind a Mutex or atomics",
        ),
        Some(FnArg::Receiver(r)) => errors.push(r, "take `&self`: a service is shared by concurrent calls and never consumed"),
        _ => errors.push(&sig.ident, "service methods take `&self` first: associated functions cannot be called remotely"),
    }
    let mut args = Vec::new();
    let mut input = None;
    for arg in inputs {
        let FnArg::Typed(pt) = arg else { continue };
        match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                args.push((pi.ident.clone(), (*pt.ty).clone()));
            }
            other => errors.push(other, "name each argument with a plain identifier: the name is its JSON field"),
        }
        if let Some((item, item_error)) = stream_types(&pt.ty) {
            check_nested_streams(&item, errors);
            check_nested_streams(&item_error, errors);
            if input.is_some() {
                errors
                    .push(&pt.ty, "a method takes at most one stream of items: merge them into one stream of an enum");
            }
            input = Some(args.len().saturating_sub(1));
        } else {
            check_nested_streams(&pt.ty, errors);
        }
        check_arg_type(&pt.ty, errors);
    }
    let mut error = None;
    let mut value = None;
    let mut returns = None;
    match &sig.output {
        ReturnType::Type(_, ty) if result_error(ty).is_some() => {
            returns = Some((**ty).clone());
            error = result_error(ty);
            value = result_value(ty);
            if let Some(value) = &value {
                check_return_type(value, errors);
                match stream_types(value) {
                    Some((item, item_error)) => {
                        check_nested_streams(&item, errors);
                        check_nested_streams(&item_error, errors);
                    }
                    None => check_nested_streams(value, errors),
                }
            }
            if let Some(error) = &error {
                check_nested_streams(error, errors);
            }
        }
        ReturnType::Type(_, ty) => errors.push(
            ty,
            "return `Result<T, E>` with `E: From<meshrpc::Error>`: every remote call can fail, and the failure must reach the caller",
        ),
        ReturnType::Default => errors.push(
            &sig.ident,
            "return `Result<(), E>` with `E: From<meshrpc::Error>`: every remote call can fail, and the failure must reach the caller",
        ),
    }
    let after = errors.0.as_ref().map_or(0, |e| e.clone().into_iter().count());
    let ident = sig.ident.clone();
    let name = ident.to_string().trim_start_matches("r#").to_owned();
    match (error, value, returns) {
        (Some(error), Some(value), Some(returns)) if after == before => {
            let output = stream_types(&value);
            if let Some(span) = options.hedge {
                if !options.idempotent {
                    errors.push(
                        span,
                        "`hedge` sends a second attempt, so the method may run twice: mark it `idempotent` too",
                    );
                } else if output.is_some() || input.is_some() {
                    errors.push(
                        span,
                        "`hedge` applies to methods that take and answer plain values: a stream cannot be sent twice",
                    );
                }
            }
            let (idempotent, timeout, hedge) = (options.idempotent, options.timeout, options.hedge.is_some());
            let doc = doc_comment(&f.attrs);
            Some(MethodDef { ident, name, args, returns, value, error, input, output, idempotent, timeout, hedge, doc })
        }
        _ => None,
    }
}

/// The text of `///` comments (`#[doc = "…"]`), one line each, without the space after `///`.
fn doc_comment(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).trim_end().to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}

fn check_arg_type(ty: &Type, errors: &mut Errors) {
    struct Finder<'a>(&'a mut Errors);
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            self.0.push(r, "take arguments by value (`String` for `&str`, `Vec<T>` for `&[T]`): they are sent over the network and decoded into owned values");
        }
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.0.push(
                t,
                "`impl Trait` arguments cannot cross the network: use a concrete `Serialize + Deserialize` type",
            );
        }
        fn visit_type_trait_object(&mut self, t: &'ast syn::TypeTraitObject) {
            self.0.push(t, "trait objects cannot cross the network: use a concrete `Serialize + Deserialize` type");
        }
        fn visit_type_bare_fn(&mut self, t: &'ast syn::TypeBareFn) {
            self.0.push(t, "functions cannot cross the network: send data and call a method on the other side");
        }
    }
    Finder(errors).visit_type(ty);
}

/// A returned value crosses the network: no `impl Trait` (a stream, an iterator), no
/// borrowed data.
fn check_return_type(ty: &Type, errors: &mut Errors) {
    struct Finder<'a>(&'a mut Errors);
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.0.push(t, "`impl Trait` cannot be returned over the network: return a concrete `Serialize + Deserialize` type, or `meshrpc::Stream<T>` for a stream of items");
        }
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            self.0.push(r, "return owned values (`String` for `&str`, `Vec<T>` for `&[T]`): the answer is decoded on the other side");
        }
        fn visit_type_trait_object(&mut self, t: &'ast syn::TypeTraitObject) {
            self.0.push(
                t,
                "trait objects cannot be returned over the network: use a concrete `Serialize + Deserialize` type",
            );
        }
    }
    Finder(errors).visit_type(ty);
}

/// The item and item error types of `Stream<T>` / `Stream<T, E>` (any path ending in
/// `Stream`), if that is what `ty` is. The item error defaults to `meshrpc::Error`.
pub(crate) fn stream_types(ty: &Type) -> Option<(Type, Type)> {
    match type_args(ty, "Stream")?.as_slice() {
        [item] => Some((item.clone(), syn::parse_quote!(::meshrpc::Error))),
        [item, error] => Some((item.clone(), error.clone())),
        _ => None,
    }
}

/// A stream goes only where it is the whole argument or the whole `Ok` value.
fn check_nested_streams(ty: &Type, errors: &mut Errors) {
    struct Finder<'a>(&'a mut Errors);
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_path(&mut self, p: &'ast syn::TypePath) {
            if stream_types(&Type::Path(p.clone())).is_some() {
                self.0.push(p, "a stream cannot be nested in another type: take `Stream<T>` as an argument of its own, or return `Result<Stream<T>, E>`");
                return;
            }
            syn::visit::visit_type_path(self, p);
        }
    }
    Finder(errors).visit_type(ty);
}

/// The `T` of a `Result<T, E>` type, if that is what `ty` is.
fn result_value(ty: &Type) -> Option<Type> {
    result_types(ty).map(|(t, _)| t)
}

/// The `E` of a `Result<T, E>` type, if that is what `ty` is.
fn result_error(ty: &Type) -> Option<Type> {
    result_types(ty).map(|(_, e)| e)
}

fn result_types(ty: &Type) -> Option<(Type, Type)> {
    match type_args(ty, "Result")?.as_slice() {
        [value, error] => Some((value.clone(), error.clone())),
        _ => None,
    }
}

/// The type arguments of `ty` when it is a path whose last segment is `name<…>`.
fn type_args(ty: &Type, name: &str) -> Option<Vec<Type>> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let types = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    Some(types)
}
