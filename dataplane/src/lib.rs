//! shoal's data path, userspace side: the eBPF object and the kernel objects around it.
//!
//! `control` and `dns` know nothing of this crate; only the agent wires it in.
//!
//! # Layout
//! - [`object`]: the eBPF object embedded at build time.
//! - [`loader`]: [`Dataplane`], which loads the object with its maps pinned per node and
//!   attaches programs to interfaces (XDP on the underlay, tc on task-facing veths).
//! - [`stats`]: typed handle on the per-CPU packet counters.
//! - [`lb`]: [`LoadBalancer`], the service VIP maps kept equal to a desired table, and their
//!   counters.
//! - [`mesh`]: [`Mesh`], the published ports' maps (ingress routing mesh, host mode).
//! - [`bpffs`]: mounting bpffs and the per-node pin directory.
//! - [`netns`]: running code inside another network namespace, on a thread of its own.
//! - [`overlay`]: overlay sandboxes (bridge + VXLAN netns), task veths, remote endpoints.
//! - [`error`]: the crate's error type.

pub mod bpffs;
pub mod error;
pub mod lb;
pub mod loader;
pub mod mesh;
pub mod netns;
pub mod object;
pub mod overlay;
pub mod stats;

pub use error::Error;
pub use lb::{LbTable, LoadBalancer};
pub use loader::{Dataplane, TestRunOutcome, XdpAttachMode};
pub use mesh::{Mesh, MeshTable};
pub use stats::HookCounters;
