//! What this binary is: its version, the git commit it was built from (agent/build.rs) and
//! the version of shoal's own API (the gRPC API on the agent's socket and on 2377). The client
//! and the agent each report their own (`shoal version`).

/// This binary's version: `SHOAL_VERSION` at build time (agent/build.rs), else the package
/// version (`Cargo.toml`); see [`Version`] for the test hook that overrides it at run time.
pub const VERSION: Version = Version;
/// The version this build was given at build time.
pub const BUILD_VERSION: &str = env!("SHOAL_BUILD_VERSION");
/// Test hook: the version this process reports instead of [`BUILD_VERSION`]. The upgrade test
/// runs "the next version" as the same binary with this set (a second build costs a full
/// compile, which CI's two cores cannot afford); never set it in production.
pub const TEST_VERSION_ENV: &str = "SHOAL_TEST_OVERRIDE_VERSION";
/// `git rev-parse --short=12 HEAD` at build time, or `unknown`.
pub const GIT_COMMIT: &str = env!("SHOAL_GIT_COMMIT");
/// The version of shoal's API (`control/proto/shoal.proto`, package `shoal.v1`, and the
/// documents in its bytes fields): the major changes only with an incompatible change, the
/// minor with each addition. Nodes check each other's (`shoal_control::version`).
pub const API_VERSION: &str = shoal_control::version::API_VERSION;
/// The oldest API version this agent works with: new fields are optional in proto3 and carry
/// `#[serde(default)]` in the model's documents.
pub const MIN_API_VERSION: &str = shoal_control::version::MIN_API_VERSION;

/// [`VERSION`]'s type: reads as a `&str` (`Deref`, `Display`, `Serialize`), resolved once per
/// process: [`TEST_VERSION_ENV`] if set and not empty, else [`BUILD_VERSION`].
#[derive(Debug, Clone, Copy)]
pub struct Version;

impl Version {
    pub fn as_str(self) -> &'static str {
        static RESOLVED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        RESOLVED.get_or_init(|| {
            std::env::var(TEST_VERSION_ENV)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| BUILD_VERSION.to_string())
        })
    }
}

impl std::ops::Deref for Version {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

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
