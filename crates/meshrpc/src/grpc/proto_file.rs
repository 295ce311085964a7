//! A service's shape written as a `.proto` file (proto3): what `meshrpc proto` writes
//! and a gRPC caller generates its stubs from.

use std::fmt::Write as _;

use super::shape::{Card, Form, Ty, EMPTY};
use super::ServiceShape;

impl ServiceShape {
    /// The `.proto` file of this service.
    pub fn proto_file(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "// The meshrpc service `{}`, as its gateway serves it over gRPC.", self.service);
        let _ = writeln!(out, "// Written by `meshrpc proto`; field numbers come from field names (docs/grpc.md).");
        if self.untyped {
            let _ = writeln!(
                out,
                "// The service publishes no schemas (`#[meshrpc::service(schema)]`): each message carries\n// the JSON text of the arguments or the answer."
            );
        }
        let _ = writeln!(out, "syntax = \"proto3\";\n\npackage {};\n", self.package);
        let _ = writeln!(out, "service {} {{", self.grpc_name);
        for method in &self.methods {
            let request = &self.messages[method.request].name;
            let reply = &self.messages[method.reply].name;
            if method.takes_items {
                let _ = writeln!(
                    out,
                    "  // `{}` takes a stream of the caller's items beside its arguments: not served over gRPC\n  // (call it over HTTP with NDJSON, or a WebSocket).",
                    method.name
                );
                continue;
            }
            let stream = if method.streams { "stream " } else { "" };
            let _ = writeln!(out, "  rpc {}({request}) returns ({stream}{reply});", method.name);
        }
        let _ = writeln!(out, "}}");
        for message in &self.messages {
            if message.name == EMPTY {
                let _ = writeln!(out, "\n// `()`.\nmessage {EMPTY} {{}}");
                continue;
            }
            let _ = writeln!(out, "\nmessage {} {{", message.name);
            let indent = if message.form == Form::OneOf {
                let _ = writeln!(out, "  oneof variant {{");
                "    "
            } else {
                "  "
            };
            for field in &message.fields {
                let ty = self.type_name(field.ty);
                let label = match field.card {
                    Card::One => String::new(),
                    Card::Optional => "optional ".into(),
                    Card::Repeated => "repeated ".into(),
                    Card::Map => String::new(),
                };
                let ty = if field.card == Card::Map { format!("map<string, {ty}>") } else { ty };
                let note = match field.ty {
                    Ty::Json => " // JSON text",
                    Ty::BigInt => " // decimal",
                    _ => "",
                };
                let key = if field.json != field.name && message.form != Form::Tuple && !field.json.is_empty() {
                    format!(" // JSON key {:?}", field.json)
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{indent}{label}{ty} {} = {};{note}{key}", field.name, field.number);
            }
            if message.form == Form::OneOf {
                let _ = writeln!(out, "  }}");
            }
            let _ = writeln!(out, "}}");
        }
        for e in &self.enums {
            let _ = writeln!(out, "\nenum {} {{", e.name);
            for (i, variant) in e.variants.iter().enumerate() {
                let _ = writeln!(out, "  {} = {i}; // {variant:?}", enum_value_name(&e.name, variant));
            }
            let _ = writeln!(out, "}}");
        }
        out
    }

    fn type_name(&self, ty: Ty) -> String {
        match ty {
            Ty::Str | Ty::Json | Ty::BigInt => "string".into(),
            Ty::Bool => "bool".into(),
            Ty::Double => "double".into(),
            Ty::I32 => "int32".into(),
            Ty::I64 => "int64".into(),
            Ty::U32 => "uint32".into(),
            Ty::U64 => "uint64".into(),
            Ty::Null => EMPTY.into(),
            Ty::Message(m) => self.messages[m].name.clone(),
            Ty::Enum(e) => self.enums[e].name.clone(),
        }
    }
}

/// `Currency`, `usd` → `CURRENCY_USD`: enum values share their package's scope in protobuf.
fn enum_value_name(enum_name: &str, variant: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in enum_name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out.push('_');
    out.extend(variant.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    out
}
