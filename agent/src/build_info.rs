//! What this binary is: its version, the git commit it was built from (agent/build.rs) and
//! the version of shoal's own API (the gRPC API on the agent's socket and on 2377). The client
//! and the agent each report their own (`shoal version`).

/// The package version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `git rev-parse --short=12 HEAD` at build time, or `unknown`.
pub const GIT_COMMIT: &str = env!("SHOAL_GIT_COMMIT");
/// The version of shoal's API (`control/proto/shoal.proto`, package `shoal.v1`): the major
/// changes only with an incompatible change, the minor with each addition.
pub const API_VERSION: &str = "1.1";
/// The oldest API version this agent answers: 1.0 agents' calls carry nothing it needs that
/// they lack (new fields are optional in proto3).
pub const MIN_API_VERSION: &str = "1.0";

/// The architecture as Go names it (`GOARCH`), which is what Docker reports.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `linux/amd64`, as Docker writes OS/Arch.
pub fn os_arch() -> String {
    format!("{}/{}", std::env::consts::OS, go_arch())
}
