//! `stack ls`, `stack services` and `stack ps`, with the tables of their `service`
//! counterparts.

use std::collections::BTreeMap;

use shoal_control::{
    api::{Empty, ListTasksRequest},
    clock::now_ms,
    wire_limits::cluster_client,
};
use tonic::transport::Channel;

use super::{services_of, stack_of_service};
use crate::{
    cli::OutputFormat,
    client::status_error,
    commands::service::render::{ls_table, name_of, ps_table},
};

/// `stack ls`: each stack and how many services it has (Docker's NAME SERVICES).
pub(super) async fn stacks(channel: Channel, format: OutputFormat) -> anyhow::Result<()> {
    let services = cluster_client(channel)
        .list_services(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .services;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for service in &services {
        if let Some(stack) = stack_of_service(service) {
            *counts.entry(stack).or_default() += 1;
        }
    }
    if format == OutputFormat::Json {
        for (name, services) in &counts {
            println!(
                "{}",
                serde_json::json!({ "Name": name, "Services": services.to_string() })
            );
        }
        return Ok(());
    }
    print!("{}", stacks_table(&counts));
    Ok(())
}

fn stacks_table(counts: &BTreeMap<&str, usize>) -> String {
    let width = counts.keys().map(|n| n.len()).max().unwrap_or(0).max(4) + 3;
    let mut out = format!("{:width$}SERVICES\n", "NAME");
    for (name, services) in counts {
        out.push_str(&format!("{name:width$}{services}\n"));
    }
    out
}

/// `stack services STACK`.
pub(super) async fn services(
    channel: Channel,
    namespace: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut services = services_of(channel, namespace).await?;
    if services.is_empty() {
        anyhow::bail!("Nothing found in stack: {namespace}");
    }
    services.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    print!("{}", ls_table(&services));
    Ok(())
}

/// `stack ps STACK`: the tasks of every service of the stack.
pub(super) async fn tasks(
    channel: Channel,
    namespace: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let services = services_of(channel.clone(), namespace).await?;
    if services.is_empty() {
        anyhow::bail!("Nothing found in stack: {namespace}");
    }
    let mut cluster = cluster_client(channel);
    let mut tasks = Vec::new();
    for service in &services {
        let request = ListTasksRequest {
            service: service.id.clone(),
            node: String::new(),
        };
        tasks.extend(
            cluster
                .list_tasks(request)
                .await
                .map_err(status_error)?
                .into_inner()
                .tasks,
        );
    }
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    print!("{}", ps_table(&tasks, now_ms()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_table_has_dockers_columns() {
        let counts = BTreeMap::from([("web", 3), ("monitoring", 12)]);
        assert_eq!(
            stacks_table(&counts),
            "NAME         SERVICES\nmonitoring   12\nweb          3\n"
        );
    }
}
