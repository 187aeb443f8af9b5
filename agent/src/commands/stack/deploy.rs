//! `shoal stack deploy`: the files are read and checked whole, then the stack's networks,
//! secrets, configs and services are created or updated, in that order, with Docker's lines
//! ("Creating network web_default", "Creating service web_api", "Updating service web_api
//! (id: ...)").
//!
//! Nothing is half created: a file with an error is refused before the first call, and when a
//! call fails midway, what this deploy created is removed again (newest first). Updates of
//! services that existed are not undone, as in Docker; a service whose spec did not change is
//! not touched by the leader (no task restarts).

use std::collections::HashMap;

use shoal_control::{
    api::{Empty, KeyValue, NetworkRef, ServiceRef, UpdateServiceRequest},
    wire_limits::cluster_client,
};
use tonic::transport::Channel;
use tracing::warn;

use super::{
    convert::{self, DIGEST_LABEL, Plan, PlannedFile, PlannedNetwork},
    objects::{self, ObjectKind},
    services_of,
};
use crate::{
    cli::stack::StackDeployArgs,
    client::status_error,
    commands::service::converge::{Expect, converge},
};

pub(super) async fn run(channel: Channel, args: StackDeployArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = shoal_compose::load(&args.compose_files, &env)?;
    for warning in &loaded.warnings {
        eprintln!("{warning}\n");
    }
    let plan = convert::plan(&loaded.stack, &args.stack)?;
    for note in &plan.notes {
        eprintln!("{note}");
    }
    check_existing(channel.clone(), &plan).await?;

    let mut created = Created::default();
    let ids = match apply(channel.clone(), &plan, &mut created).await {
        Ok(ids) => ids,
        Err(e) => {
            created.undo(channel).await;
            return Err(e);
        }
    };
    if args.prune {
        prune(channel.clone(), &args.stack, &plan).await?;
    }
    if !args.detach {
        for id in ids {
            converge(channel.clone(), &id, Expect::Forward).await?;
        }
    }
    Ok(())
}

/// Before anything is created: external networks, secrets and configs exist, and the stack's
/// own secrets and configs that exist were created from the same data.
async fn check_existing(channel: Channel, plan: &Plan) -> anyhow::Result<()> {
    let networks = cluster_client(channel.clone())
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    for network in &plan.networks {
        if let PlannedNetwork::External(name) = network
            && !networks.iter().any(|n| n.name == *name || n.id == *name)
        {
            anyhow::bail!(
                "network {name:?} is declared as external, but could not be found. You need to \
                 create a swarm-scoped network before the stack is deployed"
            );
        }
    }
    for (kind, planned) in [
        (ObjectKind::Secret, &plan.secrets),
        (ObjectKind::Config, &plan.configs),
    ] {
        let existing = objects::existing(channel.clone(), kind).await?;
        let kind = kind.as_str();
        for file in planned {
            match file {
                PlannedFile::External(name) if !existing.contains_key(name) => {
                    anyhow::bail!("{kind} {name:?} is declared as external, but could not be found")
                }
                PlannedFile::Own { name, labels, .. } => {
                    let digest = |labels: &[KeyValue]| {
                        labels
                            .iter()
                            .find(|l| l.key == DIGEST_LABEL)
                            .map(|l| l.value.clone())
                    };
                    if let Some(had) = existing.get(name).and_then(|l| digest(l))
                        && Some(had) != digest(labels)
                    {
                        anyhow::bail!(
                            "{kind} {name} exists with other data: a {kind} cannot change (only \
                             its labels could); give it another name in the file, or remove the \
                             stack first"
                        );
                    }
                }
                PlannedFile::External(_) => {}
            }
        }
    }
    Ok(())
}

/// What this deploy created, to remove again if a later step fails.
#[derive(Default)]
struct Created {
    networks: Vec<String>,
    files: Vec<(ObjectKind, String)>,
    services: Vec<String>,
}

impl Created {
    async fn undo(self, channel: Channel) {
        let mut cluster = cluster_client(channel.clone());
        for service in self.services.into_iter().rev() {
            let request = ServiceRef {
                service: service.clone(),
            };
            if let Err(e) = cluster.remove_service(request).await {
                warn!(%service, cause = %e.message(), "undoing the deploy: service not removed");
            }
        }
        for (kind, name) in self.files.into_iter().rev() {
            if let Err(e) = objects::remove(channel.clone(), kind, &name).await {
                warn!(%name, cause = %e, "undoing the deploy: not removed");
            }
        }
        for network in self.networks.into_iter().rev() {
            let request = NetworkRef {
                network: network.clone(),
            };
            if let Err(e) = cluster.remove_network(request).await {
                warn!(%network, cause = %e.message(), "undoing the deploy: network not removed");
            }
        }
    }
}

/// Creates what is missing and updates the services that exist; the IDs of the services.
async fn apply(
    channel: Channel,
    plan: &Plan,
    created: &mut Created,
) -> anyhow::Result<Vec<String>> {
    let mut cluster = cluster_client(channel.clone());
    let networks = cluster
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    for network in &plan.networks {
        let PlannedNetwork::Own(spec) = network else {
            continue;
        };
        if networks.iter().any(|n| n.name == spec.name) {
            continue;
        }
        println!("Creating network {}", spec.name);
        cluster
            .create_network(spec.clone())
            .await
            .map_err(status_error)?;
        created.networks.push(spec.name.clone());
    }
    for (kind, planned) in [
        (ObjectKind::Secret, &plan.secrets),
        (ObjectKind::Config, &plan.configs),
    ] {
        let existing = objects::existing(channel.clone(), kind).await?;
        for file in planned {
            let PlannedFile::Own { name, data, labels } = file else {
                continue;
            };
            // Checked to hold the same data (`check_existing`): the one to use.
            if existing.contains_key(name) {
                continue;
            }
            println!("Creating {} {name}", kind.as_str());
            objects::create(channel.clone(), kind, name, data, labels).await?;
            created.files.push((kind, name.clone()));
        }
    }
    let existing = cluster
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services;
    let mut ids = Vec::new();
    for spec in &plan.services {
        let current = existing
            .iter()
            .find(|s| s.spec.as_ref().is_some_and(|c| c.name == spec.name));
        let info = match current {
            Some(current) => {
                println!("Updating service {} (id: {})", spec.name, current.id);
                let request = UpdateServiceRequest {
                    service: current.id.clone(),
                    spec: Some(spec.clone()),
                    rollback: false,
                };
                cluster
                    .update_service(request)
                    .await
                    .map_err(status_error)?
                    .into_inner()
            }
            None => {
                println!("Creating service {}", spec.name);
                let info = cluster
                    .create_service(spec.clone())
                    .await
                    .map_err(status_error)?
                    .into_inner();
                created.services.push(info.id.clone());
                info
            }
        };
        ids.push(info.id);
    }
    Ok(ids)
}

/// Removes the stack's services that the files no longer name.
async fn prune(channel: Channel, namespace: &str, plan: &Plan) -> anyhow::Result<()> {
    let mut cluster = cluster_client(channel.clone());
    for service in services_of(channel, namespace).await? {
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        if plan.services.iter().any(|s| s.name == name) {
            continue;
        }
        println!("Removing service {name}");
        cluster
            .remove_service(ServiceRef {
                service: service.id,
            })
            .await
            .map_err(status_error)?;
    }
    Ok(())
}
