//! This node's swarm state as dockerd reports it (the `Swarm` header of `/_ping`, `/info`'s
//! `Swarm.LocalNodeState`) and dockerd's refusal of cluster calls on a node that is no
//! manager or already in a swarm (moby `daemon/cluster/errors.go`), checked before the call as
//! dockerd does.

use shoal_control::{
    api::{InfoRequest, InfoResponse},
    wire_limits::agent_client,
};

use super::{Engine, errors::ApiError};

/// dockerd's `errSwarmNotManager`.
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to \
     view or modify cluster state. Please run this command on a manager node or promote the \
     current node to a manager.";

/// dockerd's `errNoManager` for a node in no swarm. It names the `docker` commands because
/// the caller speaks the Engine API: the docker CLI, whose `swarm init` shoal will serve.
pub const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
     \"docker swarm join\" to connect this node to swarm and try again.";

/// dockerd's `errSwarmLocked`.
pub const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
     Please use \"docker swarm unlock\" to unlock it.";

/// dockerd's `errSwarmExists`, for init and join on a node in a swarm (locked or not).
pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm \
     leave\" to leave this swarm and join another one.";

/// dockerd's `errNoSwarm`, for leave on a node in no swarm.
pub const NO_SWARM: &str = "This node is not part of a swarm";

/// This node as the agent's `Info` call describes it.
pub async fn read(engine: &Engine) -> Result<InfoResponse, ApiError> {
    Ok(agent_client(engine.channel.clone())
        .info(InfoRequest {})
        .await?
        .into_inner())
}

/// `LocalNodeState`: inactive, active or locked (shoal has no pending or error state).
pub fn local_node_state(info: &InfoResponse) -> &'static str {
    match info.swarm_state.as_str() {
        "active" => "active",
        "locked" => "locked",
        _ => "inactive",
    }
}

/// The `Swarm` header of `/_ping`: `inactive`, `locked`, `active/worker` or `active/manager`.
pub fn ping_header(info: &InfoResponse) -> &'static str {
    match (local_node_state(info), info.is_manager) {
        ("active", true) => "active/manager",
        ("active", false) => "active/worker",
        (state, _) => state,
    }
}

/// Ok on an active manager; otherwise dockerd's 503 for the node's state.
pub fn require_manager(info: &InfoResponse) -> Result<(), ApiError> {
    match (local_node_state(info), info.is_manager) {
        ("active", true) => Ok(()),
        ("active", false) => Err(ApiError::unavailable(NOT_A_MANAGER)),
        ("locked", _) => Err(ApiError::unavailable(LOCKED)),
        _ => Err(ApiError::unavailable(NOT_IN_SWARM)),
    }
}

/// Refuses init and join, as dockerd does before asking swarmkit, unless the node is in no
/// swarm.
pub fn require_no_swarm(info: &InfoResponse) -> Result<(), ApiError> {
    match local_node_state(info) {
        "inactive" => Ok(()),
        _ => Err(ApiError::unavailable(ALREADY_IN_SWARM)),
    }
}

/// Reads the node's state and refuses as dockerd does unless it is an active manager.
pub async fn manager(engine: &Engine) -> Result<InfoResponse, ApiError> {
    let info = read(engine).await?;
    require_manager(&info)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: &str, manager: bool) -> InfoResponse {
        InfoResponse {
            swarm_state: state.into(),
            is_manager: manager,
            ..Default::default()
        }
    }

    #[test]
    fn states_read_as_dockerds() {
        assert_eq!(ping_header(&info("active", true)), "active/manager");
        assert_eq!(ping_header(&info("active", false)), "active/worker");
        assert_eq!(ping_header(&info("inactive", false)), "inactive");
        assert_eq!(ping_header(&info("locked", true)), "locked");
        assert!(require_manager(&info("active", true)).is_ok());
        let worker = require_manager(&info("active", false)).unwrap_err();
        assert_eq!(
            (worker.status.as_u16(), worker.message.as_str()),
            (503, NOT_A_MANAGER)
        );
        let alone = require_manager(&info("inactive", false)).unwrap_err();
        assert_eq!(alone.message, NOT_IN_SWARM);
        assert!(require_no_swarm(&info("inactive", false)).is_ok());
        for (state, manager) in [("active", false), ("locked", true)] {
            let refused = require_no_swarm(&info(state, manager)).unwrap_err();
            assert_eq!(
                (refused.status.as_u16(), refused.message.as_str()),
                (503, ALREADY_IN_SWARM)
            );
        }
    }
}
