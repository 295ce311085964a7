//! A service's contract as protobuf sees it: messages, enums and methods compiled from
//! the JSON Schemas the service publishes (`#[meshrpc::service(schema)]`), or, for a
//! service that does not describe its types, messages carrying JSON text.
//!
//! Field numbers come from field names (a hash), not from their order: a field added to
//! a struct never renumbers the others, so the JSON codec's rules of compatibility (by
//! name) hold for gRPC callers too. A tuple's fields and a reply's wrapper are numbered by
//! position (position is their identity). What protobuf cannot say is carried as JSON
//! text in a `string` field: see `Ty::Json`.

use std::collections::HashMap;

use serde_json::Value;

use crate::spec::SCHEMA_COMPONENTS;

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bool,
    Double,
    I32,
    I64,
    U32,
    U64,
    /// A 128-bit integer, as its decimal text.
    BigInt,
    /// Any JSON value protobuf cannot describe (an open schema, a nested list, an
    /// internally tagged enum), as JSON text.
    Json,
    /// `()` / JSON null: the empty message.
    Null,
    Message(usize),
    Enum(usize),
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    One,
    /// May be absent (`Option<T>`, or an argument that may be left out).
    Optional,
    Repeated,
    /// A JSON object of string keys.
    Map,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Its key in JSON.
    pub(crate) json: String,
    /// Its name in the `.proto`.
    pub(crate) name: String,
    pub(crate) number: u32,
    pub(crate) ty: Ty,
    pub(crate) card: Card,
}

/// How a message stands for a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// A JSON object, a field per key.
    Object,
    /// A JSON array of fixed length (a tuple), a field per position.
    Tuple,
    /// A Rust enum as serde writes it (externally tagged): `"Unit"` or `{"Variant": v}`;
    /// one field of a `oneof` is set.
    OneOf,
    /// Any value, as its one field `value` (what a method answers when it is not a struct).
    Wrapper,
}

#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) name: String,
    pub(crate) form: Form,
    pub(crate) fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub(crate) struct EnumDef {
    pub(crate) name: String,
    /// Variants as JSON names them, numbered by position.
    pub(crate) variants: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Method {
    pub(crate) name: String,
    /// The arguments' message.
    pub(crate) request: usize,
    /// What it answers (each item of a stream).
    pub(crate) reply: usize,
    pub(crate) streams: bool,
    /// Takes a stream of the caller's items: not served over gRPC (a gRPC stream has no
    /// place for the arguments beside the items).
    pub(crate) takes_items: bool,
}

/// One service: a `.proto` file's package and the gRPC service in it.
#[derive(Debug, Clone)]
pub struct ServiceShape {
    /// The service's meshrpc name.
    pub(crate) service: String,
    /// The `.proto` package: the name, made an identifier.
    pub(crate) package: String,
    /// The gRPC service in that package.
    pub(crate) grpc_name: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) enums: Vec<EnumDef>,
    pub(crate) methods: Vec<Method>,
    /// The service publishes no schemas: every message carries JSON text.
    pub(crate) untyped: bool,
}

/// A method as a cluster gossips it (no types): name, arguments, answers a stream, takes one.
pub type MethodNames = (String, Vec<String>, bool, bool);

impl ServiceShape {
    /// The shape of `service`: typed from `schemas` (what `meshrpc.schema` answers), else
    /// with JSON text in every message.
    pub fn new(service: &str, methods: &[MethodNames], schemas: Option<&Value>) -> ServiceShape {
        let mut compiler = Compiler {
            components: schemas.and_then(|s| s["components"].as_object()),
            shape: ServiceShape {
                service: service.to_owned(),
                package: package_of(service),
                grpc_name: camel(service),
                messages: Vec::new(),
                enums: Vec::new(),
                methods: Vec::new(),
                untyped: schemas.is_none(),
            },
            named: HashMap::new(),
        };
        for (name, args, streams, takes_items) in methods {
            let described = schemas
                .and_then(|s| s["methods"].as_array())
                .and_then(|ms| ms.iter().find(|m| m["name"] == name.as_str()));
            let method_camel = camel(name);
            let (request, reply) = match described {
                Some(m) => {
                    let request = compiler.object_message(&format!("{method_camel}Request"), &m["args"]);
                    (request, compiler.reply_message(&format!("{method_camel}Reply"), &m["value"]))
                }
                None => {
                    let _ = args;
                    let json = |c: &mut Compiler<'_>, name: String| {
                        let field = Field {
                            json: String::new(),
                            name: "json".into(),
                            number: 1,
                            ty: Ty::Json,
                            card: Card::One,
                        };
                        c.add_message(Message { name, form: Form::Wrapper, fields: vec![field] })
                    };
                    (
                        json(&mut compiler, format!("{method_camel}Request")),
                        json(&mut compiler, format!("{method_camel}Reply")),
                    )
                }
            };
            compiler.shape.methods.push(Method {
                name: name.clone(),
                request,
                reply,
                streams: *streams,
                takes_items: *takes_items,
            });
        }
        compiler.shape
    }

    /// The gRPC path prefix of this service's methods: `/{package}.{Service}/`.
    pub fn path_prefix(&self) -> String {
        format!("/{}.{}/", self.package, self.grpc_name)
    }

    pub(crate) fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// A service name as a `.proto` package (an identifier).
