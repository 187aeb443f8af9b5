//! Types shared by shoal's eBPF programs (kernel side) and the dataplane crate (userspace).
//!
//! Everything here is `#![no_std]`, `#[repr(C)]` and `Copy`, because the same bytes are read by
//! the kernel and by userspace. Each map's name is a `pub const` used by both sides, its layout
//! is documented next to it, and each shared type has a compile-time size check so that a field
//! added on one side cannot silently shift the other.
//!
//! # Layout
//! - [`stats`]: per-hook packet and byte counters.
//! - [`programs`]: names of the eBPF programs in the object.
//! - [`lb`]: service VIP load balancing: VIPs, backends, round-robin cursors, flows, counters.
//! - [`mesh`]: published ports (ingress routing mesh, host mode): ports, VTEPs, NAT flows.
//! - [`sock_lb`]: socket-level balancing (cgroup hooks): what balanced sockets asked for.
#![no_std]

pub mod lb;
pub mod mesh;
pub mod programs;
pub mod sock_lb;
pub mod stats;

/// Maps the agent pins under the node's bpffs directory, so a restarted agent re-adopts them.
pub const PINNED_MAPS: &[&str] = &[
    stats::STATS_MAP,
    lb::VIPS_MAP,
    lb::VIP_HINTS_MAP,
    lb::SLOTS_MAP,
    lb::BACKENDS_MAP,
    lb::CURSORS_MAP,
    lb::FLOWS_MAP,
    lb::SERVICE_STATS_MAP,
    lb::BACKEND_STATS_MAP,
    lb::EVENTS_MAP,
    mesh::CONFIG_MAP,
    mesh::ADDRS_MAP,
    mesh::PORTS_MAP,
    mesh::VTEPS_MAP,
    mesh::FLOWS_MAP,
    mesh::UNCONFIRMED_MAP,
    mesh::EVENTS_MAP,
    mesh::RETURNS_MAP,
    mesh::INGRESS_IF_MAP,
    sock_lb::ORIGINS_MAP,
    sock_lb::UDP_MAP,
];
