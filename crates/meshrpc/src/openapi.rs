//! An OpenAPI 3.1 document of services as HTTP serves them (`POST /{service}/{method}`,
//! JSON arguments, the `{"data":…,"errors":[…]}` envelope): built from each service's
//! method list and, when it publishes them (`#[meshrpc::service(schema)]`), the JSON
//! Schemas of its types. A service that does not describe its types gets open schemas.

use serde_json::{json, Map, Value};

/// A service to describe: its methods (name, argument names, whether it answers a
/// stream, whether it takes one) and its schema document, if it has one.
#[derive(Debug, Clone)]
pub struct ServiceDoc {
    /// The service's name.
    pub name: String,
    /// `(method, argument names, answers a stream, takes a stream)`.
    pub methods: Vec<(String, Vec<String>, bool, bool)>,
    /// What `meshrpc.schema` answered for it.
    pub schemas: Option<Value>,
}

/// The headers every RPC route takes.
fn parameters() -> Value {
    json!([
        { "name": "meshrpc-timeout-ms", "in": "header", "required": false,
          "description": "Milliseconds the caller waits (0: no deadline); the gateway's default otherwise.",
          "schema": { "type": "integer", "minimum": 0 } },
        { "name": "meshrpc-key", "in": "header", "required": false,
          "description": "Sticky-session key: calls with the same key go to the same replica.",
          "schema": { "type": "string" } },
        { "name": "meshrpc-version", "in": "header", "required": false,
          "description": "Only replicas running this version of the service answer.",
          "schema": { "type": "string" } },
        { "name": "traceparent", "in": "header", "required": false,
          "description": "W3C trace context; a malformed one starts a new trace.",
          "schema": { "type": "string" } },
    ])
}

use crate::spec::SCHEMA_COMPONENTS as COMPONENTS;

/// The prefix of meshrpc's own schemas (the node service's name: no service takes it).
const OWN: &str = crate::spec::NODE_SERVICE;

/// One entry of an answer's `errors`: `{"code", "message", "detail"?}`, every code an HTTP
/// answer may carry.
fn error_entry() -> Value {
    json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string", "enum": [
                "bad_request", "unknown_service", "unknown_method", "timeout", "cancelled",
                "unavailable", "overloaded", "too_large", "protocol", "tls", "permission_denied",
                "internal", "application", "rate_limited", "method_not_allowed", "not_found", "not_ready",
                "body_timeout", "unauthenticated"
            ] },
            "message": { "type": "string" },
            "detail": {}
        }
    })
}

/// `{"data": null, "errors": [entry]}`.
fn error_envelope() -> Value {
    json!({
        "type": "object",
        "required": ["data", "errors"],
        "properties": {
            "data": { "type": "null" },
            "errors": { "type": "array", "items": { "$ref": format!("{COMPONENTS}{OWN}.Error") } }
        }
    })
}

/// `value` with its references to `#/components/schemas/X` pointing at `service.X`, where
/// the document keeps the service's own schemas: two services may each have an `Error`.
fn namespaced(value: &Value, service: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v.as_str().and_then(|r| r.strip_prefix(COMPONENTS))) {
                    ("$ref", Some(name)) => (k.clone(), Value::from(format!("{COMPONENTS}{service}.{name}"))),
                    _ => (k.clone(), namespaced(v, service)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| namespaced(v, service)).collect()),
        other => other.clone(),
    }
}

/// The OpenAPI 3.1 document of `services`.
pub fn document(title: &str, services: &[ServiceDoc]) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    components.insert(format!("{OWN}.Error"), error_entry());
    components.insert(format!("{OWN}.ErrorEnvelope"), error_envelope());
    let envelope = json!({ "$ref": format!("{COMPONENTS}{OWN}.ErrorEnvelope") });
    for service in services {
        // Each service's schemas under its own name (`greeter.Postcard`).
        let schemas = service.schemas.as_ref().map(|s| namespaced(s, &service.name));
        let schemas = schemas.as_ref();
        if let Some(defs) = schemas.and_then(|s| s["components"].as_object()) {
            for (name, schema) in defs {
                components.insert(format!("{}.{name}", service.name), schema.clone());
            }
        }
        for (method, args, streams, takes_items) in &service.methods {
            let described = schemas
                .and_then(|s| s["methods"].as_array())
                .and_then(|ms| ms.iter().find(|m| m["name"] == method.as_str()));
            let args_schema = described.map(|m| m["args"].clone()).unwrap_or_else(|| {
                let properties: Map<String, Value> = args.iter().map(|a| (a.clone(), json!({}))).collect();
                json!({ "type": "object", "properties": properties })
            });
            let value = described.map_or(json!({}), |m| m["value"].clone());
            let error = described.map_or(json!({}), |m| m["error"].clone());
            let ok = if *streams {
                json!({
                    "description": "The answer's stream: one JSON value a line (NDJSON), or Server-Sent Events with `Accept: text/event-stream`.",
                    "content": {
                        "application/x-ndjson": { "schema": value },
                        "text/event-stream": { "schema": { "type": "string" } }
                    }
                })
            } else {
                json!({
                    "description": "The method's value.",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["data", "errors"],
                        "properties": { "data": value, "errors": {
                            "type": "array", "maxItems": 0, "items": { "$ref": format!("{COMPONENTS}{OWN}.Error") }
                        } }
                    } } }
                })
            };
            let app_error = json!({
                "description": "The method's own error (its type, in `errors[0].detail`).",
                "content": { "application/json": { "schema": {
                    "allOf": [
                        envelope.clone(),
                        { "type": "object", "properties": { "errors": { "type": "array", "items": {
                            "type": "object", "properties": { "detail": error }
                        } } } }
                    ]
                } } }
            });
            let failure = json!({
                "description": "meshrpc failed the call (see `errors[0].code`).",
                "content": { "application/json": { "schema": envelope.clone() } }
            });
            let request = if *takes_items {
                json!({ "required": true, "content": {
                    "application/x-ndjson": { "schema": { "description": "The arguments object on the first line, then the caller's items, one a line." } }
                } })
            } else {
                json!({ "required": true, "content": { "application/json": { "schema": args_schema } } })
            };
            let mut operation = json!({
                "operationId": format!("{}.{}", service.name, method),
                "tags": [service.name],
                "parameters": parameters(),
                "requestBody": request,
                "responses": { "200": ok, "422": app_error, "default": failure }
            });
            // The method's doc comment: its first line as the summary, all of it as the description.
            if let Some(doc) = described.and_then(|m| m["description"].as_str()).filter(|d| !d.is_empty()) {
                operation["summary"] = Value::from(doc.lines().next().unwrap_or_default());
                operation["description"] = Value::from(doc);
            }
            paths.insert(format!("/{}/{}", service.name, method), json!({ "post": operation }));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every method of every service, as meshrpc's HTTP side serves it: POST a JSON object of the arguments, get {\"data\": …, \"errors\": []}."
        },
        "paths": paths,
        "components": { "schemas": components }
    })
}
