//! A task in Docker's shape (`GET /tasks`, `docker service ps`): its service's task template
//! as `Spec` (the service's current one: shoal keeps no spec per task), its state and error,
//! and its addresses per network.

use shoal_control::api::{ServiceInfo, TaskInfo};

use super::{service_out, timestamp};

pub fn task(t: &TaskInfo, service: Option<&ServiceInfo>) -> serde_json::Value {
    let spec = service.map_or(serde_json::Value::Null, |s| {
        service_out::service(s, false)["Spec"]["TaskTemplate"].take()
    });
    let mut status = serde_json::json!({
        "Timestamp": timestamp(t.timestamp_ms),
        "State": t.state,
        "Message": t.message,
        "ContainerStatus": { "ContainerID": t.id, "PID": 0, "ExitCode": t.exit_code },
        "PortStatus": {},
    });
    if !t.error.is_empty() {
        status["Err"] = t.error.clone().into();
    }
    let mut shaped = serde_json::json!({
        "ID": t.id,
        "Version": { "Index": t.service_version },
        "CreatedAt": timestamp(t.created_at_ms),
        "UpdatedAt": timestamp(t.timestamp_ms),
        "Labels": {},
        "Spec": spec,
        "ServiceID": t.service_id,
        "NodeID": t.node_id,
        "Status": status,
        "DesiredState": t.desired_state,
        "NetworksAttachments": t.networks.iter().map(|n| serde_json::json!({
            "Network": { "ID": n.network_id, "Spec": { "Name": n.network_name } },
            "Addresses": [n.addr],
        })).collect::<Vec<_>>(),
    });
    // Docker leaves the slot out of a global service's tasks.
    if t.slot > 0 {
        shaped["Slot"] = t.slot.into();
    }
    shaped
}
