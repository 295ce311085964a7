use serde_json::{json, Value};

use super::shape::field_number;
use super::*;

/// A service's schemas as schemars writes them: a struct with every kind of field.
fn schemas() -> Value {
    json!({
        "methods": [
            { "name": "put", "args": { "type": "object", "properties": {
                "order": { "$ref": "#/components/schemas/Order" },
                "note": { "type": ["string", "null"] }
              }, "required": ["order"] },
              "value": { "type": "integer", "format": "uint64" }, "streams": false },
            { "name": "get", "args": { "type": "object", "properties": { "id": { "type": "integer", "format": "uint32" } }, "required": ["id"] },
              "value": { "$ref": "#/components/schemas/Order" }, "streams": true },
            { "name": "ping", "args": { "type": "object", "properties": {}, "required": [] },
              "value": { "type": "null" }, "streams": false }
        ],
        "components": {
            "Order": { "type": "object", "properties": {
                "id": { "type": "integer", "format": "uint32" },
                "lines": { "type": "array", "items": { "$ref": "#/components/schemas/Line" } },
                "tags": { "type": "object", "additionalProperties": { "type": "integer", "format": "int64" } },
                "state": { "$ref": "#/components/schemas/State" },
                "paid": { "oneOf": [ { "type": "string", "enum": ["Free"] },
                                     { "type": "object", "properties": { "Card": { "type": "string" } }, "required": ["Card"], "additionalProperties": false } ] },
                "at": { "type": "array", "prefixItems": [ { "type": "number" }, { "type": "boolean" } ], "minItems": 2, "maxItems": 2 },
                "big": { "type": "integer", "format": "uint128" },
                "grid": { "type": "array", "items": { "type": "array", "items": { "type": "integer" } } },
                "parent": { "anyOf": [ { "$ref": "#/components/schemas/Order" }, { "type": "null" } ] }
              }, "required": ["id", "lines", "tags", "state", "paid", "at", "big", "grid"] },
            "Line": { "type": "object", "properties": { "sku": { "type": "string" }, "count": { "type": "integer", "format": "int32" } },
                      "required": ["sku", "count"] },
            "State": { "type": "string", "enum": ["Open", "Shipped"] }
        }
    })
}

fn methods() -> Vec<MethodNames> {
    vec![
        ("put".into(), vec!["order".into(), "note".into()], false, false),
        ("get".into(), vec!["id".into()], true, false),
        ("ping".into(), vec![], false, false),
        ("upload".into(), vec!["parts".into()], false, true),
    ]
}

fn order() -> Value {
    json!({
        "id": 7,
        "lines": [{ "sku": "mug", "count": -2 }, { "sku": "", "count": 0 }],
        "tags": { "a": -1, "b": 9_000_000_000i64 },
        "state": "Shipped",
        "paid": { "Card": "visa" },
        "at": [1.5, true],
        "big": u64::MAX,
        "grid": [[1, 2], []],
        "parent": { "id": 1, "lines": [], "tags": {}, "state": "Open", "paid": "Free", "at": [0.0, false],
                    "big": 0, "grid": [] }
    })
}

#[test]
fn every_kind_of_field_comes_back_as_it_went() {
    let shape = ServiceShape::new("shop-api", &methods(), Some(&schemas()));
    let args = json!({ "order": order(), "note": "hi" });
    let at = shape.method("put").unwrap().request;
    let mut bytes = Vec::new();
    wire::encode(&shape, at, &args, &mut bytes).unwrap();
    assert_eq!(wire::decode(&shape, at, &bytes).unwrap(), args);
    // Left out, an optional argument stays left out (serde reads `None`, or the field's
    // default); protobuf's zero values come back as zeros.
    let mut bytes = Vec::new();
    wire::encode(&shape, at, &json!({ "order": { "id": 3 } }), &mut bytes).unwrap();
    let back = wire::decode(&shape, at, &bytes).unwrap();
    assert!(back.get("note").is_none(), "left out, as JSON leaves an Option: {back}");
    assert!(back["order"].get("parent").is_none());
    assert_eq!(back["order"]["lines"], json!([]));
    assert_eq!(back["order"]["state"], "Open");
    assert_eq!(back["order"]["at"], json!([0.0, false]));
    assert_eq!(back["order"]["paid"], Value::Null, "no variant: null, refused by the service");
    // A stream's items are its value's message; `()` is the empty message.
    let item = shape.method("get").unwrap().reply;
    assert_eq!(shape.messages[item].name, "Order");
    let empty = shape.method("ping").unwrap().reply;
    assert_eq!(encode_reply(&shape, "ping", b"null").unwrap(), Vec::<u8>::new());
    assert_eq!(shape.messages[empty].name, "Empty");
}

