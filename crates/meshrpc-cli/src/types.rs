//! Reading a service's published JSON Schemas (`meshrpc.schema`) in the shell: a short
//! type name for `call --list`, and a check of a call's arguments before it is sent.

use serde_json::Value;

/// A short name for a schema: `string`, `u64`, `Nested`, `[Shape]`, `Nested?`, `{string: Nested}`.
pub(crate) fn type_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if let Some(options) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        let non_null: Vec<&Value> = options.iter().filter(|o| o.get("type") != Some(&Value::from("null"))).collect();
        if non_null.len() == 1 && non_null.len() < options.len() {
            return format!("{}?", type_name(non_null[0]));
        }
        return options.iter().map(type_name).collect::<Vec<_>>().join(" | ");
    }
    let format = schema.get("format").and_then(Value::as_str);
    match schema.get("type") {
        Some(Value::Array(types)) => {
            let named: Vec<String> =
                types.iter().filter(|t| *t != "null").map(|t| simple(t.as_str(), format)).collect();
            let optional = types.iter().any(|t| t == "null");
            format!("{}{}", named.join(" | "), if optional { "?" } else { "" })
        }
        Some(Value::String(t)) if t == "array" => match (schema.get("items"), schema.get("prefixItems")) {
            (_, Some(Value::Array(tuple))) => {
                format!("({})", tuple.iter().map(type_name).collect::<Vec<_>>().join(", "))
            }
            (Some(items), _) => format!("[{}]", type_name(items)),
            _ => "[any]".into(),
        },
        Some(Value::String(t)) if t == "object" => match schema.get("additionalProperties") {
            Some(v) if v.is_object() => format!("{{string: {}}}", type_name(v)),
            _ => "object".into(),
        },
        Some(Value::String(t)) => simple(Some(t), format),
        _ => "any".into(),
    }
}

fn simple(t: Option<&str>, format: Option<&str>) -> String {
    match (t, format) {
        (Some("integer"), Some(f)) => match f {
            "uint8" => "u8",
            "uint16" => "u16",
            "uint32" => "u32",
            "uint64" | "uint" => "u64",
            "uint128" => "u128",
            "int8" => "i8",
            "int16" => "i16",
            "int32" => "i32",
            "int64" | "int" => "i64",
            "int128" => "i128",
            other => other,
        }
        .to_owned(),
        (Some("number"), _) => "number".into(),
        (Some(t), _) => t.to_owned(),
        (None, _) => "any".into(),
    }
}

/// Checks the arguments object against a method's `args` schema, field by field at the
/// top level (deeper mistakes are reported by the node, with their path): a missing
/// required argument, an unknown one, a value of the wrong JSON kind. `None`: fine.
pub(crate) fn check_args(args: &Value, schema: &Value, components: &Value) -> Option<String> {
    let given = args.as_object()?;
    let properties = schema.get("properties").and_then(Value::as_object)?;
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let name = required.as_str().unwrap_or_default();
        if !given.contains_key(name) {
            return Some(format!("argument `{name}` is missing (a {})", type_name(&properties[name])));
        }
    }
    for (name, value) in given {
        let Some(field) = properties.get(name) else {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            return Some(format!("no argument `{name}` (the arguments are: {})", known.join(", ")));
        };
        if !fits(value, field, components, 8) {
            return Some(format!("argument `{name}`: expected {}, got {value}", type_name(field)));
        }
    }
    None
}

/// Whether `value` is of the JSON kind `schema` allows (not a full validation).
fn fits(value: &Value, schema: &Value, components: &Value, depth: u8) -> bool {
    if depth == 0 {
        return true;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return components.get(name).is_none_or(|s| fits(value, s, components, depth - 1));
    }
    if let Some(options) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        return options.iter().any(|o| fits(value, o, components, depth - 1));
    }
    let kind_fits = |t: &str| match t {
        "string" => value.is_string(),
        // Past 64 bits serde_json reads a number as a float: whole is enough here.
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(t)) => kind_fits(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(kind_fits),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_and_checks() {
        assert_eq!(type_name(&json!({"type": "integer", "format": "uint64"})), "u64");
        assert_eq!(type_name(&json!({"type": ["string", "null"]})), "string?");
        assert_eq!(type_name(&json!({"type": "array", "items": {"$ref": "#/components/schemas/Shape"}})), "[Shape]");
        assert_eq!(
            type_name(&json!({"type": "object", "additionalProperties": {"$ref": "#/x/Nested"}})),
            "{string: Nested}"
        );
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}, "required": ["name"]});
        assert_eq!(check_args(&json!({"name": "x", "n": 3}), &schema, &json!({})), None);
        assert!(check_args(&json!({}), &schema, &json!({})).unwrap().contains("argument `name` is missing"));
        assert!(check_args(&json!({"name": 5}), &schema, &json!({}))
            .unwrap()
            .contains("argument `name`: expected string, got 5"));
        assert!(check_args(&json!({"name": "x", "nme": 1}), &schema, &json!({}))
            .unwrap()
            .contains("no argument `nme`"));
    }
}
