//! `/networks`: list (filters as `network ls`), inspect (this node's endpoints as
//! `Containers`), create (overlay only; IPAM's first subnet and gateway, `Internal`,
//! `Attachable`, `Ingress`, `Labels`, `Options`; what shoal does not do is named in
//! `Warning`) and delete. Any swarm member may list and inspect, as in shoal's own API.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use shoal_control::{
    api::{
        Empty, KeyValue, LocalNetworkRequest, LocalNetworkResponse, NetworkInfo, NetworkRef,
        NetworkSpec,
    },
    wire_limits::{agent_client, cluster_client},
};

use super::{
    Shared, errors::ApiError, filters::QueryFilters, lookup, node_state, shape::json::Reader,
};
use crate::{cli::filter::NETWORK_KEYS, commands::network};

async fn all(engine: &Shared) -> Result<Vec<NetworkInfo>, ApiError> {
    Ok(cluster_client(engine.channel.clone())
        .list_networks(Empty {})
        .await?
        .into_inner()
        .networks)
}

fn find<'a>(networks: &'a [NetworkInfo], reference: &str) -> Result<&'a NetworkInfo, ApiError> {
    lookup::find(networks, reference, "network", |n| &n.id, |n| &n.name)
}

pub async fn list(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), NETWORK_KEYS)?;
    let matching = filters.to_cli();
    let none = LocalNetworkResponse::default();
    Ok(Json(
        all(&engine)
            .await?
            .iter()
            // The CLI's matcher takes any of the labels; dockerd wants all of them.
            .filter(|n| network::matches(n, &matching) && filters.labels_match(&n.labels))
            .map(|n| network::docker_shape(n, &none))
            .collect(),
    ))
}

pub async fn inspect(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let networks = all(&engine).await?;
    let n = find(&networks, &reference)?;
    let local = agent_client(engine.channel.clone())
        .local_network(LocalNetworkRequest {
            network_id: n.id.clone(),
        })
        .await?
        .into_inner();
    Ok(Json(network::docker_shape(n, &local)))
}

pub async fn create(
    State(engine): State<Shared>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    node_state::manager(&engine).await?;
    let body = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let (spec, warnings) = network_spec(body)?;
    let created = cluster_client(engine.channel.clone())
        .create_network(spec)
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": created.id, "Warning": warnings.join("; ") })),
    ))
}

pub async fn remove(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
) -> Result<StatusCode, ApiError> {
    node_state::manager(&engine).await?;
    cluster_client(engine.channel.clone())
        .remove_network(NetworkRef { network: reference })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Docker's `NetworkCreateRequest` as the API's `NetworkSpec`.
fn network_spec(body: serde_json::Value) -> Result<(NetworkSpec, Vec<String>), ApiError> {
    let mut warnings = Vec::new();
    let mut r = Reader::new("", body)?;
    let name = r.string("Name")?;
    if name.is_empty() {
        return Err(ApiError::bad_request("network name must be provided"));
    }
    let driver = match r.string("Driver")?.as_str() {
        "" | "overlay" => "overlay".to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "network driver \"{other}\" is not available: shoal's networks are swarm-scoped \
                 overlays (-d overlay)"
            )));
        }
    };
    // The routing-mesh network (`--ingress`); the swarm refuses a second one.
    let ingress = r.bool("Ingress")?;
    let mut ipam = r.object("IPAM")?;
    ipam.allow("Driver", &["", "default"]);
    let mut configs = ipam.objects("Config")?.into_iter();
    let (subnet, gateway) = match configs.next() {
        Some(mut first) => {
            let pair = (first.string("Subnet")?, first.string("Gateway")?);
            first.rest(&mut warnings);
            pair
        }
        None => (String::new(), String::new()),
    };
    if configs.next().is_some() {
        warnings
            .push("IPAM.Config: shoal uses the first subnet only; the others were ignored".into());
    }
    ipam.rest(&mut warnings);
    let spec = NetworkSpec {
        name,
        driver,
        subnet,
        gateway,
        attachable: r.bool("Attachable")?,
        internal: r.bool("Internal")?,
        ingress,
        labels: r
            .string_map("Labels")?
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        // Driver options (`--opt`): kept; the leader checks the MTU.
        options: r
            .string_map("Options")?
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
    };
    // Fields of the request itself rather than of the network.
    for key in ["CheckDuplicate", "Scope"] {
        r.value(key);
    }
    r.rest(&mut warnings);
    Ok((spec, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_clis_overlay_request_reads() {
        let (spec, warnings) = network_spec(serde_json::json!({
            "Name": "backend", "Driver": "overlay", "Scope": "", "EnableIPv6": false,
            "IPAM": { "Driver": "default", "Options": {}, "Config": [{ "Subnet": "10.9.0.0/24" }] },
            "Internal": false, "Attachable": true, "Ingress": false, "ConfigOnly": false,
            "Options": {}, "Labels": { "a": "b" },
        }))
        .unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(
            (spec.driver.as_str(), spec.subnet.as_str()),
            ("overlay", "10.9.0.0/24")
        );
        assert!(spec.attachable);
        assert!(spec.options.is_empty());
        let (spec, warnings) = network_spec(serde_json::json!({
            "Name": "small", "Driver": "overlay",
            "Options": { "com.docker.network.driver.mtu": "1400" },
        }))
        .unwrap();
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(
            spec.options,
            [KeyValue {
                key: "com.docker.network.driver.mtu".into(),
                value: "1400".into()
            }]
        );
        let bridge = network_spec(serde_json::json!({ "Name": "b", "Driver": "bridge" }));
        assert!(
            bridge
                .unwrap_err()
                .message
                .contains("\"bridge\" is not available")
        );
        let (_, warnings) =
            network_spec(serde_json::json!({ "Name": "v6", "EnableIPv6": true })).unwrap();
        assert_eq!(
            warnings,
            ["EnableIPv6 is not supported by shoal and was ignored"]
        );
    }
}
