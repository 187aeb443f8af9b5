//! Loopback tests of the embedded DNS server: a task served on 127.0.0.1 ephemeral ports (the
//! same code path as 127.0.0.11:53 inside a task netns), queried with hickory-proto messages.
//! No root needed.
#![allow(
    clippy::unwrap_used,
    reason = "test harness helpers: a failed unwrap is a failed test, with its location"
)]

mod abuse;
mod batches;
mod forwarding;
mod harness;
mod local;
