//! `GET /nodes` (filters `id`, `name`, `role`, `membership`, `label`, `node.label`, as
//! dockerd's) and `GET /nodes/{id}`.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use shoal_control::{
    api::{Empty, NodeInfo},
    wire_limits::cluster_client,
};

use super::{Shared, errors::ApiError, filters::QueryFilters, lookup, node_state, shape};

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

pub async fn inspect(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(&engine).await?;
    let nodes = all(&engine).await?;
    let node = lookup::find(&nodes, &reference, "node", |n| &n.id, |n| &n.hostname)?;
    Ok(Json(shape::node::node(node)))
}
