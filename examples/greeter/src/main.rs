//! A greeter node.
fn main() {}
