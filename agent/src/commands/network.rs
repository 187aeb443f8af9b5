//! `shoal network create | ls | inspect | rm`, with Docker's columns and JSON shape.

use shoal_control::api::{
    Empty, KeyValue, LocalNetworkRequest, LocalNetworkResponse, NetworkInfo, NetworkRef,
    NetworkSpec,
};
use shoal_control::wire_limits::{agent_client, cluster_client};
use tonic::transport::Channel;

use crate::{
    cli::{NetworkCommand, OutputFormat, filter::Filters},
    client::{status_error, with_agent},
    table,
    time_format::rfc3339,
};

pub fn run(host: &str, command: NetworkCommand) -> anyhow::Result<()> {
    with_agent(host, async |channel| match command {
        NetworkCommand::Create(args) => {
            let spec = NetworkSpec {
                name: args.name,
                driver: args.driver,
                subnet: args.subnet.unwrap_or_default(),
                gateway: args.gateway.unwrap_or_default(),
                attachable: args.attachable,
                internal: args.internal,
                ingress: args.ingress,
                labels: args
                    .labels
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
                options: args
                    .options
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
            };
            let network = cluster_client(channel)
                .create_network(spec)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", network.id);
            Ok(())
        }
        NetworkCommand::Ls(args) => {
            let filters = Filters::new(&args.filters);
            let mut networks = list(channel).await?;
            networks.retain(|n| matches(n, &filters));
            networks.sort_by(|a, b| a.name.cmp(&b.name));
            if args.quiet {
                for n in &networks {
                    println!("{}", n.id.chars().take(12).collect::<String>());
                }
                return Ok(());
            }
            if args.format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&networks)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = networks
                .iter()
                .map(|n| {
                    vec![
                        n.id.chars().take(12).collect(),
                        n.name.clone(),
                        n.driver.clone(),
                        "swarm".to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
            );
            Ok(())
        }
        NetworkCommand::Inspect(args) => {
            let networks = list(channel.clone()).await?;
            let mut shaped = Vec::new();
            for reference in &args.networks {
                let network = find(&networks, reference)?;
                let local = agent_client(channel.clone())
                    .local_network(LocalNetworkRequest {
                        network_id: network.id.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                shaped.push(docker_shape(network, &local));
            }
            println!("{}", serde_json::to_string_pretty(&shaped)?);
            Ok(())
        }
        NetworkCommand::Rm(args) => {
            let mut cluster = cluster_client(channel.clone());
            for network in args.networks {
                if !confirm_ingress_removal(channel.clone(), &network).await? {
                    continue;
                }
                let request = NetworkRef {
                    network: network.clone(),
                };
                cluster
                    .remove_network(request)
                    .await
                    .map_err(status_error)?;
                println!("{network}");
            }
            Ok(())
        }
    })
}

/// Docker's question before the routing-mesh network goes, asked only of someone at a
/// terminal: a script removes it as the Engine API does, without asking.
async fn confirm_ingress_removal(channel: Channel, reference: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    let networks = list(channel).await?;
    if !find(&networks, reference).is_ok_and(|n| n.ingress) {
        return Ok(true);
    }
    print!(
        "WARNING! Before removing the routing-mesh network, make sure all the nodes in your \
         swarm run the same shoal version. Otherwise, removal may not be effective and \
         functionality of newly created ingress networks will be impaired.\n\
         Are you sure you want to continue? [y/N] "
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

async fn list(channel: Channel) -> anyhow::Result<Vec<NetworkInfo>> {
    Ok(cluster_client(channel)
        .list_networks(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .networks)
}

/// `network ls --filter`, as Docker's: `driver` exact, `id` a prefix, `name` a part of the
/// name, `label` a label (and its value), `scope` swarm (every overlay), `type` custom or
/// builtin (`ingress`).
pub(crate) fn matches(n: &NetworkInfo, filters: &Filters) -> bool {
    let kind = if n.ingress { "builtin" } else { "custom" };
    filters.allow("driver", |v| v == n.driver)
        && filters.allow("id", |v| n.id.starts_with(v))
        && filters.allow("name", |v| n.name.contains(v))
        && filters.allow_labels(&n.labels)
        && filters.allow("scope", |v| v == "swarm")
        && filters.allow("type", |v| v == kind)
}

fn find<'a>(networks: &'a [NetworkInfo], reference: &str) -> anyhow::Result<&'a NetworkInfo> {
    if let Some(n) = networks
        .iter()
        .find(|n| n.id == reference || n.name == reference)
    {
        return Ok(n);
    }
    let matches: Vec<&NetworkInfo> = networks
        .iter()
        .filter(|n| n.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [n] => Ok(n),
        [] => anyhow::bail!("network {reference} not found"),
        _ => anyhow::bail!("network {reference} is ambiguous"),
    }
}

/// `docker network inspect`'s shape, with this node's endpoints as Containers (keyed by task
/// ID) and the network DB members it sees as Peers.
pub(crate) fn docker_shape(n: &NetworkInfo, local: &LocalNetworkResponse) -> serde_json::Value {
    let containers: serde_json::Map<String, serde_json::Value> = local
        .endpoints
        .iter()
        .map(|e| {
            let value = serde_json::json!({
                "Name": e.task_name,
                "EndpointID": format!("{}-{}", e.task_id, &n.id[..n.id.len().min(12)]),
                "MacAddress": e.mac,
                "IPv4Address": e.addr,
                "IPv6Address": "",
            });
            (e.task_id.clone(), value)
        })
        .collect();
    let peers: Vec<serde_json::Value> = local
        .peers
        .iter()
        .map(|p| serde_json::json!({ "Name": p.node_id, "IP": p.addr }))
        .collect();
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created_at_ms / 1000),
        "Scope": "swarm",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [{ "Subnet": n.subnet, "Gateway": n.gateway }],
        },
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": n.ingress,
        "Containers": containers,
        "Options": options(n),
        "Labels": n
            .labels
            .iter()
            .map(|kv| (kv.key.clone(), serde_json::Value::from(kv.value.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "Peers": peers,
    })
}

/// `Options` as Docker shows a swarm overlay's: the VNI (`vxlanid_list`), and the options it
/// was created with.
fn options(n: &NetworkInfo) -> serde_json::Map<String, serde_json::Value> {
    let mut options: serde_json::Map<String, serde_json::Value> = n
        .options
        .iter()
        .map(|kv| (kv.key.clone(), serde_json::Value::from(kv.value.clone())))
        .collect();
    options.insert(
        "com.docker.network.driver.overlay.vxlanid_list".into(),
        n.vni.to_string().into(),
    );
    options
}