pub fn package_of(service: &str) -> String {
    identifier(service)
}

/// `[A-Za-z0-9_]` only, not starting with a digit.
fn identifier(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'x');
    }
    out
}

/// `send_postcard` → `SendPostcard`, `mesh-api` → `MeshApi`.
fn camel(name: &str) -> String {
    let joined: String = identifier(name)
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    if joined.is_empty() {
        "X".to_owned()
    } else {
        identifier(&joined)
    }
}

/// A field's number from its name: stable when fields are added or reordered. In
/// 1..2^29, never in protobuf's reserved 19000–19999.
pub(crate) fn field_number(name: &str) -> u32 {
    let mut h = crate::spec::Fnv::new(name);
    h.eat("field");
    let n = 1 + (h.value() % ((1 << 29) - 2 - 1000)) as u32;
    if n >= 19_000 {
        n + 1000
    } else {
        n
    }
}

struct Compiler<'a> {
    components: Option<&'a serde_json::Map<String, Value>>,
    shape: ServiceShape,
    /// Components compiled so far, by name.
    named: HashMap<String, (Ty, Card)>,
}

/// The empty message's name.
pub(crate) const EMPTY: &str = "Empty";

/// Nesting the compiler follows before a schema is carried as JSON text.
const MAX_DEPTH: usize = 32;

