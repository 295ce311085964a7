//! The table of changes: each row a version 2 of one small crate, and what it breaks.

use super::*;

const V1: &str = r#"
#[derive(Serialize, Deserialize)]
pub struct Address { pub street: String, pub city: String }

#[derive(Serialize, Deserialize)]
pub struct Receipt { pub id: u64, pub note: Option<String> }

#[derive(Serialize, Deserialize)]
pub enum Color { Red, Green }

#[derive(Serialize, Deserialize)]
pub enum ShopError { Closed, Rpc(meshrpc::Error) }

#[meshrpc::service]
pub trait Shop {
    async fn ship(&self, to: Address, color: Color, count: u32) -> Result<Receipt, ShopError>;
    async fn ping(&self) -> Result<(), ShopError>;
}
"#;

fn report(v2: &str) -> Report {
    let old = Contract::from_sources("v1", &[("v1.rs".into(), V1.into())]).unwrap();
    let new = Contract::from_sources("v2", &[("v2.rs".into(), v2.into())]).unwrap();
    compare(&old, &new)
}

/// `(place, what contains, json breaks, typed breaks)` of every change, for the table.
fn rows(v2: &str) -> Vec<(String, String, bool, bool)> {
    report(v2).changes.into_iter().map(|c| (c.place, c.what, c.json.is_breaking(), c.typed.is_breaking())).collect()
}

fn one(v2: &str, place: &str, what: &str, json: bool, typed: bool) {
    let rows = rows(v2);
    assert!(
        rows.iter().any(|(p, w, j, t)| p == place && w.contains(what) && *j == json && *t == typed),
        "want {place}: {what} (json breaks: {json}, typed breaks: {typed}); got {rows:#?}"
    );
    assert_eq!(rows.len(), 1, "one change: {rows:#?}");
}

#[test]
fn the_same_source_has_no_change() {
    let r = report(V1);
    assert!(r.changes.is_empty() && r.new_fingerprint.is_empty(), "{:?}", r.changes);
}

#[test]
fn method_changes() {
    one(&V1.replace("async fn ping(&self) -> Result<(), ShopError>;", ""), "shop.ping", "method removed", true, true);
    one(
        &V1.replace("async fn ping(&self)", "async fn pong(&self) -> Result<(), ShopError>;\n    async fn ping(&self)"),
        "shop.pong",
        "method added",
        false,
        true,
    );
    one(&V1.replace("count: u32)", "n: u32)"), "shop.ship", "`count` renamed to `n`", true, true);
    one(&V1.replace("count: u32)", "count: u64)"), "shop.ship", "retyped: u32 → u64", true, true);
    one(&V1.replace("count: u32)", "count: u32, gift: bool)"), "shop.ship", "`gift: bool` added", true, true);
    one(&V1.replace("count: u32)", "count: u32, gift: Option<bool>)"), "shop.ship", "added", false, true);
    one(&V1.replace(", count: u32)", ")"), "shop.ship", "`count` removed", false, true);
    one(&V1.replace("to: Address, color: Color", "color: Color, to: Address"), "shop.ship", "reordered", false, true);
    one(&V1.replace("Result<Receipt, ShopError>", "Result<u64, ShopError>"), "shop.ship", "answer type", true, true);
    let fingerprint = report(&V1.replace("count: u32)", "n: u32)")).new_fingerprint;
    assert_eq!(fingerprint, ["shop"], "an argument's name is part of the contract");
}

