//! `shoal info`: the node's identity, addresses, swarm state and data path.

use std::fmt::Write as _;

use shoal_control::api::{InfoRequest, InfoResponse};
use shoal_control::wire_limits::agent_client;

use crate::{
    cli::{InfoArgs, OutputFormat},
    client,
};

pub fn run(host: &str, args: InfoArgs) -> anyhow::Result<()> {
    let info = client::with_agent(host, async |channel| {
        agent_client(channel)
            .info(InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(client::status_error)
    })?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        OutputFormat::Table => print!("{}", render(&info)),
    }
    Ok(())
}

/// Docker-style `info`: one `Key: value` a line, sections indented.
fn render(info: &InfoResponse) -> String {
    let or_none = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "Server Version: {}", info.version);
    let _ = writeln!(out, "Name: {}", info.hostname);
    let _ = writeln!(out, "NodeID: {}", info.node_id);
    let _ = writeln!(out, "Swarm: {}", info.swarm_state);
    if info.swarm_state == "active" {
        let _ = writeln!(out, " NodeID: {}", info.node_id);
        let _ = writeln!(out, " Is Manager: {}", info.is_manager);
        // Only a manager sees the swarm's members, as in Docker.
        if info.is_manager {
            let _ = writeln!(out, " ClusterID: {}", info.cluster_id);
            let _ = writeln!(out, " Managers: {}", info.managers);
            let _ = writeln!(out, " Nodes: {}", info.nodes);
        }
    } else if info.swarm_state == "locked" {
        let _ = writeln!(out, " NodeID: {}", info.node_id);
        let _ = writeln!(out, " Is Manager: {}", info.is_manager);
    }
    let _ = writeln!(out, " Listen Address: {}", info.listen_addr);
    let _ = writeln!(out, " Advertise Address: {}", or_none(&info.advertise_addr));
    let _ = writeln!(out, " Data Path Address: {}", or_none(&info.data_path_addr));
    let _ = writeln!(out, " Data Path Port: {}", info.data_path_port);
    let _ = writeln!(out, " Gossip Port: {}", info.gossip_port);
    let _ = writeln!(out, "State Dir: {}", info.state_dir);
    if let Some(dp) = &info.dataplane {
        let _ = writeln!(out, "Dataplane:");
        let _ = writeln!(
            out,
            " Underlay Interface: {}",
            or_none(&dp.underlay_interface)
        );
        let _ = writeln!(out, " XDP Attached: {}", dp.xdp_attached);
        let _ = writeln!(out, " Pinned Maps: {}", or_none(&dp.pin_dir));
        if !dp.error.is_empty() {
            let _ = writeln!(out, " Error: {}", dp.error);
        }
        for c in &dp.counters {
            let _ = writeln!(out, " {}: {} packets, {} bytes", c.hook, c.packets, c.bytes);
        }
        if !dp.flow_tables.is_empty() {
            let _ = writeln!(
                out,
                " Flow Tables (LRU: full, the least recently used goes):"
            );
        }
        for t in &dp.flow_tables {
            let memory = match t.memory_bytes {
                0 => String::new(),
                m => format!(", {:.1} MiB", m as f64 / (1024.0 * 1024.0)),
            };
            let _ = writeln!(
                out,
                "  {}: {} of {} entries{memory}",
                t.name, t.entries, t.capacity
            );
        }
    }
    out
}