#[test]
fn bytes_are_protobufs_own() {
    let shape = ServiceShape::new("shop", &methods(), Some(&schemas()));
    // `{"id": 150}` of GetRequest: key (number << 3 | varint), then 150 as a varint.
    let message = shape.method("get").unwrap().request;
    let mut bytes = Vec::new();
    wire::encode(&shape, message, &json!({ "id": 150 }), &mut bytes).unwrap();
    let mut expected = Vec::new();
    let mut key = u64::from(field_number("id")) << 3;
    while key >= 0x80 {
        expected.push(key as u8 | 0x80);
        key >>= 7;
    }
    expected.push(key as u8);
    expected.extend([0x96, 0x01]);
    assert_eq!(bytes, expected);
    // A reply that is not a struct is wrapped: `value = 1`.
    assert_eq!(encode_reply(&shape, "put", b"150").unwrap(), [0x08, 0x96, 0x01]);
}

#[test]
fn field_numbers_follow_names_not_order() {
    assert_eq!(field_number("sku"), field_number("sku"));
    assert_ne!(field_number("sku"), field_number("count"));
    for name in ["a", "id", "sku", "picture_url", "x1", "y2"] {
        let n = field_number(name);
        assert!((1..(1 << 29)).contains(&n) && !(19_000..20_000).contains(&n), "{name}: {n}");
    }
}

#[test]
fn bad_messages_are_refused_with_the_field_named() {
    let shape = ServiceShape::new("shop", &methods(), Some(&schemas()));
    let at = shape.method("get").unwrap().request;
    let key = |wire: u64| {
        let mut k = (u64::from(field_number("id")) << 3) | wire;
        let mut out = Vec::new();
        while k >= 0x80 {
            out.push(k as u8 | 0x80);
            k >>= 7;
        }
        out.push(k as u8);
        out
    };
    let mut string_for_int = key(2);
    string_for_int.extend([1, b'x']);
    let e = wire::decode(&shape, at, &string_for_int).unwrap_err();
    assert!(e.contains("field `id`") && e.contains("length-delimited"), "{e}");
    let mut cut = key(2);
    cut.extend([9, b'x']);
    assert!(wire::decode(&shape, at, &cut).unwrap_err().contains("9 bytes announced"));
    assert!(wire::decode(&shape, at, &[0xff; 11]).unwrap_err().contains("varint"));
    // Unknown fields are skipped, as protobuf does.
    assert_eq!(wire::decode(&shape, at, &[0x78, 0x01]).unwrap(), json!({ "id": 0 }));
    // An enum number past its variants.
    let order = shape.messages.iter().position(|m| m.name == "Order").unwrap();
    let state = shape.messages[order].fields.iter().find(|f| f.json == "state").unwrap().number;
    let mut bad_enum = Vec::new();
    let mut k = u64::from(state) << 3;
    while k >= 0x80 {
        bad_enum.push(k as u8 | 0x80);
        k >>= 7;
    }
    bad_enum.extend([k as u8, 5]);
    assert!(wire::decode(&shape, order, &bad_enum).unwrap_err().contains("no variant numbered 5"));
    // Nesting past the bound: a chain of `parent`s.
    let parent = shape.messages[order].fields.iter().find(|f| f.json == "parent").unwrap().number;
    let mut deep: Vec<u8> = Vec::new();
    for _ in 0..100 {
        let mut outer = Vec::new();
        let mut k = (u64::from(parent) << 3) | 2;
        while k >= 0x80 {
            outer.push(k as u8 | 0x80);
            k >>= 7;
        }
        outer.push(k as u8);
        let mut n = deep.len() as u64;
        while n >= 0x80 {
            outer.push(n as u8 | 0x80);
            n >>= 7;
        }
        outer.push(n as u8);
        outer.extend(&deep);
        deep = outer;
    }
    assert!(wire::decode(&shape, order, &deep).unwrap_err().contains("deeper than"));
}

