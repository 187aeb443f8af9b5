//! Wall-clock time as the cluster model stores it: milliseconds or seconds since the Unix epoch.
//!
//! One home for the conversions the agent and the control plane both need. A clock before the
//! epoch reads as 0 rather than failing: the values only order and age records.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