#[test]
fn struct_changes_the_fingerprint_does_not_see() {
    // In a request (Address): a new required field breaks JSON callers; a new optional one
    // does not; postcard breaks on both.
    one(&V1.replace("pub city: String }", "pub city: String, pub zip: String }"), "Address.zip", "added", true, true);
    one(
        &V1.replace("pub city: String }", "pub city: String, pub zip: Option<String> }"),
        "Address.zip",
        "added",
        false,
        true,
    );
    one(
        &V1.replace("pub city: String }", "pub city: String, #[serde(default)] pub zip: String }"),
        "Address.zip",
        "added",
        false,
        true,
    );
    // A renamed field: JSON names it, postcard does not.
    one(&V1.replace("pub city: String", "pub town: String"), "Address.city", "renamed to `town`", true, false);
    // serde's rename keeps JSON's name: no change at all for JSON, none for postcard.
    assert!(rows(&V1.replace("pub city: String", "#[serde(rename = \"city\")] pub town: String")).is_empty());
    one(
        &V1.replace("pub street: String, pub city: String", "pub city: String, pub street: String"),
        "Address",
        "reordered",
        false,
        true,
    );
    one(&V1.replace("pub city: String }", "pub city: u32 }"), "Address.city", "retyped", true, true);
    // In an answer (Receipt): a removed field breaks JSON callers that expect it, unless it
    // was optional; an added one does not.
    one(
        &V1.replace("pub id: u64, pub note: Option<String>", "pub note: Option<String>"),
        "Receipt.id",
        "removed",
        true,
        true,
    );
    one(&V1.replace("pub id: u64, pub note: Option<String>", "pub id: u64"), "Receipt.note", "removed", false, true);
    one(
        &V1.replace("pub note: Option<String> }", "pub note: Option<String>, pub at: u64 }"),
        "Receipt.at",
        "added",
        false,
        true,
    );
    // rename_all renames every JSON name.
    let camel = V1.replace("pub struct Address", "#[serde(rename_all = \"camelCase\")] pub struct Address");
    let rows = rows(&camel.replace("pub street: String", "pub street_name: String"));
    assert!(
        rows.iter().any(|(p, w, j, t)| p == "Address.street" && w.contains("`streetName`") && *j && !*t),
        "{rows:#?}"
    );
}

#[test]
fn enum_changes() {
    let swapped = rows(&V1.replace("enum Color { Red, Green }", "enum Color { Green, Red }"));
    assert!(
        swapped.iter().all(|(p, w, j, t)| p.starts_with("Color::") && w.contains("moved") && !*j && *t),
        "{swapped:#?}"
    );
    assert_eq!(swapped.len(), 2, "{swapped:#?}");
    one(&V1.replace("enum Color { Red, Green }", "enum Color { Red }"), "Color::Green", "removed", true, true);
    // Color travels in requests: appended, old callers never send it.
    one(
        &V1.replace("enum Color { Red, Green }", "enum Color { Red, Green, Blue }"),
        "Color::Blue",
        "at the end",
        false,
        false,
    );
    // ShopError travels in answers: old callers cannot read a new variant.
    one(
        &V1.replace(
            "enum ShopError { Closed, Rpc(meshrpc::Error) }",
            "enum ShopError { Closed, Rpc(meshrpc::Error), Full }",
        ),
        "ShopError::Full",
        "at the end",
        true,
        true,
    );
    // Inserted before others: every later variant's number moves.
    let rows = rows(&V1.replace("enum Color { Red, Green }", "enum Color { Blue, Red, Green }"));
    assert!(rows.iter().any(|(p, w, _, t)| p == "Color::Blue" && w.contains("position 0") && *t), "{rows:#?}");
    assert!(rows.iter().any(|(p, w, j, t)| p == "Color::Red" && w.contains("moved") && !*j && *t), "{rows:#?}");
}

#[test]
fn a_removed_service_and_a_source_without_one() {
    let rows = rows("#[meshrpc::service] pub trait Other { async fn x(&self) -> Result<(), E>; }");
    assert!(rows.iter().any(|(p, w, j, t)| p == "shop" && w == "service removed" && *j && *t), "{rows:#?}");
    let none = Contract::from_sources("v2", &[("v2.rs".into(), "pub struct A;".into())]);
    assert!(matches!(none, Err(CompatError::NoService(_))));
    let bad = Contract::from_sources("v2", &[("v2.rs".into(), "pub struct".into())]);
    assert!(matches!(bad, Err(CompatError::Parse { .. })));
}
