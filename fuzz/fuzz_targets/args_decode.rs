//! Any request body, in either codec, decoded into the arguments of a method with nested
//! structs, enums, maps and options: an error or a value, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use meshrpc::Codec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle { radius: f64 },
    Poly(Vec<(i32, i32)>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Nested {
    label: String,
    children: Vec<Nested>,
    shape: Option<Shape>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Args {
    name: String,
    age: u8,
    tags: Vec<String>,
    scores: HashMap<String, f64>,
    tree: Option<Nested>,
}

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Json, Codec::Postcard] {
        if let Ok(args) = codec.decode_args::<Args>(data) {
            // What decodes encodes again (JSON refuses only non-finite floats).
            let encoded = codec.encode(&args);
            assert!(encoded.is_ok() || codec == Codec::Json, "{codec:?}: {encoded:?}");
        }
    }
});
