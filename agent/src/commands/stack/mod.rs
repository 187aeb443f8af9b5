//! `shoal stack deploy | ls | services | ps | rm`: compose files deployed as Docker deploys them.
//! Like Docker's, a stack lives in the CLI: the cluster knows services, networks, secrets and
//! configs, each labelled `com.docker.stack.namespace=STACK`; a stack is what carries its label.
//!
//! # Layout
//! - `convert`: a loaded compose file as the API objects to ask for (pure).
//! - `deploy`: creating and updating them, and undoing a deploy that failed midway.
//! - `objects`: the secret and config calls, one interface for both.
//! - `list`: `ls`, `services` and `ps`; `remove`: `rm`.

pub mod convert;
mod deploy;
mod list;
mod objects;
mod remove;

use shoal_control::api::{Empty, KeyValue, NetworkInfo, ServiceInfo};
use shoal_control::wire_limits::cluster_client;
use tonic::transport::Channel;

use self::convert::NAMESPACE_LABEL;
use crate::{
    cli::stack::StackCommand,
    client::{status_error, with_agent},
};

pub fn run(host: &str, command: StackCommand) -> anyhow::Result<()> {
    with_agent(host, async |channel| match command {
        StackCommand::Deploy(args) => deploy::run(channel, args).await,
        StackCommand::Ls(args) => list::stacks(channel, args.format).await,
        StackCommand::Services(args) => list::services(channel, &args.stack, args.format).await,
        StackCommand::Ps(args) => list::tasks(channel, &args.stack, args.format).await,
        StackCommand::Rm(args) => remove::run(channel, &args.stacks).await,
    })
}

/// The stack a service belongs to, by its label.
fn stack_of_service(service: &ServiceInfo) -> Option<&str> {
    namespace_of(&service.spec.as_ref()?.labels)
}

/// The stack label's value among `labels`.
fn namespace_of(labels: &[KeyValue]) -> Option<&str> {
    labels
        .iter()
        .find(|l| l.key == NAMESPACE_LABEL)
        .map(|l| l.value.as_str())
}

/// The services of stack `namespace`.
async fn services_of(channel: Channel, namespace: &str) -> anyhow::Result<Vec<ServiceInfo>> {
    let all = cluster_client(channel)
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services;
    Ok(all
        .into_iter()
        .filter(|s| stack_of_service(s) == Some(namespace))
        .collect())
}

/// The networks of stack `namespace`.
async fn networks_of(channel: Channel, namespace: &str) -> anyhow::Result<Vec<NetworkInfo>> {
    let all = cluster_client(channel)
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks;
    Ok(all
        .into_iter()
        .filter(|n| namespace_of(&n.labels) == Some(namespace))
        .collect())
}
