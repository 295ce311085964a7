//! The `#[meshrpc::service]` attribute. Thin: parsing, checks and code emission live in
//! `meshrpc-codegen`, shared with `meshrpc expose`.

use proc_macro::TokenStream;

/// Turns a trait into a meshrpc service: generates `XServer<T>`, `XClient` (which
/// implements the trait) and `XClient::SPEC`. See the `meshrpc` crate docs.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    meshrpc_codegen::expand_attribute(attr.into(), item.into()).into()
}
