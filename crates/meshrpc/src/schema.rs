//! JSON Schemas of a service's methods, from its types' `schemars::JsonSchema`
//! implementations (feature `schema`, `#[meshrpc::service(schema)]`): what each node
//! answers to `meshrpc.schema`, and what OpenAPI documents are built from. The schemas
//! describe the JSON codec (what HTTP callers and the JSON wire carry), draft 2020-12,
//! with references into `#/components/schemas/` so that an OpenAPI 3.1 document can hold
//! them as they are.

use schemars::{generate::SchemaSettings, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Where definitions go (and references point).
pub(crate) const COMPONENTS: &str = "#/components/schemas/";

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
            json!({
                "name": m.name,
                "args": { "type": "object", "properties": properties, "required": required },
                "items": m.items.map(Schema::to_value),
                "value": m.value.to_value(),
                "streams": m.streams,
                "error": m.error.to_value(),
            })
        })
        .collect();
    let components = generator.take_definitions(true);
    json!({ "methods": methods, "components": components }).to_string()
}
