//! `shoal node ls | inspect | update | promote | demote | rm`.

use std::fmt::Write as _;

use shoal_control::api::{
    Empty, InfoRequest, NodeInfo, RemoveNodeRequest, UpdateNodeRequest, agent_client::AgentClient,
    cluster_client::ClusterClient,
};
use tonic::transport::Channel;

use crate::{
    cli::{NodeCommand, NodeInspectArgs, NodeUpdateArgs, OutputFormat},
    client::{status_error, with_agent},
    table::{self, capitalize},
    time_format::rfc3339,
};

pub fn run(host: &str, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => ls(host, args.format),
        NodeCommand::Inspect(args) => inspect(host, args),
        NodeCommand::Update(args) => update(host, args),
        NodeCommand::Promote(args) => set_role(host, args.nodes, "manager"),
        NodeCommand::Demote(args) => set_role(host, args.nodes, "worker"),
        NodeCommand::Rm(args) => with_agent(host, async |channel| {
            let mut cluster = ClusterClient::new(channel);
            for node in args.nodes {
                let request = RemoveNodeRequest {
                    node: node.clone(),
                    force: args.force,
                };
                cluster.remove_node(request).await.map_err(status_error)?;
                println!("{node}");
            }
            Ok(())
        }),
    }
}

fn ls(host: &str, format: OutputFormat) -> anyhow::Result<()> {
    let (me, mut nodes) = with_agent(host, async |channel| {
        let me = own_id(channel.clone()).await?;
        Ok((me, list(channel).await?))
    })?;
    nodes.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let id = if n.id == me {
                format!("{} *", n.id)
            } else {
                n.id.clone()
            };
            vec![
                id,
                n.hostname.clone(),
                capitalize(&n.status),
                capitalize(&n.availability),
                capitalize(&n.manager_status),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
            &rows
        )
    );
    Ok(())
}

fn inspect(host: &str, args: NodeInspectArgs) -> anyhow::Result<()> {
    let (me, nodes) = with_agent(host, async |channel| {
        let me = own_id(channel.clone()).await?;
        Ok((me, list(channel).await?))
    })?;
    let mut found = Vec::new();
    for reference in &args.nodes {
        let wanted = if reference == "self" { &me } else { reference };
        found.push(find(&nodes, wanted)?);
    }
    if args.pretty {
        for node in found {
            print!("{}", pretty(node));
        }
    } else {
        let shaped: Vec<serde_json::Value> = found.into_iter().map(docker_shape).collect();
        println!("{}", serde_json::to_string_pretty(&shaped)?);
    }
    Ok(())
}

fn update(host: &str, args: NodeUpdateArgs) -> anyhow::Result<()> {
    let request = UpdateNodeRequest {
        node: args.node,
        availability: args.availability.unwrap_or_default(),
        labels_add: args.labels_add.into_iter().collect(),
        labels_rm: args.labels_rm,
        role: String::new(),
    };
    let node = with_agent(host, async |channel| {
        ClusterClient::new(channel)
            .update_node(request)
            .await
            .map_err(status_error)
    })?
    .into_inner();
    println!("{}", node.id);
    Ok(())
}

fn set_role(host: &str, nodes: Vec<String>, role: &str) -> anyhow::Result<()> {
    with_agent(host, async |channel| {
        let mut cluster = ClusterClient::new(channel);
        for node in nodes {
            let request = UpdateNodeRequest {
                node: node.clone(),
                role: role.to_string(),
                ..Default::default()
            };
            cluster.update_node(request).await.map_err(status_error)?;
            match role {
                "manager" => println!("Node {node} promoted to a manager in the swarm."),
                _ => println!("Manager {node} demoted in the swarm."),
            }
        }
        Ok(())
    })
}

async fn own_id(channel: Channel) -> anyhow::Result<String> {
    let info = AgentClient::new(channel)
        .info(InfoRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(info.node_id)
}

async fn list(channel: Channel) -> anyhow::Result<Vec<NodeInfo>> {
    Ok(ClusterClient::new(channel)
        .list_nodes(Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .nodes)
}

/// By ID, hostname, or unique ID prefix.
fn find<'a>(nodes: &'a [NodeInfo], reference: &str) -> anyhow::Result<&'a NodeInfo> {
    if let Some(node) = nodes
        .iter()
        .find(|n| n.id == reference || n.hostname == reference)
    {
        return Ok(node);
    }
    let matches: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [node] => Ok(node),
        [] => anyhow::bail!("No such node: {reference}"),
        _ => anyhow::bail!("node {reference} is ambiguous ({} matches)", matches.len()),
    }
}

/// The fields of `docker node inspect` that shoal has, in Docker's shape.
fn docker_shape(node: &NodeInfo) -> serde_json::Value {
    let mut shaped = serde_json::json!({
        "ID": node.id,
        "CreatedAt": rfc3339(node.created_at),
        "Spec": {
            "Labels": node.labels,
            "Role": node.role,
            "Availability": node.availability,
        },
        "Description": { "Hostname": node.hostname },
        "Status": {
            "State": node.status,
            "Addr": node.data_path_addr,
        },
    });
    if node.role == "manager" {
        shaped["ManagerStatus"] = serde_json::json!({
            "Leader": node.manager_status == "leader",
            "Reachability": if node.manager_status == "unreachable" { "unreachable" } else { "reachable" },
            "Addr": node.addr,
        });
    }
    shaped
}

fn pretty(node: &NodeInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ID:\t\t\t{}", node.id);
    if !node.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        let mut labels: Vec<_> = node.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            let _ = writeln!(out, " - {k}={v}");
        }
    }
    let _ = writeln!(out, "Hostname:\t\t{}", node.hostname);
    let _ = writeln!(out, "Joined at:\t\t{}", rfc3339(node.created_at));
    let _ = writeln!(out, "Status:");
    let _ = writeln!(out, " State:\t\t\t{}", capitalize(&node.status));
    let _ = writeln!(out, " Availability:\t\t{}", capitalize(&node.availability));
    let _ = writeln!(out, " Address:\t\t{}", node.data_path_addr);
    if node.role == "manager" {
        let _ = writeln!(out, "Manager Status:");
        let _ = writeln!(out, " Address:\t\t{}", node.addr);
        let reach = if node.manager_status == "unreachable" {
            "Unreachable"
        } else {
            "Reachable"
        };
        let _ = writeln!(out, " Raft Status:\t\t{reach}");
        let leader = if node.manager_status == "leader" {
            "Yes"
        } else {
            "No"
        };
        let _ = writeln!(out, " Leader:\t\t{leader}");
    }
    out
}
