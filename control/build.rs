//! Generates the gRPC API from proto/shoal.proto with the protoc shipped by
//! protoc-bin-vendored, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // `--format json` in the CLI prints API messages as they are.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_with_config(config, &["proto/shoal.proto"], &["proto"])?;
    Ok(())
}
