//! `/swarm`: inspect, init, join, leave, update, and the unlock key and unlock, as dockerd
//! answers them (moby `daemon/cluster/swarm.go`). Each is the call the `shoal swarm` command
//! makes; dockerd's refusals that depend only on the node's state are answered here first, in
//! dockerd's words, as dockerd does before asking swarmkit.

use std::collections::HashMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Map, Value};
use shoal_control::{
    api::{
        Empty, InfoResponse, InitRequest, JoinSwarmRequest, JoinTokenRequest, LeaveRequest,
        RootCaRequest, UnlockKeyRequest, UnlockRequest, UpdateNodeRequest, UpdateSwarmRequest,
    },
    wire_limits::{agent_client, cluster_client},
};
use tonic::Code;

use super::{
    Engine, Shared,
    errors::ApiError,
    node_state,
    services::is_true,
    shape::{
        json::is_empty,
        swarm::{self as shape, Cluster, Posted},
    },
};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/swarm", get(inspect))
        .route("/swarm/init", post(init))
        .route("/swarm/join", post(join))
        .route("/swarm/leave", post(leave))
        .route("/swarm/update", post(update))
        .route("/swarm/unlockkey", get(unlock_key))
        .route("/swarm/unlock", post(unlock))
}

/// dockerd's answer to an update quoting a version that is no longer current.
const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

/// The swarm as the API's calls describe it, for an active manager (`info`); with the join
/// tokens when `tokens`.
pub async fn read(engine: &Engine, info: &InfoResponse, tokens: bool) -> Result<Cluster, ApiError> {
    let mut cluster = cluster_client(engine.channel.clone());
    let settings = cluster.inspect_swarm(Empty {}).await?.into_inner();
    let root = cluster
        .root_ca(RootCaRequest { rotate: false })
        .await?
        .into_inner();
    let tokens = if tokens {
        Some((
            join_token(engine, "worker", false).await?,
            join_token(engine, "manager", false).await?,
        ))
    } else {
        None
    };
    Ok(Cluster {
        id: settings.id,
        version: settings.version,
        created_ms: settings.created_at_ms,
        updated_ms: settings.updated_at_ms,
        data_path_port: info.data_path_port,
        default_addr_pools: settings.default_addr_pools,
        subnet_size: settings.subnet_size,
        heartbeat_ms: settings.heartbeat_period_ms,
        cert_expiry_secs: settings.cert_expiry_secs,
        autolock: settings.autolock,
        ca_cert_pem: root.ca_cert_pem,
        rotating: !root.desired_ca_cert_pem.is_empty(),
        tokens,
    })
}

async fn join_token(engine: &Engine, role: &str, rotate: bool) -> Result<String, ApiError> {
    Ok(cluster_client(engine.channel.clone())
        .join_token(JoinTokenRequest {
            role: role.to_string(),
            rotate,
        })
        .await?
        .into_inner()
        .token)
}

async fn inspect(State(engine): State<Shared>) -> Result<Json<Value>, ApiError> {
    let info = node_state::manager(&engine).await?;
    Ok(Json(shape::swarm(&read(&engine, &info, true).await?)))
}

/// `POST /swarm/init`: the new node's ID, as a JSON string.
async fn init(State(engine): State<Shared>, body: Bytes) -> Result<Json<String>, ApiError> {
    let mut body = object(&body)?;
    let info = node_state::read(&engine).await?;
    if take(&mut body, "ForceNewCluster").as_bool() == Some(true) {
        return Err(ApiError::bad_request(
            "ForceNewCluster is not supported by shoal",
        ));
    }
    node_state::require_no_swarm(&info)?;
    match take(&mut body, "DataPathPort").as_u64() {
        Some(0) | None => {}
        Some(port) if port == u64::from(info.data_path_port) => {}
        Some(port) => {
            return Err(ApiError::bad_request(format!(
                "DataPathPort {port} is not this agent's data path port ({}): shoal's is set \
                 when the agent starts",
                info.data_path_port
            )));
        }
    }
    let availability = availability(&mut body)?;
    let spec = shape::read_spec(
        &Value::Object(Map::new()),
        take(&mut body, "Spec"),
        Posted::Init,
    )?;
    let request = InitRequest {
        listen_addr: string(&mut body, "ListenAddr")?,
        advertise_addr: string(&mut body, "AdvertiseAddr")?,
        data_path_addr: string(&mut body, "DataPathAddr")?,
        default_addr_pools: strings(&mut body, "DefaultAddrPool")?,
        default_addr_pool_mask_length: match take(&mut body, "SubnetSize") {
            Value::Null => 0,
            v => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid JSON: SubnetSize must be a number")
                })?,
        },
        dispatcher_heartbeat_ms: spec.heartbeat_ms.unwrap_or(0),
        autolock: take(&mut body, "AutoLockManagers").as_bool() == Some(true)
            || spec.autolock == Some(true),
        cert_expiry_secs: spec.cert_expiry_secs.unwrap_or(0),
    };
    rest(body)?;
    let node_id = cluster_client(engine.channel.clone())
        .init(request)
        .await?
        .into_inner()
        .node_id;
    // Shoal's init has no availability: the new manager sets its own, as the CLI would next.
    if !availability.is_empty() && availability != "active" {
        cluster_client(engine.channel.clone())
            .update_node(UpdateNodeRequest {
                node: node_id.clone(),
                availability,
                ..Default::default()
            })
            .await?;
    }
    Ok(Json(node_id))
}

