//! `GET /nodes` (filters `id`, `name`, `role`, `membership`, `label`, `node.label`, as
//! dockerd's), `GET /nodes/{id}`, `POST /nodes/{id}/update?version=` and
//! `DELETE /nodes/{id}?force=`.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
};
use shoal_control::{
    api::{Empty, NodeInfo, RemoveNodeRequest},
    wire_limits::cluster_client,
};
use tonic::Code;

use super::{
    Shared, errors::ApiError, filters::QueryFilters, lookup, node_state, services::is_true, shape,
};

const KEYS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];

pub async fn all(engine: &Shared) -> Result<Vec<NodeInfo>, ApiError> {
    Ok(cluster_client(engine.channel.clone())
        .list_nodes(Empty {})
        .await?
        .into_inner()
        .nodes)
}

pub async fn list(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    node_state::manager(&engine).await?;
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), KEYS)?;
    for role in filters.get("role") {
        if role != "manager" && role != "worker" {
            return Err(ApiError::bad_request(format!(
                "Invalid role filter: '{role}'"
            )));
        }
    }
    for membership in filters.get("membership") {
        if membership != "accepted" && membership != "pending" {
            return Err(ApiError::bad_request(format!(
                "Invalid membership filter: '{membership}'"
            )));
        }
    }
    let nodes = all(&engine).await?;
    Ok(Json(
        nodes
            .iter()
            .filter(|n| matches(n, &filters))
            .map(shape::node::node)
            .collect(),
    ))
}

/// Docker's node filters: `id` and `name` are prefixes; every node in a shoal swarm has been
/// accepted (admission happens at join); `label` is an engine label, of which shoal nodes
/// have none; `node.label` a node label (and its value).
fn matches(n: &NodeInfo, filters: &QueryFilters) -> bool {
    filters.allow("id", |v| n.id.starts_with(v))
        && filters.allow("name", |v| n.hostname.starts_with(v))
        && filters.allow("role", |v| v == n.role)
        && filters.allow("membership", |v| v == "accepted")
        && filters.allow("label", |_| false)
        && filters.allow("node.label", |wanted| match wanted.split_once('=') {
            Some((key, value)) => n.labels.get(key).is_some_and(|v| v == value),
            None => n.labels.contains_key(wanted),
        })
}

fn find<'a>(nodes: &'a [NodeInfo], reference: &str) -> Result<&'a NodeInfo, ApiError> {
    lookup::find(nodes, reference, "node", |n| &n.id, |n| &n.hostname)
}

pub async fn inspect(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(&engine).await?;
    let nodes = all(&engine).await?;
    Ok(Json(shape::node::node(find(&nodes, &reference)?)))
}

/// The posted `NodeSpec` against the node's current one; the changes in one `UpdateNode`.
///
/// `version` must be a number but is not compared: the API keeps no version for nodes
/// (reported as 0), so two updates from the same read both apply.
pub async fn update(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    node_state::manager(&engine).await?;
    let raw_version = query.get("version").map_or("", String::as_str);
    raw_version.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid node version '{raw_version}': strconv.ParseUint: parsing \
             \"{raw_version}\": invalid syntax"
        ))
    })?;
    let posted: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let nodes = all(&engine).await?;
    let request = shape::node::update_request(find(&nodes, &reference)?, posted)?;
    cluster_client(engine.channel.clone())
        .update_node(request)
        .await
        .map_err(swarmkit)?;
    Ok(StatusCode::OK)
}

pub async fn remove(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    node_state::manager(&engine).await?;
    let force = query.get("force").is_some_and(|v| is_true(v));
    let nodes = all(&engine).await?;
    let node = find(&nodes, &reference)?.id.clone();
    cluster_client(engine.channel.clone())
        .remove_node(RemoveNodeRequest { node, force })
        .await
        .map_err(swarmkit)?;
    Ok(StatusCode::OK)
}

/// The cluster's refusals (the last manager demoted, a node that is not down removed) as
/// dockerd passes swarmkit's on: the gRPC error's text, with its code.
fn swarmkit(status: tonic::Status) -> ApiError {
    let mut error = ApiError::from(status.clone());
    if status.code() == Code::FailedPrecondition {
        error.message = format!(
            "rpc error: code = FailedPrecondition desc = {}",
            error.message
        );
    }
    error
}
