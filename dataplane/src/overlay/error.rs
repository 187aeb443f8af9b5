//! Errors of the overlay module. Each variant carries what was being done, to which link or
//! namespace, so a failure in the agent log points at the exact kernel object.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("invalid overlay request: {0}")]
    Invalid(String),

    #[error("{what} {path}")]
    Netns {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("entering network namespace {path}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: Box<crate::Error>,
    },

    #[error("starting a netlink runtime/connection in netns {netns}")]
    Connect {
        netns: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("netlink: {what} {object} in netns {netns}")]
    Netlink {
        what: &'static str,
        object: String,
        netns: PathBuf,
        // Boxed: rtnetlink's error embeds whole netlink messages and would bloat every Result.
        #[source]
        source: Box<rtnetlink::Error>,
    },

    #[error("link {link} not found in netns {netns}")]
    LinkMissing { link: String, netns: PathBuf },
}
