//! The cluster API calls the service commands and the convergence loop share: reading
//! services and tasks, resolving what the user typed, and sending an update.

use anyhow::bail;
use shoal_control::api::{
    Empty, ListTasksRequest, ServiceInfo, ServiceSpec, TaskInfo, UpdateServiceRequest,
};
use shoal_control::wire_limits::cluster_client;
use tonic::transport::Channel;

use crate::client::status_error;

/// The IDs of networks given by name, ID or ID prefix (the spec keeps IDs).
pub(super) async fn network_ids(
    channel: Channel,
    references: &[String],
) -> anyhow::Result<Vec<String>> {
    let networks = cluster_client(channel)
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    references
        .iter()
        .map(|r| {
            networks
                .iter()
                .find(|n| n.name == *r || n.id == *r)
                .or_else(|| networks.iter().find(|n| n.id.starts_with(r.as_str())))
                .map(|n| n.id.clone())
                .ok_or_else(|| anyhow::anyhow!("network {r} not found"))
        })
        .collect()
}

/// Sends a new spec for `service`, or (`rollback`) asks for its previous one.
pub(super) async fn update(
    channel: Channel,
    service: &str,
    spec: Option<ServiceSpec>,
    rollback: bool,
) -> anyhow::Result<ServiceInfo> {
    let request = UpdateServiceRequest {
        service: service.to_string(),
        spec,
        rollback,
    };
    Ok(cluster_client(channel)
        .update_service(request)
        .await
        .map_err(status_error)?
        .into_inner())
}

pub(super) async fn services(channel: Channel) -> anyhow::Result<Vec<ServiceInfo>> {
    Ok(cluster_client(channel)
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services)
}

/// A service by ID, name or unique ID prefix.
pub(super) async fn current(channel: Channel, reference: &str) -> anyhow::Result<ServiceInfo> {
    let all = services(channel).await?;
    let name = |s: &ServiceInfo| s.spec.as_ref().map(|x| x.name.clone()).unwrap_or_default();
    if let Some(s) = all
        .iter()
        .find(|s| s.id == reference || name(s) == reference)
    {
        return Ok(s.clone());
    }
    let matches: Vec<&ServiceInfo> = all.iter().filter(|s| s.id.starts_with(reference)).collect();
    match matches.as_slice() {
        [s] => Ok((*s).clone()),
        [] => bail!("service {reference} not found"),
        _ => bail!("service {reference} is ambiguous"),
    }
}

/// Every task of `service`, history included, newest first per slot.
pub(super) async fn tasks(channel: Channel, service: &str) -> anyhow::Result<Vec<TaskInfo>> {
    let request = ListTasksRequest {
        service: service.to_string(),
        node: String::new(),
    };
    Ok(cluster_client(channel)
        .list_tasks(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks)
}
