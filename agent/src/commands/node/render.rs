//! What the node commands print, as pure functions of API messages: the `ls` table,
//! `inspect`'s Docker-shaped JSON and its `--pretty` text. The tests below freeze them.

use std::fmt::Write as _;

use shoal_control::api::NodeInfo;

use crate::{
    table::{self, capitalize},
    time_format::rfc3339,
};

/// `node ls`: ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS, in the given order; the node
/// whose ID is `me` (the one the CLI talks to) is marked `*`, as Docker does.
pub(super) fn ls_table(nodes: &[NodeInfo], me: &str) -> String {
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
    table::render(
        &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
        &rows,
    )
}

/// `node inspect`: a JSON array of the nodes in Docker's shape.
pub(super) fn inspect_json(nodes: &[&NodeInfo]) -> serde_json::Result<String> {
    let shaped: Vec<serde_json::Value> = nodes.iter().copied().map(docker_shape).collect();
    serde_json::to_string_pretty(&shaped)
}

/// The fields of `docker node inspect` that shoal has, in Docker's shape.
pub(crate) fn docker_shape(node: &NodeInfo) -> serde_json::Value {
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
    if node.nano_cpus > 0 || node.memory_bytes > 0 {
        shaped["Description"]["Resources"] = serde_json::json!({
            "NanoCPUs": node.nano_cpus,
            "MemoryBytes": node.memory_bytes,
        });
    }
    if node.role == "manager" {
        shaped["ManagerStatus"] = serde_json::json!({
            "Leader": node.manager_status == "leader",
            "Reachability": if node.manager_status == "unreachable" { "unreachable" } else { "reachable" },
            "Addr": node.addr,
        });
    }
    shaped
}

/// `node inspect --pretty`: Docker's human-readable layout, tab-aligned.
pub(super) fn pretty(node: &NodeInfo) -> String {
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
    if node.nano_cpus > 0 || node.memory_bytes > 0 {
        let _ = writeln!(out, "Resources:");
        let _ = writeln!(out, " CPUs:\t\t\t{}", node.nano_cpus / 1_000_000_000);
        let _ = writeln!(
            out,
            " Memory:\t\t{}",
            crate::commands::service::render::binary_size(node.memory_bytes)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_control::api::NodeInfo;

    fn node(id: &str, hostname: &str, role: &str, manager_status: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: hostname.into(),
            role: role.into(),
            availability: "active".into(),
            labels: Default::default(),
            addr: "192.168.56.11:2377".into(),
            data_path_addr: "192.168.56.11".into(),
            status: "ready".into(),
            manager_status: manager_status.into(),
            created_at: 1_795_418_681,
            last_seen_ms: 300,
            ..Default::default()
        }
    }

    /// A leader (the node the CLI talks to), a reachable manager, a drained worker that is down.
    fn cluster() -> Vec<NodeInfo> {
        let mut worker = node("wrk3c7hx2n5q8r1t4v6y9z0ab", "node3", "worker", "");
        worker.availability = "drain".into();
        worker.status = "down".into();
        worker.addr = "192.168.56.13:2377".into();
        worker.data_path_addr = "192.168.56.13".into();
        worker.labels = [
            ("zone".to_string(), "b".to_string()),
            ("disk".to_string(), "ssd".to_string()),
        ]
        .into_iter()
        .collect();
        let mut second = node("mgr2b6gw1m4p7q0s3u5x8y9za", "node2", "manager", "reachable");
        second.addr = "192.168.56.12:2377".into();
        second.data_path_addr = "192.168.56.12".into();
        vec![
            node("mgr1a5fv0l3o6p9r2t4w7x8yz", "node1", "manager", "leader"),
            second,
            worker,
        ]
    }

    #[test]
    fn ls_table_marks_self() {
        let expected = concat!(
            "ID                            HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS\n",
            "mgr1a5fv0l3o6p9r2t4w7x8yz *   node1      Ready    Active         Leader\n",
            "mgr2b6gw1m4p7q0s3u5x8y9za     node2      Ready    Active         Reachable\n",
            "wrk3c7hx2n5q8r1t4v6y9z0ab     node3      Down     Drain\n",
        );
        let me = "mgr1a5fv0l3o6p9r2t4w7x8yz";
        assert_eq!(super::ls_table(&cluster(), me), expected);
    }

    #[test]
    fn inspect_json() {
        let nodes = cluster();
        let expected = r#"[
  {
    "CreatedAt": "2026-11-23T07:24:41Z",
    "Description": {
      "Hostname": "node1"
    },
    "ID": "mgr1a5fv0l3o6p9r2t4w7x8yz",
    "ManagerStatus": {
      "Addr": "192.168.56.11:2377",
      "Leader": true,
      "Reachability": "reachable"
    },
    "Spec": {
      "Availability": "active",
      "Labels": {},
      "Role": "manager"
    },
    "Status": {
      "Addr": "192.168.56.11",
      "State": "ready"
    }
  },
  {
    "CreatedAt": "2026-11-23T07:24:41Z",
    "Description": {
      "Hostname": "node3"
    },
    "ID": "wrk3c7hx2n5q8r1t4v6y9z0ab",
    "Spec": {
      "Availability": "drain",
      "Labels": {
        "disk": "ssd",
        "zone": "b"
      },
      "Role": "worker"
    },
    "Status": {
      "Addr": "192.168.56.13",
      "State": "down"
    }
  }
]"#;
        let shaped = super::inspect_json(&[&nodes[0], &nodes[2]]).expect("a JSON value serializes");
        assert_eq!(shaped, expected);
    }

    #[test]
    fn pretty() {
        let nodes = cluster();
        let expected = concat!(
            "ID:\t\t\tmgr1a5fv0l3o6p9r2t4w7x8yz\n",
            "Hostname:\t\tnode1\n",
            "Joined at:\t\t2026-11-23T07:24:41Z\n",
            "Status:\n",
            " State:\t\t\tReady\n",
            " Availability:\t\tActive\n",
            " Address:\t\t192.168.56.11\n",
            "Manager Status:\n",
            " Address:\t\t192.168.56.11:2377\n",
            " Raft Status:\t\tReachable\n",
            " Leader:\t\tYes\n",
        );
        assert_eq!(super::pretty(&nodes[0]), expected);
        let expected = concat!(
            "ID:\t\t\twrk3c7hx2n5q8r1t4v6y9z0ab\n",
            "Labels:\n",
            " - disk=ssd\n",
            " - zone=b\n",
            "Hostname:\t\tnode3\n",
            "Joined at:\t\t2026-11-23T07:24:41Z\n",
            "Status:\n",
            " State:\t\t\tDown\n",
            " Availability:\t\tDrain\n",
            " Address:\t\t192.168.56.13\n",
        );
        assert_eq!(super::pretty(&nodes[2]), expected);
    }
}
