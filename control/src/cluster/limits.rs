//! What one service may ask of the cluster. Docker's API takes any count; shoal refuses, with
//! one line, what it could not hold: a spec travels in every Raft entry and snapshot that
//! carries its tasks, and in every assignment to a node, so an unbounded one (a trillion
//! replicas, megabytes of environment) would take the managers down with it.
//!
//! The bounds multiply out below the gRPC limit ([`crate::wire_limits::MAX_MESSAGE_BYTES`]):
//! a node assigned every replica of the largest service receives at most
//! `MAX_REPLICAS * MAX_SPEC_BYTES` = 32 MiB of tasks.

/// Replicas of one service.
pub const MAX_REPLICAS: u64 = 2_000;
/// A task template, encoded (command, environment, mounts, constraints, ports, networks,
/// labels, aliases).
pub const MAX_SPEC_BYTES: usize = 16 * 1024;
/// Published ports of one service.
pub const MAX_PORTS: usize = 64;
/// Networks one service is attached to (each task gets an interface per network).
pub const MAX_NETWORKS: usize = 16;
/// Mounts (binds, volumes, tmpfs) of one service.
pub const MAX_MOUNTS: usize = 64;
/// Environment variables of one service.
pub const MAX_ENV: usize = 256;
/// Placement constraints of one service.
pub const MAX_CONSTRAINTS: usize = 32;
/// Words of a service's command.
pub const MAX_COMMAND_WORDS: usize = 256;
/// Labels of one service or network.
pub const MAX_LABELS: usize = 64;
/// A service's or network's labels together, keys and values, in bytes. A network's labels
/// stay in the store: tasks carry their networks without them.
pub const MAX_LABELS_BYTES: usize = 4 * 1024;
/// Network-scoped aliases of one service, over all its networks.
pub const MAX_ALIASES: usize = 32;
