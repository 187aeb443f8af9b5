//! `GET /tasks` (filters `id`, `name`, `service`, `node`, `desired-state`, `label`,
//! `_up-to-date`, as dockerd's: services and nodes by ID, name or ID prefix, an unknown one
//! is its 404; `label` is the task's service's labels, as swarmkit matches them, which
//! `docker stack ps` relies on) and `GET /tasks/{id}`.

use std::collections::{HashMap, HashSet};

use axum::{
    Json,
    extract::{Path, Query, State},
};
use shoal_control::{
    api::{ListTasksRequest, ServiceInfo, TaskInfo},
    wire_limits::cluster_client,
};

use super::{
    Shared, errors::ApiError, filters::QueryFilters, lookup, node_state, nodes, services, shape,
};

const KEYS: &[&str] = &[
    "_up-to-date",
    "desired-state",
    "id",
    "label",
    "name",
    "node",
    "service",
];

async fn all(engine: &Shared) -> Result<Vec<TaskInfo>, ApiError> {
    of_service(engine, "").await
}

/// The tasks of `service` (by ID; empty: of every service), as the leader lists them.
pub async fn of_service(engine: &Shared, service: &str) -> Result<Vec<TaskInfo>, ApiError> {
    let request = ListTasksRequest {
        service: service.to_string(),
        ..Default::default()
    };
    Ok(cluster_client(engine.channel.clone())
        .list_tasks(request)
        .await?
        .into_inner()
        .tasks)
}

pub async fn list(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    node_state::manager(&engine).await?;
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), KEYS)?;
    for state in filters.get("desired-state") {
        if !matches!(state.as_str(), "running" | "shutdown" | "accepted") {
            return Err(ApiError::bad_request(format!(
                "Invalid desired-state filter: '{state}'"
            )));
        }
    }
    let services = services::all(&engine).await?;
    let service_ids: HashSet<String> = filters
        .get("service")
        .iter()
        .map(|r| services::find(&services, r).map(|s| s.id.clone()))
        .collect::<Result<_, _>>()?;
    let node_ids: HashSet<String> = if filters.contains("node") {
        let all_nodes = nodes::all(&engine).await?;
        filters
            .get("node")
            .iter()
            .map(|r| {
                lookup::find(&all_nodes, r, "node", |n| &n.id, |n| &n.hostname)
                    .map(|n| n.id.clone())
            })
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    let by_id: HashMap<&str, &ServiceInfo> = services.iter().map(|s| (s.id.as_str(), s)).collect();
    let up_to_date = filters.contains("_up-to-date");
    let tasks = all(&engine).await?;
    Ok(Json(
        tasks
            .iter()
            .filter(|t| {
                let service = by_id.get(t.service_id.as_str());
                filters.allow("id", |v| t.id.starts_with(v))
                    && filters.allow("name", |v| t.name.starts_with(v))
                    && (!filters.contains("service") || service_ids.contains(&t.service_id))
                    && (!filters.contains("node") || node_ids.contains(&t.node_id))
                    && filters.allow("desired-state", |v| v == t.desired_state)
                    && (!filters.contains("label")
                        || service.is_some_and(|s| {
                            filters.labels_match(s.spec.as_ref().map_or(&[], |spec| &spec.labels))
                        }))
                    && (!up_to_date || service.is_some_and(|s| s.version == t.service_version))
            })
            .map(|t| shape::task::task(t, by_id.get(t.service_id.as_str()).copied()))
            .collect(),
    ))
}

pub async fn inspect(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(&engine).await?;
    let tasks = all(&engine).await?;
    let task = lookup::find(&tasks, &reference, "task", |t| &t.id, |_| "")?;
    let services = services::all(&engine).await?;
    let service = services.iter().find(|s| s.id == task.service_id);
    Ok(Json(shape::task::task(task, service)))
}
