//! Finding a node, service, network, secret or config by what the user typed: an ID, a name,
//! or a unique ID prefix, as Docker does.

use super::error::Error;
use crate::cluster::{
    ClusterState, NodeRecord, Service,
    network::Network,
    objects::{FileObject, ObjectKind},
};

/// Finds a node by ID, hostname, or unique ID prefix, as Docker does.
pub fn resolve_node<'a>(state: &'a ClusterState, reference: &str) -> Result<&'a NodeRecord, Error> {
    if reference.is_empty() {
        return Err(Error::invalid("a node ID or hostname is required"));
    }
    if let Some(node) = state.nodes.get(reference) {
        return Ok(node);
    }
    let by_name: Vec<&NodeRecord> = state
        .nodes
        .values()
        .filter(|n| n.hostname == reference)
        .collect();
    let matches = if by_name.is_empty() {
        state
            .nodes
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [node] => Ok(node),
        [] => Err(Error::not_found(format!("node {reference} not found"))),
        _ => Err(Error::refused(format!(
            "node {reference} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// Finds a service by ID, name, or unique ID prefix.
pub fn resolve_service<'a>(state: &'a ClusterState, reference: &str) -> Result<&'a Service, Error> {
    if let Some(service) = state.services.get(reference) {
        return Ok(service);
    }
    if let Some(service) = state.services.named(reference) {
        return Ok(service);
    }
    // The IDs that start with `reference` are together in ID order.
    let matches: Vec<&Service> = state
        .services
        .range(reference.to_string()..)
        .take_while(|(id, _)| !reference.is_empty() && id.starts_with(reference))
        .map(|(_, s)| s)
        .collect();
    match matches.as_slice() {
        [service] => Ok(service),
        [] => Err(Error::not_found(format!("service {reference} not found"))),
        _ => Err(Error::refused(format!(
            "service {reference} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// Finds a network by ID, name, or unique ID prefix.
pub fn resolve_network<'a>(state: &'a ClusterState, reference: &str) -> Result<&'a Network, Error> {
    if let Some(n) = state.networks.get(reference) {
        return Ok(n);
    }
    if let Some(n) = state.networks.values().find(|n| n.name == reference) {
        return Ok(n);
    }
    let matches: Vec<&Network> = state
        .networks
        .values()
        .filter(|n| !reference.is_empty() && n.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [n] => Ok(n),
        [] => Err(Error::not_found(format!("network {reference} not found"))),
        _ => Err(Error::refused(format!("network {reference} is ambiguous"))),
    }
}

/// Finds a secret or config by ID, name, or unique ID prefix, in Docker's words.
pub fn resolve_object<'a>(
    state: &'a ClusterState,
    kind: ObjectKind,
    reference: &str,
) -> Result<&'a FileObject, Error> {
    let objects = state.objects(kind);
    let what = kind.as_str();
    if let Some(o) = objects.get(reference) {
        return Ok(o);
    }
    if let Some(o) = objects.values().find(|o| o.name == reference) {
        return Ok(o);
    }
    let matches: Vec<&FileObject> = objects
        .values()
        .filter(|o| !reference.is_empty() && o.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [o] => Ok(o),
        [] => Err(Error::not_found(format!("{what} {reference} not found"))),
        _ => Err(Error::refused(format!(
            "{what} {reference} is ambiguous ({} matches found)",
            matches.len()
        ))),
    }
}
