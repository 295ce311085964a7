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

/// `{"data": null, "errors": [{"code", "message", "detail"?}]}`.
fn error_envelope() -> Value {
    json!({
        "type": "object",
        "required": ["data", "errors"],
        "properties": {
            "data": { "type": "null" },
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "enum": [
                            "bad_request", "unknown_service", "unknown_method", "timeout", "cancelled",
                            "unavailable", "overloaded", "too_large", "protocol", "tls", "permission_denied",
                            "internal", "application", "rate_limited", "method_not_allowed", "not_found", "not_ready"
                        ] },
                        "message": { "type": "string" },
                        "detail": {}
                    }
                }
            }
        }
    })
}

/// The OpenAPI 3.1 document of `services`.
pub fn document(title: &str, services: &[ServiceDoc]) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    components.insert("ErrorEnvelope".into(), error_envelope());
    for service in services {
        let schemas = service.schemas.as_ref();
        if let Some(defs) = schemas.and_then(|s| s["components"].as_object()) {
            for (name, schema) in defs {
                components.insert(name.clone(), schema.clone());
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
                        "properties": { "data": value, "errors": { "type": "array", "maxItems": 0 } }
                    } } }
                })
            };
            let app_error = json!({
                "description": "The method's own error (its type, in `errors[0].detail`).",
                "content": { "application/json": { "schema": {
                    "allOf": [
                        { "$ref": "#/components/schemas/ErrorEnvelope" },
                        { "type": "object", "properties": { "errors": { "type": "array", "items": {
                            "type": "object", "properties": { "detail": error }
                        } } } }
                    ]
                } } }
            });
            let failure = json!({
                "description": "meshrpc failed the call (see `errors[0].code`).",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } }
            });
            let request = if *takes_items {
                json!({ "required": true, "content": {
                    "application/x-ndjson": { "schema": { "description": "The arguments object on the first line, then the caller's items, one a line." } }
                } })
            } else {
                json!({ "required": true, "content": { "application/json": { "schema": args_schema } } })
            };
            paths.insert(
                format!("/{}/{}", service.name, method),
                json!({ "post": {
                    "operationId": format!("{}.{}", service.name, method),
                    "tags": [service.name],
                    "parameters": parameters(),
                    "requestBody": request,
                    "responses": { "200": ok, "422": app_error, "default": failure }
                } }),
            );
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
