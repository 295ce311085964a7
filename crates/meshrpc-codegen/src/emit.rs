//! Code emission for a validated [`ServiceDef`].

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::ServiceDef;

pub(crate) fn service_trait(def: &ServiceDef) -> TokenStream {
    let mut item = def.item.clone();
    // Method options (`#[meshrpc(idempotent)]`) are read by the macro, not compiled.
    for trait_item in &mut item.items {
        if let syn::TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("meshrpc"));
        }
    }
    // Implementations are shared across tasks and published as `Arc<dyn Trait>`.
    item.supertraits.push(syn::parse_quote!(::core::marker::Send));
    item.supertraits.push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    let item = item.into_token_stream();
    // The generated server and client use these types at their spans, so a missing bound
    // is reported there once. Code written by `meshrpc expose` has no such spans: for it
    // the trait checks the types itself.
    if !def.exposed {
        return quote! {
            #[::meshrpc::__private::async_trait]
            #item
        };
    }
    let checks = def.methods.iter().map(|m| {
        let (t, e) = (&m.value, &m.error);
        let check_t = match &m.output {
            Some((item, item_error)) => {
                quote_spanned! {t.span()=> ::meshrpc::__private::assert_item_types::<#item, #item_error>(); }
            }
            None => quote_spanned! {t.span()=> ::meshrpc::__private::assert_value_type::<#t>(); },
        };
        let check_e = quote_spanned! {e.span()=> ::meshrpc::__private::assert_error_type::<#e>(); };
        quote! { #check_t #check_e }
    });
    quote! {
        #[::meshrpc::__private::async_trait]
        #item

        const _: fn() = || {
            #( #checks )*
        };
    }
}

pub(crate) fn server(def: &ServiceDef) -> TokenStream {
    let (vis, trait_ident, server, client) = (&def.vis, def.trait_ident(), def.server_ident(), def.client_ident());
    let as_dyn = syn::Ident::new(&format!("__Meshrpc{trait_ident}AsDyn"), proc_macro2::Span::call_site());
    let doc = format!(" Serves [`{trait_ident}`] on a meshrpc node: `server.publish({server}::new(my_impl))`.");
    let arms = def.methods.iter().map(|m| {
        let (ident, name) = (&m.ident, &m.name);
        let all: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let names: Vec<_> = m.payload_args().map(|(n, _)| n).collect();
        let types = m.payload_args().map(|(_, t)| t);
        let qualified = format!("{}.{}", def.name, m.name);
        // Spanned at the return type: a value or error type that cannot be encoded is
        // reported there, not at the attribute.
        let reply = match &m.output {
            Some(_) => quote_spanned! {m.returns.span()=>
                ::meshrpc::__private::reply_stream(__meshrpc_codec, #qualified, __meshrpc_result)
            },
            None => quote_spanned! {m.returns.span()=>
                ::meshrpc::__private::reply(__meshrpc_codec, #qualified, __meshrpc_result)
            },
        };
        let items = match m.input {
            Some(i) => {
                let (stream, ty) = &m.args[i];
                quote_spanned! {ty.span()=>
                    let #stream: #ty = ::meshrpc::__private::take_items(__meshrpc_codec, #qualified, __meshrpc_input)?;
                }
            }
            None => quote! { ::meshrpc::__private::no_items(#qualified, &__meshrpc_input)?; },
        };
        quote! {
            #name => ::std::boxed::Box::pin(async move {
                #[derive(::meshrpc::__private::serde::Deserialize)]
                #[serde(crate = "::meshrpc::__private::serde")]
                struct __Args { #( #names: #types, )* }
                let __Args { #( #names, )* } = __meshrpc_codec.decode_args::<__Args>(&__meshrpc_payload)?;
                #items
                let __meshrpc_result = __meshrpc_service.#ident( #( #all ),* ).await;
                #reply
            }),
        }
    });
    let schemas = schemas(def);
    quote! {
        #[doc = #doc]
        #vis struct #server<__MeshrpcImpl: ?::core::marker::Sized> {
            inner: ::std::sync::Arc<__MeshrpcImpl>,
        }

        impl<__MeshrpcImpl: #trait_ident> #server<__MeshrpcImpl> {
            /// Wraps an implementation.
            pub fn new(service: __MeshrpcImpl) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }
        }

        impl<__MeshrpcImpl: #trait_ident + ?::core::marker::Sized> #server<__MeshrpcImpl> {
            /// Wraps a shared implementation (also `Arc<dyn Trait>`).
            pub fn from_arc(service: ::std::sync::Arc<__MeshrpcImpl>) -> Self {
                Self { inner: service }
            }
        }

        #[doc(hidden)]
        /// Turns a shared implementation into the trait object in-process callers use.
        #vis trait #as_dyn {
            fn __meshrpc_as_dyn(self: ::std::sync::Arc<Self>) -> ::std::sync::Arc<dyn #trait_ident>;
        }

        impl<__MeshrpcImpl: #trait_ident> #as_dyn for __MeshrpcImpl {
            fn __meshrpc_as_dyn(self: ::std::sync::Arc<Self>) -> ::std::sync::Arc<dyn #trait_ident> {
                self
            }
        }

        impl #as_dyn for dyn #trait_ident {
            fn __meshrpc_as_dyn(self: ::std::sync::Arc<Self>) -> ::std::sync::Arc<dyn #trait_ident> {
                self
            }
        }

        impl<__MeshrpcImpl: #trait_ident + #as_dyn + ?::core::marker::Sized> ::meshrpc::server::Service for #server<__MeshrpcImpl> {
            fn spec(&self) -> &'static ::meshrpc::spec::ServiceSpec {
                #client::SPEC
            }

            fn local(&self) -> ::core::option::Option<::std::sync::Arc<dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync>> {
                let __meshrpc_local: ::std::sync::Arc<dyn #trait_ident> = #as_dyn::__meshrpc_as_dyn(::std::sync::Arc::clone(&self.inner));
                ::core::option::Option::Some(::std::sync::Arc::new(__meshrpc_local))
            }

            #schemas

            fn call(
                &self,
                __meshrpc_method: &str,
                __meshrpc_codec: ::meshrpc::Codec,
                __meshrpc_payload: ::meshrpc::__private::Bytes,
                __meshrpc_input: ::core::option::Option<::meshrpc::call::Items>,
            ) -> ::meshrpc::call::BoxFuture<::core::result::Result<::meshrpc::call::Reply, ::meshrpc::Error>> {
                let __meshrpc_service = ::std::sync::Arc::clone(&self.inner);
                match __meshrpc_method {
                    #( #arms )*
                    _ => ::meshrpc::__private::unknown_method(#client::SPEC.name, __meshrpc_method),
                }
            }
        }
    }
}

