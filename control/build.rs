//! Generates the gRPC API from proto/shoal.proto with the protoc shipped by
//! protoc-bin-vendored, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // `--format json` in the CLI prints API messages as they are.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Messages that carry a secret's data or a node's private key: their `Debug` is
        // hand-written (`api/redacted.rs`) so that no `{:?}` prints it.
        .skip_debug([
            ".shoal.v1.SecretSpec",
            ".shoal.v1.HeartbeatResponse",
            ".shoal.v1.Credentials",
            ".shoal.v1.AdmitResponse",
        ])
        .compile_with_config(config, &["proto/shoal.proto"], &["proto"])?;
    Ok(())
}
