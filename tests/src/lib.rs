//! The netns cluster fixture: shoal nodes as network namespaces on one underlay bridge, each
//! running the real `shoal` binary, plus an "outside client" namespace on the same underlay.
//!
//! Everything a fixture creates is named with a per-fixture prefix (`shoal-t<pid>-<n>`) and
//! removed in `Drop`, also when a test panics. A test process killed outright cannot run
//! `Drop`: its agents die with it (parent-death signal), and the next fixture sweeps the
//! namespaces, state and pins of any prefix whose process is gone.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`], the fixture.
//! - [`agent`]: one `shoal agent` process and the CLI pointed at it.
//! - [`netns`]: [`Netns`], a named network namespace owned by the test, and command helpers.
//! - [`names`]: unique prefixes, the work directory, and sweeping leftovers of dead runs.
//! - [`swarm`]: forming a swarm on a cluster, and reading `node ls`.
//! - [`task_net`]: sockets opened inside a task's network namespace.
//! - [`wait`]: bounded polling for conditions.
#![allow(
    clippy::unwrap_used,
    reason = "test fixture: a failure to set up is a test failure, reported by the panic"
)]

pub mod agent;
pub mod cluster;
pub mod names;
pub mod netns;
pub mod swarm;
pub mod task_net;
pub mod wait;

pub use agent::Agent;
pub use cluster::{Cluster, Cut};
pub use netns::Netns;
pub use wait::wait_until;
