//! shoal's data path, userspace side: the eBPF object and the kernel objects around it.
//!
//! `control` and `dns` know nothing of this crate; only the agent wires it in.
//!
//! # Layout
//! - [`object`]: the eBPF object embedded at build time.
//! - [`loader`]: [`Dataplane`], which loads the object with its maps pinned per node and
//!   attaches programs to interfaces (XDP on the underlay, tc on task-facing veths).
//! - [`stats`]: typed handle on the per-CPU packet counters.
//! - `maps`: what every owner of the object's maps uses (taking a map, naming it in errors,
//!   per-CPU zeros and sums, addresses in the maps' byte order).
//! - `programs`: finding a program of the object by name, as its type, and naming it in
//!   errors (the loader, the socket-level balancer and the flow clock).
//! - `flow_lifetime`: when a flow's conntrack entries may be forgotten (linger, UDP idle, a
//!   flow's other entry); shared by [`lb`] (which re-exports its public items) and [`mesh`].
//! - [`flow_clock`]: the programs' clock (jiffies) converted to CLOCK_MONOTONIC for those
//!   rules.
//! - [`lb`]: [`LoadBalancer`], the service VIP maps: a whole table on start, then one
//!   service per change (batched writes), a background check, and their counters.
//! - [`mesh`]: [`Mesh`], the published ports' maps (ingress routing mesh, host mode).
//! - [`flow_tables`]: how full the flow tables are and what they take (`shoal info`).
//! - [`sock_destroy`]: destroying the sockets the socket-level balancer sent to a backend
//!   that has gone (`SOCK_DESTROY`).
//! - [`bpffs`]: mounting bpffs and the per-node pin directory.
//! - `pins`: which pinned maps a restarted agent may re-adopt (those of this build's layout).
//! - [`table_sizes`]: the table capacities an operator chooses (`--lb-flows`, `--mesh-flows`);
//!   `carry_over`: a resized flow table's entries copied into the new one.
//! - [`netns`]: running code inside another network namespace, on a thread of its own.
//! - [`overlay`]: overlay sandboxes (bridge + VXLAN netns), task veths, remote endpoints, and
//!   the node's gateway bridge with its masquerade.
//! - [`error`]: the crate's error type.

pub mod bpffs;
mod carry_over;
pub mod error;
pub mod flow_clock;
mod flow_lifetime;
pub mod flow_tables;
pub mod lb;
pub mod loader;
mod maps;
pub mod mesh;
pub mod netns;
pub mod object;
pub mod overlay;
mod pins;
mod programs;
pub mod sock_destroy;
pub mod sock_lb;
pub mod stats;
pub mod table_sizes;

pub use error::Error;
pub use lb::{LbTable, LoadBalancer};
pub use loader::{Dataplane, TestRunOutcome, XdpAttachMode};
pub use mesh::{Mesh, MeshTable};
pub use stats::HookCounters;
pub use table_sizes::TableSizes;
