//! `/services`: list (filters `id`, `label`, `mode`, `name`; `status=true` for the running
//! and desired task counts), inspect, create, update (`version=` as `Version.Index`,
//! `rollback=previous`) and delete, as dockerd answers them. A spec is read by
//! `shape::service_in` (whose warnings go back in `Warnings`), its program checked by
//! `shape::program`, and the rest is the same gRPC call the `shoal` CLI makes.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use shoal_control::{
    api::{Empty, ServiceInfo, ServiceRef, ServiceSpec, UpdateServiceRequest},
    wire_limits::cluster_client,
};

use super::{
    Shared,
    errors::ApiError,
    filters::QueryFilters,
    lookup, node_state,
    shape::{program, service_in, service_out},
};
use crate::{cli::filter::SERVICE_KEYS, commands::service::render};

/// dockerd's answer (swarmkit's store error, passed through) when `version` is not the
/// service's current one.
const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

pub async fn all(engine: &Shared) -> Result<Vec<ServiceInfo>, ApiError> {
    Ok(cluster_client(engine.channel.clone())
        .list_services(Empty {})
        .await?
        .into_inner()
        .services)
}

pub fn find<'a>(services: &'a [ServiceInfo], reference: &str) -> Result<&'a ServiceInfo, ApiError> {
    lookup::find(services, reference, "service", |s| &s.id, render::name_of)
}

pub async fn list(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    node_state::manager(&engine).await?;
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), SERVICE_KEYS)?;
    for mode in filters.get("mode") {
        if mode != "replicated" && mode != "global" {
            return Err(ApiError::bad_request(format!(
                "Invalid filter: 'mode'='{mode}'"
            )));
        }
    }
    let with_status = query.get("status").is_some_and(|s| is_true(s));
    let matching = filters.to_cli();
    Ok(Json(
        all(&engine)
            .await?
            .iter()
            // The CLI's matcher takes any of the labels; dockerd wants all of them.
            .filter(|s| {
                render::matches(s, &matching)
                    && filters.labels_match(s.spec.as_ref().map_or(&[], |spec| &spec.labels))
            })
            .map(|s| service_out::service(s, with_status))
            .collect(),
    ))
}

pub async fn inspect(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(&engine).await?;
    let services = all(&engine).await?;
    Ok(Json(service_out::service(
        find(&services, &reference)?,
        false,
    )))
}

pub async fn create(
    State(engine): State<Shared>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    node_state::manager(&engine).await?;
    let converted = service_in::service_spec(parse_body(&body)?)?;
    check_program(&converted.spec)?;
    let created = cluster_client(engine.channel.clone())
        .create_service(converted.spec)
        .await?
        .into_inner();
    let answer =
        serde_json::json!({ "ID": created.id, "Warnings": warnings_field(converted.warnings) });
    Ok((StatusCode::CREATED, Json(answer)))
}

pub async fn update(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(&engine).await?;
    let raw_version = query.get("version").map_or("", String::as_str);
    let version: u64 = raw_version.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid service version '{raw_version}': strconv.ParseUint: parsing \
             \"{raw_version}\": invalid syntax"
        ))
    })?;
    let services = all(&engine).await?;
    let current = find(&services, &reference)?;
    // Checked here against the version just read: the update call itself carries no
    // expected version yet, so two writers racing within one round trip both pass.
    if current.version != version {
        return Err(ApiError::internal(OUT_OF_SEQUENCE));
    }
    let rollback = match query.get("rollback").map(String::as_str) {
        None | Some("") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unrecognized rollback option {other}"
            )));
        }
    };
    let (spec, warnings) = if rollback {
        (None, Vec::new())
    } else {
        let converted = service_in::service_spec(parse_body(&body)?)?;
        if converted.spec.name != render::name_of(current) {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "rpc error: code = Unimplemented desc = renaming services is not supported",
            ));
        }
        check_program(&converted.spec)?;
        (Some(converted.spec), converted.warnings)
    };
    cluster_client(engine.channel.clone())
        .update_service(UpdateServiceRequest {
            service: current.id.clone(),
            spec,
            rollback,
        })
        .await?;
    Ok(Json(
        serde_json::json!({ "Warnings": warnings_field(warnings) }),
    ))
}

/// dockerd's `Warnings` (swagger's `json:"Warnings"`, no omitempty): null when there are none.
/// docker-py's `Service.update()` returns this body, which its callers test for truth.
fn warnings_field(warnings: Vec<String>) -> serde_json::Value {
    if warnings.is_empty() {
        serde_json::Value::Null
    } else {
        warnings.into()
    }
}

pub async fn remove(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<StatusCode, ApiError> {
    node_state::manager(&engine).await?;
    cluster_client(engine.channel.clone())
        .remove_service(ServiceRef { service: reference })
        .await?;
    Ok(StatusCode::OK)
}

fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// The program the spec runs (its `Command`'s first word, else its `Image`).
fn check_program(spec: &ServiceSpec) -> Result<(), ApiError> {
    let path = spec
        .env
        .iter()
        .find(|kv| kv.key == "PATH")
        .map(|kv| kv.value.as_str());
    program::check(spec.command.first().map_or("", String::as_str), path)
}

/// Go's `strconv.ParseBool` truths, which dockerd's query flags use.
pub fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}
