//! `GET /info`: dockerd's system information, with the Swarm section the docker CLI prints
//! (`Swarm: active`, NodeID, Is Manager, ClusterID, Managers, Nodes, Manager Addresses, and on
//! a manager the cluster as `GET /swarm` shows it, without its join tokens).
//! Containers and images are zero: shoal runs tasks as programs and keeps no images.

use axum::{Json, extract::State};
use shoal_control::{api::Empty, wire_limits::cluster_client};

use super::{Shared, errors::ApiError, node_state, shape, swarm, version::go_arch};

/// dockerd's warning for a swarm with two managers (moby `Cluster.Info`).
const TWO_MANAGERS: &str = "WARNING: Running Swarm in a two-manager configuration. This \
     configuration provides
         no fault tolerance, and poses a high risk to lose control over the cluster.
         Refer to https://docs.docker.com/engine/swarm/admin_guide/ to configure the
         Swarm for fault-tolerance.";

pub async fn info(State(engine): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let node = node_state::read(&engine).await?;
    let state = node_state::local_node_state(&node);
    let active = state == "active";
    let control = active && node.is_manager;
    // Managers know every manager's address; a worker's API does not say (left empty).
    let remote_managers: Vec<serde_json::Value> = if control {
        cluster_client(engine.channel.clone())
            .list_nodes(Empty {})
            .await?
            .into_inner()
            .nodes
            .into_iter()
            .filter(|n| n.role == "manager")
            .map(|n| serde_json::json!({ "NodeID": n.id, "Addr": n.addr }))
            .collect()
    } else {
        Vec::new()
    };
    let node_addr = node
        .advertise_addr
        .rsplit_once(':')
        .map_or(node.advertise_addr.as_str(), |(ip, _)| ip);
    let mut swarm = serde_json::json!({
        "NodeID": if active { node.node_id.as_str() } else { "" },
        "NodeAddr": if active { node_addr } else { "" },
        "LocalNodeState": state,
        "ControlAvailable": control,
        "Error": "",
        "RemoteManagers": remote_managers,
        "Nodes": if control { node.nodes } else { 0 },
        "Managers": if control { node.managers } else { 0 },
    });
    let mut warnings = Vec::new();
    if control {
        let cluster = swarm::read(&engine, &node, false).await?;
        swarm["Cluster"] = shape::swarm::swarm(&cluster);
        if node.managers == 2 {
            warnings.push(TWO_MANAGERS);
        }
    }
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut answer = serde_json::json!({
        "ID": node.node_id,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": 0,
        "Driver": "",
        "DriverStatus": [],
        "Plugins": { "Volume": ["local"], "Network": ["overlay"], "Authorization": null, "Log": [] },
        "MemoryLimit": false, "SwapLimit": false,
        "CpuCfsPeriod": false, "CpuCfsQuota": false, "CPUShares": false, "CPUSet": false,
        "PidsLimit": false, "IPv4Forwarding": true, "Debug": false,
        "NFd": 0, "OomKillDisable": false, "NGoroutines": 0,
        "SystemTime": super::shape::timestamp(shoal_control::clock::now_ms()),
        "LoggingDriver": "",
        "CgroupDriver": "none",
        "CgroupVersion": "2",
        "NEventsListener": 0,
        "KernelVersion": kernel,
        "OperatingSystem": "shoal",
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "",
        "RegistryConfig": { "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": [] },
        "NCPU": cpus,
        "MemTotal": mem_total(),
        "GenericResources": null,
        "DockerRootDir": node.state_dir,
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
    });
    let rest = serde_json::json!({
        "Name": node.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": swarm,
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": { "ID": "" },
        "RuncCommit": { "ID": "" },
        "InitCommit": { "ID": "" },
        "SecurityOptions": [],
        "Warnings": warnings,
        "GoArch": go_arch(),
    });
    if let (Some(answer), serde_json::Value::Object(rest)) = (answer.as_object_mut(), rest) {
        answer.extend(rest);
    }
    Ok(Json(answer))
}

/// Total memory in bytes, from /proc/meminfo (0 when it cannot be read).
fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
