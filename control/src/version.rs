//! The version of shoal's API between nodes, and the check every node makes of its peers.
//!
//! Every call a node makes to another node's 2377 carries its API version in the HTTP
//! `user-agent` (`shoal-api/<major>.<minor>`, set on every channel `pki` builds); the 2377
//! server refuses, with one line, a caller whose major differs from its own or whose version is
//! below its minimum, and a caller that names none (a shoal from before 2.0, whose payloads were
//! postcard). A minor version adds only what older nodes can ignore (fields with defaults, see
//! `format`), so nodes one minor apart work together: that is what makes a rolling upgrade.
//!
//! `SHOAL_TEST_OVERRIDE_API_VERSION` (a test hook, read once) makes the node claim another
//! version, so the end-to-end tests can run a cluster of two API versions from one build.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The API this build speaks (`proto/shoal.proto` plus the documents in its bytes fields). 2.0:
/// the documents became CBOR (1.x sent postcard, which no 2.x node reads).
pub const API_VERSION: &str = "2.0";
/// The oldest API this build works with.
pub const MIN_API_VERSION: &str = "2.0";
/// Test hook: the API version this node claims instead of [`API_VERSION`].
pub const TEST_API_VERSION_ENV: &str = "SHOAL_TEST_OVERRIDE_API_VERSION";
/// How a node names its API version in the `user-agent` of its calls to other nodes.
pub const USER_AGENT_PREFIX: &str = "shoal-api/";

/// `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Text that is not `major.minor`.
#[derive(Debug, thiserror::Error)]
#[error("not an API version (major.minor): {0:?}")]
pub struct BadApiVersion(String);

impl FromStr for ApiVersion {
    type Err = BadApiVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadApiVersion(s.to_string());
        let (major, minor) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(ApiVersion {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// What this node speaks and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaks {
    pub version: ApiVersion,
    pub minimum: ApiVersion,
}

fn parse_const(text: &str) -> ApiVersion {
    text.parse().unwrap_or(ApiVersion { major: 0, minor: 0 })
}

impl Speaks {
    /// This build's: [`API_VERSION`] (or the test hook's) and [`MIN_API_VERSION`] (the hook's
    /// major with minor 0 when the hook names another major).
    pub fn local() -> Speaks {
        static LOCAL: OnceLock<Speaks> = OnceLock::new();
        *LOCAL.get_or_init(|| {
            let version = std::env::var(TEST_API_VERSION_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| parse_const(API_VERSION));
            let minimum = parse_const(MIN_API_VERSION);
            let minimum = if minimum.major == version.major {
                minimum.min(version)
            } else {
                ApiVersion {
                    major: version.major,
                    minor: 0,
                }
            };
            Speaks { version, minimum }
        })
    }

    /// Whether a peer speaking `peer` (`None`: it named no version) may talk to this node.
    pub fn accepts(&self, peer: Option<ApiVersion>) -> Result<(), Incompatible> {
        match peer {
            Some(peer) if peer.major == self.version.major && peer >= self.minimum => Ok(()),
            peer => Err(Incompatible { peer, us: *self }),
        }
    }
}

/// A peer this node does not work with; the message is the one line both sides show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Incompatible {
    pub peer: Option<ApiVersion>,
    pub us: Speaks,
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Speaks { version, minimum } = self.us;
        match self.peer {
            Some(peer) => write!(
                f,
                "incompatible shoal versions: the caller speaks API {peer}, this node speaks \
                 {version} and works with {minimum} to {}.x; upgrade nodes one minor version at a \
                 time",
                version.major
            ),
            None => write!(
                f,
                "incompatible shoal versions: the caller names no API version (a shoal before \
                 2.0), this node speaks {version}; stop every node, upgrade them all, then start \
                 them (README, Upgrades)"
            ),
        }
    }
}

/// The `user-agent` this node's calls to other nodes start with.
pub fn user_agent() -> String {
    format!("{USER_AGENT_PREFIX}{}", Speaks::local().version)
}

/// The API version a `user-agent` names, if it is a shoal node's.
pub fn from_user_agent(user_agent: &str) -> Option<ApiVersion> {
    let rest = user_agent.trim_start().strip_prefix(USER_AGENT_PREFIX)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The 2377 server's check of every call (a tonic interceptor): the caller's API version must
/// be one this node works with.
#[allow(
    clippy::result_large_err,
    reason = "tonic's interceptor signature returns a Status"
)]
pub fn check_caller(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let peer = request
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(from_user_agent);
    match Speaks::local().accepts(peer) {
        Ok(()) => Ok(request),
        Err(refused) => {
            tracing::debug!(reason = %refused, "refused a call from another node");
            Err(tonic::Status::failed_precondition(refused.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> ApiVersion {
        text.parse().unwrap()
    }

    #[test]
    fn versions_parse_and_order_by_major_then_minor() {
        assert_eq!(
            v("2.10"),
            ApiVersion {
                major: 2,
                minor: 10
            }
        );
        assert!(v("2.10") > v("2.9"));
        assert!(v("3.0") > v("2.99"));
        for bad in ["", "2", "2.", ".1", "a.b", "2.1.0"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_const(API_VERSION).to_string(), API_VERSION);
        assert_eq!(parse_const(MIN_API_VERSION).to_string(), MIN_API_VERSION);
        assert!(parse_const(MIN_API_VERSION) <= parse_const(API_VERSION));
    }

    #[test]
    fn same_major_at_or_above_the_minimum_is_accepted_and_nothing_else() {
        let us = Speaks {
            version: v("2.3"),
            minimum: v("2.2"),
        };
        assert!(us.accepts(Some(v("2.2"))).is_ok(), "one minor older");
        assert!(us.accepts(Some(v("2.3"))).is_ok());
        assert!(us.accepts(Some(v("2.7"))).is_ok(), "a newer minor");
        for refused in [Some(v("2.1")), Some(v("1.9")), Some(v("3.0")), None] {
            let err = us.accepts(refused).unwrap_err();
            let line = err.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.starts_with("incompatible shoal versions"), "{line}");
            if let Some(peer) = refused {
                assert!(line.contains(&peer.to_string()), "{line}");
            }
        }
    }

    #[test]
    fn the_user_agent_carries_the_version_ahead_of_tonics() {
        let ours = user_agent();
        assert_eq!(from_user_agent(&ours), Some(Speaks::local().version));
        assert_eq!(
            from_user_agent("shoal-api/2.1 tonic/0.14.2"),
            Some(v("2.1"))
        );
        assert_eq!(from_user_agent("tonic/0.14.2"), None);
        assert_eq!(from_user_agent("shoal-api/x tonic/0.14.2"), None);
    }

    #[test]
    fn the_interceptor_refuses_with_failed_precondition() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("user-agent", "shoal-api/1.1 tonic/0.14".parse().unwrap());
        let status = check_caller(request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("API 1.1"), "{}", status.message());
        assert!(check_caller(tonic::Request::new(())).is_err());
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("user-agent", user_agent().parse().unwrap());
        assert!(check_caller(request).is_ok());
    }
}
