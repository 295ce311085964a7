//! JSON Schemas of a service's methods, from its types' `schemars::JsonSchema`
//! implementations (feature `schema`, `#[meshrpc::service(schema)]`): what each node
//! answers to `meshrpc.schema`, and what OpenAPI documents are built from. The schemas
//! describe the JSON codec (what HTTP callers and the JSON wire carry), draft 2020-12,
//! with references into `#/components/schemas/` so that an OpenAPI 3.1 document can hold
//! them as they are.

use schemars::{generate::SchemaSettings, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::spec::SCHEMA_COMPONENTS as COMPONENTS;

/// One method, as generated code describes it.
#[derive(Debug)]
pub struct MethodSchema {
    /// Its wire name.
    pub name: &'static str,
    /// Its arguments (those in the JSON object): name, schema, may be left out.
    pub args: Vec<(&'static str, Schema, bool)>,
    /// The caller's stream items' schema (a method that takes a stream).
    pub items: Option<Schema>,
    /// The `Ok` value's schema (a stream's items, if `streams`).
    pub value: Schema,
    /// The answer is a stream of `value`s.
    pub streams: bool,
    /// The error type's schema.
    pub error: Schema,
    /// Its doc comment (the OpenAPI operation's description); empty if it has none.
    pub doc: &'static str,
}

/// The generator generated code uses.
pub fn schema_generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().with(|s| s.definitions_path = COMPONENTS.into()).into_generator()
}

/// The document of a service's methods: `{"methods": [...], "components": {...}}`.
pub fn schema_document(mut generator: SchemaGenerator, methods: Vec<MethodSchema>) -> String {
    let methods: Vec<Value> = methods
        .into_iter()
        .map(|m| {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for (name, schema, optional) in m.args {
                properties.insert(name.to_owned(), schema.to_value());
                if !optional {
                    required.push(Value::from(name));
                }
            }
            let mut method = json!({
                "name": m.name,
                "args": { "type": "object", "properties": properties, "required": required },
                "items": m.items.map(Schema::to_value),
                "value": m.value.to_value(),
                "streams": m.streams,
                "error": m.error.to_value(),
            });
            if !m.doc.is_empty() {
                method["description"] = Value::from(m.doc);
            }
            method
        })
        .collect();
    let components = generator.take_definitions(true);
    let mut document = json!({ "methods": methods, "components": components });
    bound_integers(&mut document);
    document.to_string()
}

/// Gives every integer schema of a Rust integer type (`"format": "uint32"`…) the bounds the
/// node holds it to, so that a validator or a generated client refuses what the node would
/// (`{"from": 4294967296}` for a `u32`). 128-bit bounds are powers of two, exact as JSON
/// numbers, hence `exclusiveMaximum`.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
                _ => false,
            };
            let format = map.get("format").and_then(Value::as_str).map(str::to_owned);
            if let (true, Some(format)) = (integer, format) {
                for (key, bound) in integer_bounds(&format) {
                    map.entry(key).or_insert(bound);
                }
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// `(keyword, bound)` of an integer format, as schemars names them.
fn integer_bounds(format: &str) -> Vec<(&'static str, Value)> {
    let two_to = |n: i32| Value::from(2f64.powi(n));
    match format {
        "uint8" => vec![("minimum", 0.into()), ("maximum", u8::MAX.into())],
        "uint16" => vec![("minimum", 0.into()), ("maximum", u16::MAX.into())],
        "uint32" => vec![("minimum", 0.into()), ("maximum", u32::MAX.into())],
        "uint64" | "uint" => vec![("minimum", 0.into()), ("maximum", u64::MAX.into())],
        "uint128" => vec![("minimum", 0.into()), ("exclusiveMaximum", two_to(128))],
        "int8" => vec![("minimum", i8::MIN.into()), ("maximum", i8::MAX.into())],
        "int16" => vec![("minimum", i16::MIN.into()), ("maximum", i16::MAX.into())],
        "int32" => vec![("minimum", i32::MIN.into()), ("maximum", i32::MAX.into())],
        "int64" | "int" => vec![("minimum", i64::MIN.into()), ("maximum", i64::MAX.into())],
        "int128" => vec![("minimum", Value::from(-(2f64.powi(127)))), ("exclusiveMaximum", two_to(127))],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_get_the_bounds_of_their_rust_type() {
        let mut doc = json!({ "a": { "type": "integer", "format": "uint32", "minimum": 0 },
                              "b": { "type": ["integer", "null"], "format": "int8" },
                              "c": { "items": [{ "type": "integer", "format": "uint128" }] } });
        bound_integers(&mut doc);
        assert_eq!(doc["a"]["maximum"], 4_294_967_295u64);
        assert_eq!((doc["b"]["minimum"].as_i64(), doc["b"]["maximum"].as_i64()), (Some(-128), Some(127)));
        assert_eq!(doc["c"]["items"][0]["exclusiveMaximum"].as_f64(), Some(2f64.powi(128)));
    }
}
