//! Docker's JSON shapes, to and from the API's messages. What `shoal ... inspect` prints is
//! reused (`commands::*::render`), so both CLIs show the same objects; only what the Engine
//! API adds or names differently is here.
//!
//! # Layout
//! - `json`: reading a JSON object field by field, naming what was left unread.
//! - `service_in`: Docker's `ServiceSpec` in, with `Warnings` for what shoal does not do.
//! - `program`: `ContainerSpec.Image` must name a program.
//! - `service_out`, `task`, `node`: the objects out (`node` also reads a posted `NodeSpec`).
//! - `swarm`: the swarm out, and a posted swarm spec read against it.

pub mod base64;
pub mod file_object;
pub mod json;
pub mod node;
pub mod program;
pub mod service_in;
pub mod service_out;
pub mod swarm;
pub mod task;

use crate::time_format::rfc3339;

/// A timestamp as Go's RFC 3339 with milliseconds (Docker's times carry nanoseconds; the
/// CLI's "5 seconds ago" needs no more than this).
pub fn timestamp(ms: u64) -> String {
    let secs = rfc3339(ms / 1000);
    let whole = secs.trim_end_matches('Z');
    format!("{whole}.{:03}Z", ms % 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_carry_milliseconds() {
        assert_eq!(super::timestamp(1_500), "1970-01-01T00:00:01.500Z");
    }
}
