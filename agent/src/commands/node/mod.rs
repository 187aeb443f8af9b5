//! `shoal node ls | inspect | update | promote | demote | rm`: each command's calls to the API;
//! `render` holds what they print.

pub(crate) mod render;

use shoal_control::api::{Empty, InfoRequest, NodeInfo, RemoveNodeRequest, UpdateNodeRequest};
use shoal_control::wire_limits::{agent_client, cluster_client};
use tonic::transport::Channel;

use crate::{
    cli::{NodeCommand, NodeInspectArgs, NodeUpdateArgs, OutputFormat},
    client::{status_error, with_agent},
};

pub fn run(host: &str, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => ls(host, args.format),
        NodeCommand::Inspect(args) => inspect(host, args),
        NodeCommand::Update(args) => update(host, args),
        NodeCommand::Promote(args) => set_role(host, args.nodes, "manager"),
        NodeCommand::Demote(args) => set_role(host, args.nodes, "worker"),
        NodeCommand::Rm(args) => with_agent(host, async |channel| {
            let mut cluster = cluster_client(channel);
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
    print!("{}", render::ls_table(&nodes, &me));
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
            print!("{}", render::pretty(node));
        }
    } else {
        println!("{}", render::inspect_json(&found)?);
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
        cluster_client(channel)
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
        let mut cluster = cluster_client(channel);
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
    let info = agent_client(channel)
        .info(InfoRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(info.node_id)
}

async fn list(channel: Channel) -> anyhow::Result<Vec<NodeInfo>> {
    Ok(cluster_client(channel)
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
