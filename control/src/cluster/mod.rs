//! The cluster model kept in Raft: what the cluster is, which nodes belong to it, and the
//! commands that change it. Applying a command is deterministic, so every manager's state
//! machine reaches the same state from the same log.
//!
//! # Layout
//! - `model`: the objects (cluster, nodes) and their enums.
//! - [`certs`]: the CA's settings, a root rotation under way, the certificates issued.
//! - `command`: [`Command`], [`CommandResponse`] and [`ClusterState::apply`].
//! - [`events`]: what an applied command changed, as Docker's swarm events say it.
//! - `service`: services (desired state) and tasks (their instances on nodes).
//! - `tasks`: the store's tasks, indexed by node.
//! - [`network`]: overlay networks.
//! - [`objects`]: secrets and configs, and what of them a node receives with its tasks.
//! - [`mesh`]: what a node needs to serve published ports, sent with its heartbeats.
//! - [`limits`]: what one service may ask of the cluster.
//! - [`gossip`]: the network DB's keys and their rotation.
//! - [`health`]: health checks (Docker's `HealthConfig`) and a task's health.
//! - [`signal`]: `--stop-signal` names and numbers, as Docker reads them.
//! - [`template`]: `--hostname` placeholders (`{{.Task.Slot}}`), checked here, filled on nodes.
//! - [`touched`]: which services a command changes, for the orchestrator.

pub mod certs;
mod command;
pub mod events;
pub mod gossip;
pub mod health;
pub mod held;
pub mod limits;
pub mod mesh;
pub mod mesh_delta;
mod model;
pub mod network;
pub mod objects;
mod service;
mod services;
pub mod signal;
mod tasks;
pub mod template;
pub mod touched;

pub use command::{Command, CommandResponse};
pub use model::{
    Availability, ClusterInfo, ClusterState, NodeRecord, NodeResources, Role, raft_id,
};
pub use network::NetworkAttachment;
pub use service::{
    CommandShape, Constraint, ConstraintKey, EndpointMode, FailureAction, InvalidVolumeName,
    MAX_VOLUME_NAME, Mount, MountKind, PortConfig, PortProtocol, PortSource, PublishMode,
    Resources, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus, TmpfsOptions, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
    VOLUME_NAME_CHARS, VirtualIp, validate_volume_name,
};
pub use services::Services;
pub use tasks::{NodeUsage, Tasks};
