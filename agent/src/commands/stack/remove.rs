//! `stack rm`: a stack's services first (their tasks leave the networks), then its networks,
//! configs and secrets; nothing without the stack's label is touched.

use shoal_control::{
    api::{NetworkRef, ServiceRef},
    wire_limits::cluster_client,
};
use tonic::transport::Channel;

use super::{
    networks_of,
    objects::{self, ObjectKind},
    services_of,
};
use crate::client::status_error;

pub(super) async fn run(channel: Channel, stacks: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    for namespace in stacks {
        if let Err(e) = remove(channel.clone(), namespace).await {
            eprintln!("Failed to remove stack {namespace}: {e}");
            failed = true;
        }
    }
    if failed {
        anyhow::bail!("some stacks were not removed completely");
    }
    Ok(())
}

async fn remove(channel: Channel, namespace: &str) -> anyhow::Result<()> {
    let services = services_of(channel.clone(), namespace).await?;
    let networks = networks_of(channel.clone(), namespace).await?;
    let secrets = objects::of_stack(channel.clone(), ObjectKind::Secret, namespace).await?;
    let configs = objects::of_stack(channel.clone(), ObjectKind::Config, namespace).await?;
    if services.is_empty() && networks.is_empty() && secrets.is_empty() && configs.is_empty() {
        println!("Nothing found in stack: {namespace}");
        return Ok(());
    }
    let mut cluster = cluster_client(channel.clone());
    for service in services {
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        println!("Removing service {name}");
        cluster
            .remove_service(ServiceRef {
                service: service.id,
            })
            .await
            .map_err(status_error)?;
    }
    for (kind, names) in [(ObjectKind::Config, configs), (ObjectKind::Secret, secrets)] {
        for name in names {
            println!("Removing {} {name}", kind.as_str());
            objects::remove(channel.clone(), kind, &name).await?;
        }
    }
    for network in networks {
        println!("Removing network {}", network.name);
        // Its last tasks may still be leaving it: the leader refuses a network in use.
        remove_network_when_free(&mut cluster, &network.id).await?;
    }
    Ok(())
}

async fn remove_network_when_free(
    cluster: &mut shoal_control::api::cluster_client::ClusterClient<Channel>,
    id: &str,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let request = NetworkRef {
            network: id.to_string(),
        };
        match cluster.remove_network(request).await {
            Ok(_) => return Ok(()),
            Err(status)
                if status.message().contains("in use") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Err(status) => return Err(status_error(status)),
        }
    }
}