pub(crate) fn client(def: &ServiceDef) -> TokenStream {
    let (vis, trait_ident, client) = (&def.vis, def.trait_ident(), def.client_ident());
    let service_name = &def.name;
    let trait_name = trait_ident.to_string();
    let client_name = client.to_string();
    let doc =
        format!(" Calls a remote [`{trait_ident}`]; implements `{trait_ident}` itself, so it replaces a local value.");
    let method_specs = def.methods.iter().map(|m| {
        let name = &m.name;
        let arg_name = |n: &syn::Ident| n.to_string().trim_start_matches("r#").to_owned();
        let args = m.args.iter().map(|(n, _)| arg_name(n));
        let items = match m.input {
            Some(i) => {
                let stream = arg_name(&m.args[i].0);
                quote! { ::core::option::Option::Some(#stream) }
            }
            None => quote! { ::core::option::Option::None },
        };
        let (streams, idempotent, hedge) = (m.output.is_some(), m.idempotent, m.hedge);
        let timeout = match m.timeout {
            Some(nanos) => quote! { ::core::option::Option::Some(::core::time::Duration::from_nanos(#nanos)) },
            None => quote! { ::core::option::Option::None },
        };
        quote! {
            ::meshrpc::spec::MethodSpec {
                name: #name, args: &[ #( #args ),* ], items: #items, streams: #streams, idempotent: #idempotent,
                timeout: #timeout, hedge: #hedge,
            }
        }
    });
    let methods = def.item.items.iter().filter_map(|i| match i {
        syn::TraitItem::Fn(f) => Some(f),
        _ => None,
    });
    let impls = methods.zip(&def.methods).map(|(f, m)| {
        let sig = &f.sig;
        let name = &m.name;
        let names: Vec<_> = m.payload_args().map(|(n, _)| n).collect();
        let types = m.payload_args().map(|(_, t)| t);
        let (lifetime, args_ty) =
            if names.is_empty() { (quote!(), quote!(__Args)) } else { (quote!(<'__a>), quote!(__Args<'_>)) };
        let input = match m.input {
            Some(i) => {
                let stream = &m.args[i].0;
                quote! { ::core::option::Option::Some(self.channel.items(#stream)) }
            }
            None => quote! { ::core::option::Option::None },
        };
        let ident = &m.ident;
        let all: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let local_call = quote! { <dyn #trait_ident as #trait_ident>::#ident(&**__meshrpc_local, #( #all ),*) };
        // A method with a timeout of its own: calls get at most that (callers may shorten it).
        let channel = match m.timeout {
            Some(nanos) => quote! {
                &self.channel.with_timeout_at_most(::core::time::Duration::from_nanos(#nanos))
            },
            None => quote! { &self.channel },
        };
        let colocated = match &m.output {
            Some(_) => quote_spanned! {m.returns.span()=>
                ::meshrpc::__private::colocated_stream(#channel, #service_name, #name, #local_call).await
            },
            None => quote_spanned! {m.returns.span()=>
                ::meshrpc::__private::colocated(#channel, #service_name, #name, #local_call).await
            },
        };
        let call = match (&m.output, m.input) {
            (None, None) => quote_spanned! {m.returns.span()=>
                ::meshrpc::Channel::call(#channel, #service_name, #name, &__meshrpc_args).await
            },
            (None, Some(_)) => quote_spanned! {m.returns.span()=>
                ::meshrpc::Channel::call_with(#channel, #service_name, #name, &__meshrpc_args, #input).await
            },
            (Some(_), _) => quote_spanned! {m.returns.span()=>
                ::meshrpc::Channel::open(#channel, #service_name, #name, &__meshrpc_args, #input).await
            },
        };
        quote! {
            #sig {
                // The same process serves it: call the implementation, no encoding.
                if let ::core::option::Option::Some(__meshrpc_local) = &self.local {
                    if self.channel.colocated_now(#service_name) {
                        return #colocated;
                    }
                }
                #[derive(::meshrpc::__private::serde::Serialize)]
                #[serde(crate = "::meshrpc::__private::serde")]
                struct __Args #lifetime { #( #names: &'__a #types, )* }
                let __meshrpc_args: #args_ty = __Args { #( #names: &#names, )* };
                #call
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            channel: ::meshrpc::Channel,
            /// The implementation, when this process serves the service itself.
            local: ::core::option::Option<::std::sync::Arc<dyn #trait_ident>>,
        }

        impl ::core::fmt::Debug for #client {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#client_name).field("channel", &self.channel).field("colocated", &self.local.is_some()).finish()
            }
        }

        impl #client {
            /// What the service offers: its name, methods and argument names.
            pub const SPEC: &'static ::meshrpc::spec::ServiceSpec = &::meshrpc::spec::ServiceSpec {
                name: #service_name,
                trait_name: #trait_name,
                version: ::core::env!("CARGO_PKG_VERSION"),
                methods: &[ #( #method_specs ),* ],
            };

            /// A client over a channel: a connection, a cluster channel, or a local server.
            /// When the channel's node serves the service itself, calls go straight to its
            /// implementation (see `meshrpc::cluster::Colocated`).
            pub fn new(channel: impl ::core::convert::Into<::meshrpc::Channel>) -> Self {
                let channel: ::meshrpc::Channel = channel.into();
                let local = channel
                    .colocated(Self::SPEC)
                    .and_then(|__meshrpc_any| __meshrpc_any.downcast_ref::<::std::sync::Arc<dyn #trait_ident>>().cloned());
                Self { channel, local }
            }

            /// The same client with another per-call timeout.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self { channel: self.channel.with_timeout(timeout), local: self.local.clone() }
            }

            /// The same client with another codec (JSON is the default).
            pub fn with_codec(&self, codec: ::meshrpc::Codec) -> Self {
                Self { channel: self.channel.with_codec(codec), local: self.local.clone() }
            }

            /// The same client whose streams have no deadline of their own: a stream lasts
            /// until either side ends it (else the timeout covers the whole stream).
            pub fn without_stream_deadline(&self) -> Self {
                Self { channel: self.channel.without_stream_deadline(), local: self.local.clone() }
            }

            /// The same client with every call pinned to replicas running `version`.
            pub fn with_version(&self, version: impl ::core::convert::Into<::std::sync::Arc<str>>) -> Self {
                Self { channel: self.channel.with_version(version), local: self.local.clone() }
            }

            /// The same client pinned to a sticky-session key.
            pub fn with_key(&self, key: impl ::core::convert::Into<::std::sync::Arc<str>>) -> Self {
                Self { channel: self.channel.with_key(key), local: self.local.clone() }
            }

            /// The channel underneath.
            pub fn channel(&self) -> &::meshrpc::Channel {
                &self.channel
            }
        }

        #[::meshrpc::__private::async_trait]
        impl #trait_ident for #client {
            #( #impls )*
        }
    }
}

/// With `schema`: the JSON Schemas of every method's arguments, value (a stream's items)
/// and error, from the types' `schemars::JsonSchema` implementations.
fn schemas(def: &ServiceDef) -> TokenStream {
    if !def.schema {
        return quote! {};
    }
    let methods = def.methods.iter().map(|m| {
        let name = &m.name;
        let args = m.payload_args().map(|(n, t)| {
            let arg = n.to_string().trim_start_matches("r#").to_owned();
            let optional = is_option(t);
            quote_spanned! {t.span()=> (#arg, __meshrpc_generator.subschema_for::<#t>(), #optional) }
        });
        let error = &m.error;
        let (value, streams) = match &m.output {
            Some((item, _)) => (item, true),
            None => (&m.value, false),
        };
        let items = match m.input {
            Some(i) => {
                let ty = &m.args[i].1;
                let (item, _) = crate::check::stream_types(ty).expect("a stream argument has an item type");
                quote! { ::core::option::Option::Some(__meshrpc_generator.subschema_for::<#item>()) }
            }
            None => quote! { ::core::option::Option::None },
        };
        let doc = &m.doc;
        quote! {
            ::meshrpc::__private::MethodSchema {
                doc: #doc,
                name: #name,
                args: ::std::vec![ #( #args ),* ],
                items: #items,
                value: __meshrpc_generator.subschema_for::<#value>(),
                streams: #streams,
                error: __meshrpc_generator.subschema_for::<#error>(),
            }
        }
    });
    quote! {
        fn schemas(&self) -> ::core::option::Option<::std::string::String> {
            let mut __meshrpc_generator = ::meshrpc::__private::schema_generator();
            let __meshrpc_methods = ::std::vec![ #( #methods ),* ];
            ::core::option::Option::Some(::meshrpc::__private::schema_document(__meshrpc_generator, __meshrpc_methods))
        }
    }
}

/// `Option<T>` as written (an argument that may be left out of the JSON object).
fn is_option(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}
