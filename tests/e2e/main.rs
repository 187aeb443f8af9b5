//! End-to-end tests: real namespaces, real eBPF programs, the real `shoal` binary. Needs root.
//!
//! One test binary with a module per area, as hickory and aya do.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

mod agent_container;
mod authz;
mod autolock;
mod cert_reissue;
mod certificates;
mod cli_errors;
mod client_address;
mod cluster_basics;
mod dataplane_programs;
mod dns;
mod docker_cli;
mod docker_logs_events;
mod docker_py;
mod docker_stack;
mod docker_swarm;
mod draining;
mod gossip_bounds;
mod health;
mod host_install;
mod ingress_recreate;
mod lb_delta;
mod lb_nonlinear;
mod lb_programs;
mod mesh;
mod mesh_flood;
mod mesh_pmtu;
mod mesh_programs;
mod netdb_signatures;
mod network_mtu;
mod networks;
mod node_local;
mod overlay;
mod pinned_maps;
mod provisioning;
mod publish;
mod readiness;
mod refusal;
mod resources;
mod secrets;
mod service_fields;
mod services;
mod stacks;
mod support;
mod swarm_core;
mod upgrade;
mod vip;
mod volumes;
