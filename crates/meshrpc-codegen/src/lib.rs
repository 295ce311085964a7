//! Turns a service trait into server, client and spec code.
//!
//! One generator serves both the `#[meshrpc::service]` attribute and the
//! `meshrpc expose` command, so the code on disk and the macro's expansion never
//! drift apart.

mod check;
pub mod compat;
mod emit;
pub mod expose;

use proc_macro2::{Span, TokenStream};
use syn::{Ident, ItemTrait, LitStr, Type, Visibility};

/// A validated service trait, ready to emit code for.
pub struct ServiceDef {
    /// The trait as the user wrote it.
    pub item: ItemTrait,
    /// Service name on the wire and in routes.
    pub name: String,
    /// The trait's visibility, given to the generated server and client.
    pub vis: Visibility,
    /// The trait's methods, in order.
    pub methods: Vec<MethodDef>,
    /// Server and client come from `meshrpc expose` files, not from the attribute.
    pub exposed: bool,
    /// `schema`: the server describes its methods' types as JSON Schema (feature
    /// `schema`; every argument, value and error type implements `schemars::JsonSchema`).
    pub schema: bool,
}

/// One validated method.
pub struct MethodDef {
    /// The method's name in the trait.
    pub ident: Ident,
    /// Wire name of the method.
    pub name: String,
    /// Argument names (JSON keys) and types, in order.
    pub args: Vec<(Ident, Type)>,
    /// The whole `Result<T, E>` as written (errors about `T` or `E` point at it).
    pub returns: Type,
    /// The `T` of `Result<T, E>`.
    pub value: Type,
    /// The `E` of `Result<T, E>`.
    pub error: Type,
    /// The argument that is a stream of the caller's items (client and bidirectional
    /// streams): its position among `args`.
    pub input: Option<usize>,
    /// `T` is a `Stream<Item, ItemError>`: the item and item error types (server and
    /// bidirectional streams).
    pub output: Option<(Type, Type)>,
    /// `#[meshrpc(idempotent)]`: running it twice does no harm (it may be retried after
    /// it may have run, mirrored, hedged).
    pub idempotent: bool,
    /// `#[meshrpc(timeout = "200ms")]`: the method's default deadline, in nanoseconds.
    pub timeout: Option<u64>,
    /// `#[meshrpc(hedge)]`: a slow call is sent again to another replica.
    pub hedge: bool,
    /// Its doc comment (empty without one): the OpenAPI operation's description.
    pub doc: String,
}

impl MethodDef {
    /// Arguments sent in the request's payload (all but the stream).
    pub fn payload_args(&self) -> impl Iterator<Item = &(Ident, Type)> {
        self.args.iter().enumerate().filter(move |(i, _)| Some(*i) != self.input).map(|(_, a)| a)
    }
}

/// Options given in the attribute: `#[meshrpc::service(name = "greeter", expose)]`.
#[derive(Default)]
pub struct Options {
    /// The service's name on the wire (`name = "…"`; default: the trait's, in snake case).
    pub name: Option<LitStr>,
    /// The server and client live in files written by `meshrpc expose`; the attribute
    /// only prepares the trait.
    pub expose: bool,
    /// Publish JSON Schemas of the methods' types.
    pub schema: bool,
}

impl Options {
    /// Parses the attribute's arguments.
    pub fn parse(attr: TokenStream) -> syn::Result<Options> {
        let mut options = Options::default();
        if attr.is_empty() {
            return Ok(options);
        }
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                options.name = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("expose") {
                options.expose = true;
                Ok(())
            } else if meta.path.is_ident("schema") {
                options.schema = true;
                Ok(())
            } else {
                Err(meta.error("unknown option: meshrpc::service takes `name = \"...\"`, `expose` and `schema`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(options)
    }
}

impl ServiceDef {
    /// Validates a trait. Every unsupported shape is an error at its own span.
    pub fn new(options: Options, item: ItemTrait) -> syn::Result<ServiceDef> {
        check::service(options, item)
    }

    /// Parses attribute arguments and the trait, as the macro receives them.
    pub fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<ServiceDef> {
        let options = Options::parse(attr)?;
        let item: ItemTrait = syn::parse2(item).map_err(|e| {
            syn::Error::new(e.span(), "#[meshrpc::service] goes on a trait: `pub trait Greeter { async fn greet(&self, name: String) -> Result<String, MyError>; }`")
        })?;
        Self::new(options, item)
    }

    /// The trait itself, made object safe (`Arc<dyn Trait>`) and shareable.
    pub fn trait_tokens(&self) -> TokenStream {
        emit::service_trait(self)
    }

    /// `XServer<T>`: dispatches calls to an implementation.
    pub fn server_tokens(&self) -> TokenStream {
        emit::server(self)
    }

    /// `XClient`: implements the trait by calling a remote service; holds `SPEC`.
    pub fn client_tokens(&self) -> TokenStream {
        emit::client(self)
    }

    /// Everything the attribute expands to (with `expose`: the trait alone).
    pub fn expand(&self) -> TokenStream {
        let mut out = self.trait_tokens();
        if !self.exposed {
            out.extend(self.server_tokens());
            out.extend(self.client_tokens());
        }
        out
    }

    /// The trait's name.
    pub fn trait_ident(&self) -> &Ident {
        &self.item.ident
    }
    /// The generated server's name: `{Trait}Server`.
    pub fn server_ident(&self) -> Ident {
        Ident::new(&format!("{}Server", self.item.ident), Span::call_site())
    }
    /// The generated client's name: `{Trait}Client`.
    pub fn client_ident(&self) -> Ident {
        Ident::new(&format!("{}Client", self.item.ident), Span::call_site())
    }
}

/// The attribute's whole expansion, or the errors as `compile_error!`s at their spans.
pub fn expand_attribute(attr: TokenStream, item: TokenStream) -> TokenStream {
    match ServiceDef::parse(attr, item) {
        Ok(def) => def.expand(),
        Err(e) => e.to_compile_error(),
    }
}

/// `UserProfile` → `user_profile`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn names() {
        assert_eq!(snake_case("Greeter"), "greeter");
        assert_eq!(snake_case("UserProfile"), "user_profile");
    }

    #[test]
    fn a_valid_trait_expands() {
        let def = ServiceDef::parse(
            quote!(),
            quote! {
                pub trait Greeter {
                    async fn greet(&self, name: String) -> Result<String, E>;
                    async fn r#type(&self) -> Result<(), E>;
                }
            },
        )
        .unwrap();
        assert_eq!(def.name, "greeter");
        assert_eq!(def.methods[1].name, "type");
        let text = def.expand().to_string();
        assert!(text.contains("GreeterServer") && text.contains("GreeterClient"), "{text}");
    }

    #[test]
    fn errors_are_collected_not_just_the_first() {
        let err = ServiceDef::parse(
            quote!(),
            quote! {
                trait T {
                    fn a(&self) -> Result<(), E>;
                    async fn b(&mut self) -> Result<(), E>;
                }
            },
        )
        .err()
        .unwrap();
        assert_eq!(err.into_iter().count(), 2);
    }
}