impl Compiler<'_> {
    fn add_message(&mut self, mut message: Message) -> usize {
        message.name = self.unique(&message.name);
        self.shape.messages.push(message);
        self.shape.messages.len() - 1
    }

    fn unique(&self, name: &str) -> String {
        let base = identifier(name);
        let taken = |n: &str| {
            n == self.shape.grpc_name
                || self.shape.messages.iter().any(|m| m.name == n)
                || self.shape.enums.iter().any(|e| e.name == n)
        };
        if !taken(&base) && base != EMPTY {
            return base;
        }
        (2..).map(|i| format!("{base}{i}")).find(|n| !taken(n)).expect("a free name")
    }

    /// The empty message (`Empty`), what `()` is.
    fn empty(&mut self) -> usize {
        if let Some(at) = self.shape.messages.iter().position(|m| m.name == EMPTY) {
            return at;
        }
        self.shape.messages.push(Message { name: EMPTY.to_owned(), form: Form::Wrapper, fields: Vec::new() });
        self.shape.messages.len() - 1
    }

    /// A method's arguments: an object schema, always a message.
    fn object_message(&mut self, name: &str, schema: &Value) -> usize {
        let at = self.add_message(Message { name: name.to_owned(), form: Form::Object, fields: Vec::new() });
        let name = self.shape.messages[at].name.clone();
        let fields = self.object_fields(&name, schema, 0);
        self.shape.messages[at].fields = fields;
        at
    }

    /// What a method answers: its struct's message, else a wrapper of the value.
    fn reply_message(&mut self, name: &str, schema: &Value) -> usize {
        match self.ty(name, schema, 0) {
            (Ty::Message(at), Card::One) if self.shape.messages[at].form == Form::Object => at,
            (Ty::Null, _) => self.empty(),
            (ty, card) => {
                let field = Field { json: "value".into(), name: "value".into(), number: 1, ty, card };
                self.add_message(Message { name: name.to_owned(), form: Form::Wrapper, fields: vec![field] })
            }
        }
    }

    fn object_fields(&mut self, parent: &str, schema: &Value, depth: usize) -> Vec<Field> {
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let mut fields = Vec::new();
        if let Some(properties) = schema["properties"].as_object() {
            for (key, property) in properties {
                let (ty, mut card) = self.ty(&format!("{parent}{}", camel(key)), property, depth + 1);
                if card == Card::One && !required.contains(&key.as_str()) && ty != Ty::Null {
                    card = Card::Optional;
                }
                fields.push(Field { json: key.clone(), name: identifier(key), number: field_number(key), ty, card });
            }
        }
        fields.sort_by_key(|f| f.number);
        // Two keys that differ only in characters an identifier cannot hold.
        for i in 1..fields.len() {
            if fields[..i].iter().any(|f| f.name == fields[i].name) {
                fields[i].name = format!("{}_{}", fields[i].name, fields[i].number);
            }
        }
        fields
    }

    /// The type of a schema, named `hint` if it needs a message or enum of its own.
    fn ty(&mut self, hint: &str, schema: &Value, depth: usize) -> (Ty, Card) {
        const JSON: (Ty, Card) = (Ty::Json, Card::One);
        if depth > MAX_DEPTH {
            return JSON;
        }
        let Some(map) = schema.as_object() else { return JSON };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            return self.component(reference, depth);
        }
        if let Some([only]) = map.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            return self.ty(hint, only, depth + 1);
        }
        // `Option<T>`: `{"type": [T, "null"]}` or `{"anyOf": [T, {"type": "null"}]}`.
        if let Some(Value::Array(types)) = map.get("type") {
            let others: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
            if let ([other], true) = (others.as_slice(), types.len() == 2) {
                let mut single = map.clone();
                single.insert("type".into(), (*other).clone());
                return optional(self.ty(hint, &Value::Object(single), depth + 1));
            }
            return JSON;
        }
        if let Some(options) = map.get("anyOf").and_then(Value::as_array) {
            let others: Vec<&Value> = options.iter().filter(|o| o["type"] != "null").collect();
            if let ([other], 2) = (others.as_slice(), options.len()) {
                return optional(self.ty(hint, other, depth + 1));
            }
            return JSON;
        }
        if let Some(variants) = map.get("enum").and_then(Value::as_array) {
            return self.unit_enum(hint, variants);
        }
        if let Some(variants) = map.get("oneOf").and_then(Value::as_array) {
            return self.tagged_enum(hint, variants, depth);
        }
        match map.get("type").and_then(Value::as_str) {
            Some("string") => (Ty::Str, Card::One),
            Some("boolean") => (Ty::Bool, Card::One),
            Some("number") => (Ty::Double, Card::One),
            Some("null") => {
                self.empty();
                (Ty::Null, Card::One)
            }
            Some("integer") => (integer(map.get("format").and_then(Value::as_str)), Card::One),
            Some("array") => {
                if let Some(items) = map.get("prefixItems").and_then(Value::as_array) {
                    return self.tuple(hint, items, depth);
                }
                match map.get("items").map(|items| self.ty(&format!("{hint}Item"), items, depth + 1)) {
                    Some((ty, Card::One)) if ty != Ty::Null => (ty, Card::Repeated),
                    _ => JSON,
                }
            }
            Some("object") if map.contains_key("properties") => {
                let at = self.add_message(Message { name: hint.to_owned(), form: Form::Object, fields: Vec::new() });
                let name = self.shape.messages[at].name.clone();
                self.shape.messages[at].fields = self.object_fields(&name, schema, depth);
                (Ty::Message(at), Card::One)
            }
            Some("object") => match map.get("additionalProperties") {
                Some(values @ Value::Object(_)) => match self.ty(&format!("{hint}Value"), values, depth + 1) {
                    (ty, Card::One) if ty != Ty::Null => (ty, Card::Map),
                    _ => JSON,
                },
                _ => JSON,
            },
            _ => JSON,
        }
    }

    fn component(&mut self, reference: &str, depth: usize) -> (Ty, Card) {
        let Some(name) = reference.strip_prefix(SCHEMA_COMPONENTS) else { return (Ty::Json, Card::One) };
        if let Some(known) = self.named.get(name) {
            return *known;
        }
        let Some(schema) = self.components.and_then(|c| c.get(name)) else { return (Ty::Json, Card::One) };
        let schema = schema.clone();
        // A struct is named before its fields are compiled: it may hold itself (boxed).
        if schema["type"] == "object" && schema.get("properties").is_some() {
            let at = self.add_message(Message { name: name.to_owned(), form: Form::Object, fields: Vec::new() });
            self.named.insert(name.to_owned(), (Ty::Message(at), Card::One));
            let message_name = self.shape.messages[at].name.clone();
            self.shape.messages[at].fields = self.object_fields(&message_name, &schema, depth + 1);
            return (Ty::Message(at), Card::One);
        }
        // Anything else that refers to itself stays JSON text.
        self.named.insert(name.to_owned(), (Ty::Json, Card::One));
        let compiled = self.ty(name, &schema, depth + 1);
        self.named.insert(name.to_owned(), compiled);
        compiled
    }

    fn unit_enum(&mut self, hint: &str, variants: &[Value]) -> (Ty, Card) {
        let Some(names) = variants.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>() else {
            return (Ty::Json, Card::One);
        };
        if names.is_empty() {
            return (Ty::Json, Card::One); // protobuf has no empty enum
        }
        let name = self.unique(hint);
        self.shape.enums.push(EnumDef { name, variants: names });
        (Ty::Enum(self.shape.enums.len() - 1), Card::One)
    }

    /// serde's externally tagged enum: unit variants as strings, others as
    /// `{"Variant": value}` objects. Other forms (internally or adjacently tagged,
    /// untagged) stay JSON text.
    fn tagged_enum(&mut self, hint: &str, variants: &[Value], depth: usize) -> (Ty, Card) {
        let mut cases: Vec<(String, Option<&Value>)> = Vec::new();
        for variant in variants {
            if let Some(units) = variant["enum"].as_array() {
                for unit in units {
                    let Some(unit) = unit.as_str() else { return (Ty::Json, Card::One) };
                    cases.push((unit.to_owned(), None));
                }
            } else if let Some(unit) = variant["const"].as_str() {
                cases.push((unit.to_owned(), None));
            } else if let (Some(properties), Some([Value::String(required)])) =
                (variant["properties"].as_object(), variant["required"].as_array().map(Vec::as_slice))
            {
                match (properties.len(), properties.get(required)) {
                    (1, Some(value)) => cases.push((required.clone(), Some(value))),
                    _ => return (Ty::Json, Card::One),
                }
            } else {
                return (Ty::Json, Card::One);
            }
        }
        let at = self.add_message(Message { name: hint.to_owned(), form: Form::OneOf, fields: Vec::new() });
        let name = self.shape.messages[at].name.clone();
        let mut fields = Vec::new();
        for (variant, value) in cases {
            let (ty, card) = match value {
                None => {
                    self.empty();
                    (Ty::Null, Card::One)
                }
                Some(value) => match self.ty(&format!("{name}{}", camel(&variant)), value, depth + 1) {
                    // A oneof's field holds one value.
                    (ty, Card::One) => (ty, Card::One),
                    _ => (Ty::Json, Card::One),
                },
            };
            fields.push(Field { name: identifier(&variant), number: field_number(&variant), json: variant, ty, card });
        }
        fields.sort_by_key(|f| f.number);
        self.shape.messages[at].fields = fields;
        (Ty::Message(at), Card::One)
    }

    fn tuple(&mut self, hint: &str, items: &[Value], depth: usize) -> (Ty, Card) {
        let at = self.add_message(Message { name: hint.to_owned(), form: Form::Tuple, fields: Vec::new() });
        let name = self.shape.messages[at].name.clone();
        let mut fields = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let (ty, card) = self.ty(&format!("{name}F{i}"), item, depth + 1);
            fields.push(Field { json: i.to_string(), name: format!("f{i}"), number: i as u32 + 1, ty, card });
        }
        self.shape.messages[at].fields = fields;
        (Ty::Message(at), Card::One)
    }
}

/// `T` of an `Option<T>`: optional when it was one value.
fn optional((ty, card): (Ty, Card)) -> (Ty, Card) {
    match (ty, card) {
        (Ty::Null, _) => (Ty::Json, Card::One),
        (ty, Card::One) => (ty, Card::Optional),
        // `Option<Vec<T>>`: absent and empty are told apart in JSON only.
        _ => (Ty::Json, Card::One),
    }
}

/// An integer's protobuf type from schemars' `format`.
fn integer(format: Option<&str>) -> Ty {
    match format {
        Some("uint8" | "uint16" | "uint32") => Ty::U32,
        Some("int8" | "int16" | "int32") => Ty::I32,
        Some("uint64" | "uint") => Ty::U64,
        Some("int128" | "uint128") => Ty::BigInt,
        _ => Ty::I64,
    }
}