#[test]
fn the_proto_file_names_what_it_serves_and_what_it_cannot() {
    let shape = ServiceShape::new("shop-api", &methods(), Some(&schemas()));
    let proto = shape.proto_file();
    assert!(proto.contains("package shop_api;"), "{proto}");
    assert!(proto.contains("service ShopApi {"), "{proto}");
    assert!(proto.contains("rpc get(GetRequest) returns (stream Order);"), "{proto}");
    assert!(proto.contains("rpc put(PutRequest) returns (PutReply);"), "{proto}");
    assert!(proto.contains("rpc ping(PingRequest) returns (Empty);"), "{proto}");
    assert!(proto.contains("`upload` takes a stream"), "{proto}");
    assert!(proto.contains(&format!("repeated Line lines = {};", field_number("lines"))), "{proto}");
    assert!(proto.contains(&format!("map<string, int64> tags = {};", field_number("tags"))), "{proto}");
    assert!(proto.contains(&format!("optional Order parent = {};", field_number("parent"))), "{proto}");
    assert!(proto.contains("STATE_SHIPPED = 1;"), "{proto}");
    assert!(proto.contains("oneof variant {"), "{proto}");
    assert!(proto.contains(&format!("string grid = {}; // JSON text", field_number("grid"))), "{proto}");
    assert_eq!(shape.path_prefix(), "/shop_api.ShopApi/");
    // Without schemas: JSON text both ways.
    let untyped = ServiceShape::new("shop", &methods(), None);
    assert!(
        untyped.proto_file().contains("message PutRequest {\n  string json = 1; // JSON text"),
        "{}",
        untyped.proto_file()
    );
    let message = untyped.method("put").unwrap().request;
    let mut bytes = Vec::new();
    wire::encode(&untyped, message, &json!({"order": 1}), &mut bytes).unwrap();
    assert_eq!(decode_request(&untyped, "put", &bytes).unwrap(), br#"{"order":1}"#);
}

#[test]
fn framing_and_headers() {
    assert_eq!(&frame(b"ab")[..], [0, 0, 0, 0, 2, b'a', b'b']);
    assert_eq!(unframe_one(frame(b"ab")).unwrap(), &b"ab"[..]);
    assert_eq!(unframe_one(bytes::Bytes::from_static(&[0, 0, 0, 0, 9, 1])), Err(FrameError::Short(6)));
    assert_eq!(unframe_one(bytes::Bytes::from_static(&[1, 0, 0, 0, 0])), Err(FrameError::Compressed));
    assert_eq!(unframe_one(bytes::Bytes::new()), Err(FrameError::Count(0)));
    assert_eq!(parse_timeout("250m"), Some(std::time::Duration::from_millis(250)));
    assert_eq!(parse_timeout("1H"), Some(std::time::Duration::from_secs(3600)));
    assert_eq!(parse_timeout("123456789S"), None);
    assert_eq!(parse_timeout("5x"), None);
    assert_eq!(split_path("/shop_api.ShopApi/get"), Some(("shop_api", "ShopApi", "get")));
    assert_eq!(split_path("/greeter/greet"), None);
    assert_eq!(percent_encode("50% → ok"), "50%25 %E2%86%92 ok");
    assert!(is_grpc(Some("application/grpc+proto")) && !is_grpc(Some("application/json")));
}

#[test]
fn what_a_caller_can_make_the_gateway_hold_is_bounded() {
    // 20 required structs of 20 required strings: an absent one is 421 zero values, and
    // an entry of a list of them is 2 bytes on the wire.
    let strings: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("s{i}"), json!({ "type": "string" }))).collect();
    let inner: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("b{i}"), json!({ "$ref": "#/components/schemas/B" }))).collect();
    let schemas = json!({
        "methods": [{ "name": "m", "args": { "type": "object", "properties": {
            "list": { "type": "array", "items": { "$ref": "#/components/schemas/A" } } }, "required": ["list"] },
            "value": { "type": "integer", "format": "int32" }, "streams": false }],
        "components": {
            "A": { "type": "object", "properties": inner, "required": (0..20).map(|i| format!("b{i}")).collect::<Vec<_>>() },
            "B": { "type": "object", "properties": strings, "required": (0..20).map(|i| format!("s{i}")).collect::<Vec<_>>() }
        }
    });
    let shape = ServiceShape::new("amp", &[("m".into(), vec!["list".into()], false, false)], Some(&schemas));
    let at = shape.method("m").unwrap().request;
    let list = field_number("list");
    let mut key = Vec::new();
    let mut k = (u64::from(list) << 3) | 2;
    while k >= 0x80 {
        key.push(k as u8 | 0x80);
        k >>= 7;
    }
    key.push(k as u8);
    let entries = |n: usize| (0..n).flat_map(|_| key.iter().copied().chain([0u8])).collect::<Vec<u8>>();
    // A few entries decode; thousands are refused before they are made.
    assert_eq!(wire::decode(&shape, at, &entries(2)).unwrap()["list"].as_array().unwrap().len(), 2);
    let e = wire::decode(&shape, at, &entries(5_000)).unwrap_err();
    assert!(e.contains("too many values"), "{e}");
    // An answer that does not fit its int32 is refused, not truncated.
    assert!(encode_reply(&shape, "m", b"3000000000").unwrap_err().contains("does not fit an int32"));
    // An empty enum (protobuf has none) is JSON text; a type named as the service is renamed.
    let odd = json!({
        "methods": [{ "name": "m", "args": { "type": "object", "properties": {
            "e": { "type": "string", "enum": [] }, "x": { "$ref": "#/components/schemas/Amp" } } },
            "value": { "type": "null" }, "streams": false }],
        "components": { "Amp": { "type": "object", "properties": { "a": { "type": "string" } } } }
    });
    let shape = ServiceShape::new("amp", &[("m".into(), vec![], false, false)], Some(&odd));
    let proto = shape.proto_file();
    assert!(proto.contains(&format!("optional string e = {}; // JSON text", field_number("e"))), "{proto}");
    assert!(proto.contains("message Amp2 {") && proto.contains("service Amp {"), "{proto}");
}
