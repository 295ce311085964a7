//! Protobuf's binary encoding of JSON values, by a service's shape: a gRPC caller's
//! message becomes the JSON arguments a call carries, and a JSON answer the message the
//! caller reads. Errors name the field and say what was wrong (they become
//! `INVALID_ARGUMENT`, or `INTERNAL` for an answer that does not fit its own shape).

use serde_json::{Map, Number, Value};

use super::shape::{Card, Field, Form, Ty};
use super::ServiceShape;

/// Messages nested deeper than this are refused (a caller cannot make us recurse without
/// bound).
const MAX_DEPTH: usize = 64;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Values a decoded message may hold per byte of it (and 1,024 more): protobuf's zero
/// values fill absent fields, so a few bytes could otherwise make many values.
const VALUES_PER_BYTE: usize = 16;

/// Decodes message `at` of `shape` into its JSON value.
pub(crate) fn decode(shape: &ServiceShape, at: usize, bytes: &[u8]) -> Result<Value, String> {
    let budget = std::cell::Cell::new(bytes.len().saturating_mul(VALUES_PER_BYTE) + 1024);
    Decoder { shape, budget }.message(at, bytes, 0)
}

/// Encodes `value` as message `at` of `shape`.
pub(crate) fn encode(shape: &ServiceShape, at: usize, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    Encoder { shape }.message(at, value, out, 0)
}

struct Decoder<'a> {
    shape: &'a ServiceShape,
    /// Values it may still make.
    budget: std::cell::Cell<usize>,
}

/// One field as read: its number and its value's bytes or number.
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a varint cut short")?;
        *bytes = rest;
        if shift == 63 && byte > 1 {
            return Err("a varint longer than 64 bits".into());
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn fields(mut bytes: &[u8]) -> impl Iterator<Item = Result<(u32, Raw<'_>), String>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        Some((|| {
            let key = varint(&mut bytes)?;
            let number = u32::try_from(key >> 3).map_err(|_| "a field number past 2^29")?;
            let take = |bytes: &mut &'_ [u8], n: usize| -> Result<u64, String> {
                if bytes.len() < n {
                    return Err("a fixed-size value cut short".into());
                }
                let (head, rest) = bytes.split_at(n);
                *bytes = rest;
                Ok(head.iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
            };
            let raw = match (key & 7) as u32 {
                VARINT => Raw::Varint(varint(&mut bytes)?),
                FIXED64 => Raw::Fixed64(take(&mut bytes, 8)?),
                FIXED32 => {
                    take(&mut bytes, 4)?;
                    Raw::Fixed32
                }
                LEN => {
                    let n = usize::try_from(varint(&mut bytes)?).map_err(|_| "a length past memory")?;
                    if bytes.len() < n {
                        return Err(format!("field {number}: {n} bytes announced, {} left", bytes.len()));
                    }
                    let (head, rest) = bytes.split_at(n);
                    bytes = rest;
                    Raw::Len(head)
                }
                other => return Err(format!("field {number}: wire type {other} (groups are not supported)")),
            };
            Ok((number, raw))
        })())
    })
}

