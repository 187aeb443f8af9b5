//! The cluster model kept in Raft: what the cluster is, which nodes belong to it, and the
//! commands that change it. Applying a command is deterministic, so every manager's state
//! machine reaches the same state from the same log.
//!
//! # Layout
//! - `model`: the objects (cluster, nodes) and their enums.
//! - `command`: [`Command`], [`CommandResponse`] and [`ClusterState::apply`].
//! - `service`: services (desired state) and tasks (their instances on nodes).
//! - [`network`]: overlay networks.
//! - [`mesh`]: what a node needs to serve published ports, sent with its heartbeats.
//! - [`limits`]: what one service may ask of the cluster.
//! - [`gossip`]: the network DB's keys and their rotation.

mod command;
pub mod gossip;
pub mod limits;
pub mod mesh;
mod model;
pub mod network;
mod service;

pub use command::{Command, CommandResponse};
pub use model::{Availability, ClusterInfo, ClusterState, NodeRecord, Role, raft_id};
pub use network::NetworkAttachment;
pub use service::{
    Constraint, ConstraintKey, EndpointMode, FailureAction, InvalidVolumeName, MAX_VOLUME_NAME,
    Mount, MountKind, PortConfig, PortProtocol, PublishMode, RestartCondition, RestartPolicy,
    Service, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus, TmpfsOptions, UpdateConfig,
    UpdateOrder, UpdateState, UpdateStatus, VOLUME_NAME_CHARS, VirtualIp, validate_volume_name,
};
