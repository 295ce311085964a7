//! Generates the messages and the tonic services from proto/boutique.proto, with a protoc
//! from crates.io.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::compile_protos("proto/boutique.proto")?;
    Ok(())
}