impl Decoder<'_> {
    fn spend(&self) -> Result<(), String> {
        let left = self.budget.get().checked_sub(1).ok_or("the message makes too many values for its size")?;
        self.budget.set(left);
        Ok(())
    }

    fn message(&self, at: usize, bytes: &[u8], depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("messages nested deeper than {MAX_DEPTH}"));
        }
        self.spend()?;
        let message = &self.shape.messages[at];
        let mut values: Vec<Option<Value>> = vec![None; message.fields.len()];
        let mut last_set = None;
        for read in fields(bytes) {
            let (number, raw) = read?;
            // Unknown fields are skipped, as protobuf does (a newer caller's fields).
            let Some(i) = message.fields.iter().position(|f| f.number == number) else { continue };
            let field = &message.fields[i];
            let within = |e: String| format!("field `{}` ({number}) of {}: {e}", field.name, message.name);
            match field.card {
                Card::One | Card::Optional => values[i] = Some(self.single(field.ty, raw, depth).map_err(within)?),
                Card::Repeated => {
                    let list = values[i].get_or_insert_with(|| Value::Array(Vec::new()));
                    let Value::Array(list) = list else { unreachable!("a list") };
                    self.repeated(field.ty, raw, list, depth).map_err(within)?;
                }
                Card::Map => {
                    let map = values[i].get_or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(map) = map else { unreachable!("a map") };
                    let Raw::Len(entry) = raw else {
                        return Err(within("a map entry must be length-delimited".into()));
                    };
                    let (key, value) = self.map_entry(field.ty, entry, depth).map_err(within)?;
                    map.insert(key, value);
                }
            }
            last_set = Some(i);
        }
        match message.form {
            Form::Object => {
                let mut object = Map::new();
                for (field, value) in message.fields.iter().zip(values) {
                    let value = match value {
                        Some(value) => value,
                        // Left out, as JSON leaves it: `None`, or the field's own default.
                        None if field.card == Card::Optional => continue,
                        None => self.default(field, depth)?,
                    };
                    object.insert(field.json.clone(), value);
                }
                Ok(Value::Object(object))
            }
            Form::Tuple => {
                let mut items = Vec::new();
                for (field, value) in message.fields.iter().zip(values) {
                    items.push(match value {
                        Some(value) => value,
                        None => self.default(field, depth)?,
                    });
                }
                Ok(Value::Array(items))
            }
            Form::Wrapper => match values.into_iter().next().flatten() {
                Some(value) => Ok(value),
                None => message.fields.first().map_or(Ok(Value::Null), |f| self.default(f, depth)),
            },
            Form::OneOf => {
                // No variant: null, which the service refuses as it would a JSON null.
                let Some(i) = last_set else { return Ok(Value::Null) };
                let field = &message.fields[i];
                let value = values[i].take().expect("set");
                Ok(match field.ty {
                    Ty::Null => Value::String(field.json.clone()),
                    _ => Value::Object(Map::from_iter([(field.json.clone(), value)])),
                })
            }
        }
    }

    /// What an absent field means, as protobuf 3 says: zero, empty, the first variant.
    fn default(&self, field: &Field, depth: usize) -> Result<Value, String> {
        self.spend()?;
        Ok(match (field.card, field.ty) {
            (Card::Optional, _) | (_, Ty::Null | Ty::Json) => Value::Null,
            (Card::Repeated, _) => Value::Array(Vec::new()),
            (Card::Map, _) => Value::Object(Map::new()),
            (Card::One, Ty::Str) => Value::String(String::new()),
            (Card::One, Ty::Bool) => Value::Bool(false),
            (Card::One, Ty::Double) => Value::from(0.0),
            (Card::One, Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::BigInt) => Value::from(0),
            (Card::One, Ty::Enum(e)) => {
                Value::String(self.shape.enums[e].variants.first().cloned().unwrap_or_default())
            }
            (Card::One, Ty::Message(m)) => self.message(m, &[], depth + 1)?,
        })
    }

    fn single(&self, ty: Ty, raw: Raw<'_>, depth: usize) -> Result<Value, String> {
        self.spend()?;
        Ok(match (ty, raw) {
            (Ty::Str, Raw::Len(b)) => Value::String(text(b)?),
            (Ty::Json, Raw::Len(b)) => serde_json::from_slice(b).map_err(|e| format!("JSON text expected: {e}"))?,
            (Ty::BigInt, Raw::Len(b)) => {
                let digits = text(b)?;
                serde_json::from_str::<Number>(&digits)
                    .ok()
                    .filter(|n| !n.is_f64())
                    .map(Value::Number)
                    .ok_or(format!("an integer's decimal text expected, not {digits:?}"))?
            }
            (Ty::Null, Raw::Len(_)) => Value::Null,
            (Ty::Message(m), Raw::Len(b)) => self.message(m, b, depth + 1)?,
            (Ty::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
            (Ty::I64, Raw::Varint(v)) => Value::from(v as i64),
            (Ty::I32, Raw::Varint(v)) => Value::from(v as i64 as i32),
            (Ty::U64, Raw::Varint(v)) => Value::from(v),
            (Ty::U32, Raw::Varint(v)) => Value::from(v as u32),
            (Ty::Double, Raw::Fixed64(v)) => Number::from_f64(f64::from_bits(v)).map_or(Value::Null, Value::Number),
            (Ty::Enum(e), Raw::Varint(v)) => {
                let variants = &self.shape.enums[e].variants;
                let name = usize::try_from(v).ok().and_then(|i| variants.get(i));
                let last = variants.len().saturating_sub(1);
                Value::String(name.ok_or(format!("no variant numbered {v} (0 to {last})"))?.clone())
            }
            (ty, raw) => return Err(format!("{} where {} was expected", wire_name(&raw), ty_name(ty))),
        })
    }

    fn repeated(&self, ty: Ty, raw: Raw<'_>, list: &mut Vec<Value>, depth: usize) -> Result<(), String> {
        match (ty, raw) {
            // Numbers packed in one length-delimited field (protobuf 3's default).
            (Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::Enum(_), Raw::Len(mut packed)) => {
                while !packed.is_empty() {
                    list.push(self.single(ty, Raw::Varint(varint(&mut packed)?), depth)?);
                }
            }
            (Ty::Double, Raw::Len(packed)) => {
                if packed.len() % 8 != 0 {
                    return Err("packed doubles of a length not a multiple of 8".into());
                }
                for chunk in packed.chunks(8) {
                    let bits = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    list.push(self.single(ty, Raw::Fixed64(bits), depth)?);
                }
            }
            (ty, raw) => list.push(self.single(ty, raw, depth)?),
        }
        Ok(())
    }

    fn map_entry(&self, ty: Ty, entry: &[u8], depth: usize) -> Result<(String, Value), String> {
        let (mut key, mut value) = (String::new(), None);
        for read in fields(entry) {
            match read? {
                (1, Raw::Len(k)) => key = text(k)?,
                (2, raw) => value = Some(self.single(ty, raw, depth)?),
                _ => {}
            }
        }
        let value = match value {
            Some(value) => value,
            None => {
                let field = Field { json: String::new(), name: String::new(), number: 2, ty, card: Card::One };
                self.default(&field, depth)?
            }
        };
        Ok((key, value))
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string that is not UTF-8".to_owned())
}

fn wire_name(raw: &Raw<'_>) -> &'static str {
    match raw {
        Raw::Varint(_) => "a varint",
        Raw::Fixed64(_) => "a 64-bit value",
        Raw::Fixed32 => "a 32-bit value",
        Raw::Len(_) => "a length-delimited value",
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Bool => "a bool",
        Ty::Double => "a double",
        Ty::I32 => "an int32",
        Ty::I64 => "an int64",
        Ty::U32 => "a uint32",
        Ty::U64 => "a uint64",
        Ty::BigInt | Ty::Json => "a string",
        Ty::Null | Ty::Message(_) => "a message",
        Ty::Enum(_) => "an enum",
    }
}

struct Encoder<'a> {
    shape: &'a ServiceShape,
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(number: u32, wire: u32, out: &mut Vec<u8>) {
    put_varint(u64::from(number) << 3 | u64::from(wire), out);
}

/// Writes a length-delimited field of these bytes.
fn put_bytes(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(number, LEN, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Writes a length-delimited field whose content `write` appends.
fn put_len(
    number: u32,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    put_key(number, LEN, out);
    let mut content = Vec::new();
    write(&mut content)?;
    put_varint(content.len() as u64, out);
    out.extend_from_slice(&content);
    Ok(())
}

impl Encoder<'_> {
    fn message(&self, at: usize, value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH}"));
        }
        let message = &self.shape.messages[at];
        let within = |f: &Field, e: String| format!("field `{}` of {}: {e}", f.name, message.name);
        match (message.form, value) {
            (Form::Object, Value::Object(object)) => {
                for field in &message.fields {
                    if let Some(v) = object.get(&field.json).filter(|v| !v.is_null() || field.ty == Ty::Json) {
                        self.field(field, v, out, depth).map_err(|e| within(field, e))?;
                    }
                }
            }
            (Form::Tuple, Value::Array(items)) => {
                for (field, item) in message.fields.iter().zip(items) {
                    if !item.is_null() || field.ty == Ty::Json {
                        self.field(field, item, out, depth).map_err(|e| within(field, e))?;
                    }
                }
            }
            (Form::Wrapper, value) => {
                if let Some(field) = message.fields.first().filter(|f| !value.is_null() || f.ty == Ty::Json) {
                    self.field(field, value, out, depth).map_err(|e| within(field, e))?;
                }
            }
            (Form::OneOf, value) => {
                let (variant, inner) = match value {
                    Value::String(unit) => (unit.as_str(), &Value::Null),
                    Value::Object(one) if one.len() == 1 => {
                        one.iter().next().map(|(k, v)| (k.as_str(), v)).expect("one")
                    }
                    other => return Err(format!("{}: a variant expected, not {other}", message.name)),
                };
                let field = message
                    .fields
                    .iter()
                    .find(|f| f.json == variant)
                    .ok_or_else(|| format!("{}: no variant `{variant}`", message.name))?;
                self.field(field, inner, out, depth).map_err(|e| within(field, e))?;
            }
            (_, other) => return Err(format!("{}: {} expected, not {other}", message.name, form_name(message.form))),
        }
        Ok(())
    }

    fn field(&self, field: &Field, value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        match field.card {
            Card::One | Card::Optional => self.single(field.number, field.ty, value, out, depth),
            Card::Repeated => {
                let Value::Array(items) = value else { return Err(format!("a list expected, not {value}")) };
                for item in items {
                    self.single(field.number, field.ty, item, out, depth)?;
                }
                Ok(())
            }
            Card::Map => {
                let Value::Object(entries) = value else { return Err(format!("an object expected, not {value}")) };
                for (key, item) in entries {
                    put_len(field.number, out, |entry| {
                        put_bytes(1, key.as_bytes(), entry);
                        self.single(2, field.ty, item, entry, depth)
                    })?;
                }
                Ok(())
            }
        }
    }

    fn single(&self, number: u32, ty: Ty, value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        let mismatch = || format!("{} expected, not {value}", ty_name(ty));
        match ty {
            Ty::Str => {
                let s = value.as_str().ok_or_else(mismatch)?;
                put_bytes(number, s.as_bytes(), out);
                Ok(())
            }
            Ty::Json => {
                put_bytes(number, value.to_string().as_bytes(), out);
                Ok(())
            }
            Ty::BigInt => {
                let n = value.as_number().filter(|n| !n.is_f64()).ok_or_else(mismatch)?;
                put_bytes(number, n.to_string().as_bytes(), out);
                Ok(())
            }
            Ty::Null => put_len(number, out, |_| Ok(())),
            Ty::Message(m) => put_len(number, out, |c| self.message(m, value, c, depth + 1)),
            Ty::Bool => {
                put_key(number, VARINT, out);
                put_varint(u64::from(value.as_bool().ok_or_else(mismatch)?), out);
                Ok(())
            }
            Ty::I32 | Ty::I64 => {
                let n = value.as_i64().ok_or_else(mismatch)?;
                if ty == Ty::I32 && i32::try_from(n).is_err() {
                    return Err(format!("{n} does not fit an int32"));
                }
                put_key(number, VARINT, out);
                put_varint(n as u64, out);
                Ok(())
            }
            Ty::U32 | Ty::U64 => {
                let n = value.as_u64().ok_or_else(mismatch)?;
                if ty == Ty::U32 && u32::try_from(n).is_err() {
                    return Err(format!("{n} does not fit a uint32"));
                }
                put_key(number, VARINT, out);
                put_varint(n, out);
                Ok(())
            }
            Ty::Double => {
                put_key(number, FIXED64, out);
                out.extend_from_slice(&value.as_f64().ok_or_else(mismatch)?.to_bits().to_le_bytes());
                Ok(())
            }
            Ty::Enum(e) => {
                let name = value.as_str().ok_or_else(mismatch)?;
                let variants = &self.shape.enums[e].variants;
                let i = variants.iter().position(|v| v == name).ok_or_else(|| format!("no variant `{name}`"))?;
                put_key(number, VARINT, out);
                put_varint(i as u64, out);
                Ok(())
            }
        }
    }
}

fn form_name(form: Form) -> &'static str {
    match form {
        Form::Object => "an object",
        Form::Tuple => "a list",
        Form::OneOf => "a variant",
        Form::Wrapper => "a value",
    }
}