/// `POST /swarm/join`: the first of `RemoteAddrs` admits the node, as dockerd uses it.
async fn join(State(engine): State<Shared>, body: Bytes) -> Result<StatusCode, ApiError> {
    let mut body = object(&body)?;
    let info = node_state::read(&engine).await?;
    node_state::require_no_swarm(&info)?;
    let remotes = strings(&mut body, "RemoteAddrs")?;
    let Some(remote_addr) = remotes.into_iter().next() else {
        return Err(ApiError::bad_request(
            "at least 1 RemoteAddr is required to join",
        ));
    };
    let availability = availability(&mut body)?;
    // A worker cannot set its own availability once joined, so it is refused before joining.
    if !availability.is_empty() && availability != "active" {
        return Err(ApiError::bad_request(format!(
            "Availability \"{availability}\" at join is not supported by shoal: a node joins \
             active (set it with \"docker node update --availability\" from a manager)"
        )));
    }
    let request = JoinSwarmRequest {
        token: string(&mut body, "JoinToken")?,
        remote_addr,
        listen_addr: string(&mut body, "ListenAddr")?,
        advertise_addr: string(&mut body, "AdvertiseAddr")?,
        data_path_addr: string(&mut body, "DataPathAddr")?,
    };
    rest(body)?;
    cluster_client(engine.channel.clone())
        .join_swarm(request)
        .await?;
    Ok(StatusCode::OK)
}

/// `POST /swarm/leave?force=`. dockerd refuses any manager without `force` (demote it
/// first), saying whether the swarm would lose its quorum or its last manager.
async fn leave(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let force = query.get("force").is_some_and(|v| is_true(v));
    let info = node_state::read(&engine).await?;
    match node_state::local_node_state(&info) {
        "inactive" => return Err(ApiError::unavailable(node_state::NO_SWARM)),
        "locked" if !force => {
            return Err(ApiError::unavailable(
                "Swarm is encrypted and locked. Please unlock it first or use `--force` to \
                 ignore this message.",
            ));
        }
        "active" if info.is_manager && !force => {
            return Err(ApiError::unavailable(
                manager_leave_refusal(&engine, &info).await,
            ));
        }
        _ => {}
    }
    cluster_client(engine.channel.clone())
        .leave(LeaveRequest { force })
        .await?;
    Ok(StatusCode::OK)
}

/// dockerd's refusal of a manager's leave without `force` (moby `Cluster.Leave`).
async fn manager_leave_refusal(engine: &Engine, info: &InfoResponse) -> String {
    let mut message = String::from(
        "You are attempting to leave the swarm on a node that is participating as a manager. ",
    );
    // As dockerd, the quorum sentence is left out when the managers cannot be listed.
    if let Ok(nodes) = cluster_client(engine.channel.clone())
        .list_nodes(Empty {})
        .await
    {
        let nodes = nodes.into_inner().nodes;
        let managers = nodes.iter().filter(|n| n.role == "manager");
        let reachable = |s: &str| s == "leader" || s == "reachable";
        let up = managers
            .clone()
            .filter(|n| reachable(&n.manager_status))
            .count();
        let down = managers
            .filter(|n| n.manager_status == "unreachable")
            .count();
        let me = nodes
            .iter()
            .any(|n| n.id == info.node_id && reachable(&n.manager_status));
        if me && up <= down + 2 {
            if up == 1 && down == 0 {
                message.push_str(
                    "Removing the last manager erases all current state of the swarm. Use \
                     `--force` to ignore this message. ",
                );
                return message;
            }
            message.push_str(&format!(
                "Removing this node leaves {} managers out of {}. Without a Raft quorum your \
                 swarm will be inaccessible. ",
                up - 1,
                up + down
            ));
        }
    }
    message.push_str(
        "The only way to restore a swarm that has lost consensus is to reinitialize it with \
         `--force-new-cluster`. Use `--force` to suppress this message.",
    );
    message
}

