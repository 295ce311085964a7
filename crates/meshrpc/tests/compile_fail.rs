//! Every unsupported trait shape is a compile error pointing at its span.
#[test]
fn unsupported_shapes_are_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