/// `POST /swarm/update?version=&rotateWorkerToken=&rotateManagerToken=&rotateManagerUnlockKey=`:
/// the posted spec against the one `GET /swarm` reports; every change is checked before the
/// first is made, so a refused update changes nothing.
///
/// `version` is the settings' version the client read: the first call (`UpdateSwarm`, with the
/// cert expiry if asked) quotes it and the leader refuses it if the settings changed since
/// ("update out of sequence"); a cert expiry change is checked when it applies. The calls that
/// follow (autolock, token and CA rotations) are not tied to it: one that races another
/// client's update between the two is applied all the same.
async fn update(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let info = node_state::manager(&engine).await?;
    let raw_version = query.get("version").map_or("", String::as_str);
    let version = raw_version.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid swarm version '{raw_version}': strconv.ParseUint: parsing \
             \"{raw_version}\": invalid syntax"
        ))
    })?;
    let rotate_worker = flag(&query, "rotateWorkerToken")?;
    let rotate_manager = flag(&query, "rotateManagerToken")?;
    let rotate_unlock = flag(&query, "rotateManagerUnlockKey")?;
    let posted: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let current = read(&engine, &info, false).await?;
    let asked = shape::read_spec(&shape::spec(&current), posted, Posted::Update)?;

    let mut cluster = cluster_client(engine.channel.clone());
    let checked = cluster
        .update_swarm(UpdateSwarmRequest {
            cert_expiry_secs: asked.cert_expiry_secs,
            expected_version: Some(version),
        })
        .await;
    match checked {
        Ok(_) => {}
        Err(status) if status.code() == Code::Aborted => {
            return Err(ApiError::internal(OUT_OF_SEQUENCE));
        }
        Err(status) => return Err(status.into()),
    }
    if asked.autolock.is_some() || rotate_unlock {
        cluster
            .unlock_key(UnlockKeyRequest {
                autolock: asked.autolock,
                rotate: rotate_unlock,
            })
            .await?;
    }
    for (role, rotate) in [("worker", rotate_worker), ("manager", rotate_manager)] {
        if rotate {
            join_token(&engine, role, true).await?;
        }
    }
    if asked.rotate_ca {
        cluster.root_ca(RootCaRequest { rotate: true }).await?;
    }
    Ok(StatusCode::OK)
}

/// `GET /swarm/unlockkey`: empty when autolock is off, as dockerd's.
async fn unlock_key(State(engine): State<Shared>) -> Result<Json<Value>, ApiError> {
    node_state::manager(&engine).await?;
    let key = cluster_client(engine.channel.clone())
        .unlock_key(UnlockKeyRequest {
            autolock: None,
            rotate: false,
        })
        .await?
        .into_inner()
        .key;
    Ok(Json(serde_json::json!({ "UnlockKey": key })))
}

/// `POST /swarm/unlock` (`{"UnlockKey"}`): only a locked node is unlocked (moby
/// `Cluster.UnlockSwarm`).
async fn unlock(State(engine): State<Shared>, body: Bytes) -> Result<StatusCode, ApiError> {
    let mut body = object(&body)?;
    let key = string(&mut body, "UnlockKey")?;
    rest(body)?;
    let info = node_state::read(&engine).await?;
    match (node_state::local_node_state(&info), info.is_manager) {
        ("locked", _) => {}
        ("active", true) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "swarm is not locked"));
        }
        _ => node_state::require_manager(&info)?,
    }
    match agent_client(engine.channel.clone())
        .unlock(UnlockRequest { key })
        .await
    {
        Ok(_) => Ok(StatusCode::OK),
        Err(status) if status.code() == Code::InvalidArgument => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "swarm could not be unlocked: invalid key provided",
        )),
        Err(status) => Err(status.into()),
    }
}

/// `Availability` of init and join: empty, or one of Docker's three.
fn availability(body: &mut Map<String, Value>) -> Result<String, ApiError> {
    let availability = string(body, "Availability")?.to_lowercase();
    match availability.as_str() {
        "" | "active" | "pause" | "drain" => Ok(availability),
        other => Err(ApiError::bad_request(format!(
            "invalid Availability: {other:?}"
        ))),
    }
}

/// A query flag as Go's `strconv.ParseBool` reads it; absent or empty is false.
fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {other}"
        ))),
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("invalid JSON: expected an object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn take(body: &mut Map<String, Value>, key: &str) -> Value {
    body.remove(key).unwrap_or(Value::Null)
}

fn string(body: &mut Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match take(body, key) {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        _ => Err(ApiError::bad_request(format!(
            "invalid JSON: {key} must be a string"
        ))),
    }
}

fn strings(body: &mut Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match take(body, key) {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::bad_request(format!(
                    "invalid JSON: {key} must be a list of strings"
                ))),
            })
            .collect(),
        _ => Err(ApiError::bad_request(format!(
            "invalid JSON: {key} must be a list of strings"
        ))),
    }
}

/// Refuses the first field left unread that asks for something.
fn rest(body: Map<String, Value>) -> Result<(), ApiError> {
    match body.into_iter().find(|(_, v)| !is_empty(v)) {
        Some((key, _)) => Err(ApiError::bad_request(format!(
            "{key} is not supported by shoal"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_gos_parse_bool() {
        let query: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert_eq!(flag(&query, "a"), Ok(true));
        assert_eq!(flag(&query, "b"), Ok(false));
        let query: HashMap<String, String> = [("a".to_string(), "yes".to_string())].into();
        assert_eq!(
            flag(&query, "a").unwrap_err().message,
            "invalid value for a: yes"
        );
    }

    #[test]
    fn unread_fields_that_ask_for_something_are_refused() {
        let body = object(br#"{"Availability": "", "Foo": {"Bar": 1}}"#).unwrap();
        assert_eq!(
            rest(body).unwrap_err().message,
            "Foo is not supported by shoal"
        );
        assert!(rest(object(br#"{"Foo": {}}"#).unwrap()).is_ok());
    }
}
