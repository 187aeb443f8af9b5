//! A node in Docker's shape: `shoal node inspect`'s JSON (`render::docker_shape`) with the
//! fields Docker always has (`Version`, `UpdatedAt`). The nodes' platforms and engine versions
//! are not in the API's node records, so they are left out rather than guessed.
//!
//! And a posted `NodeSpec` (`POST /nodes/{id}/update`), read against the spec reported: the
//! docker CLI posts the whole spec back with its change, so what differs is what is asked.

use serde_json::Value;
use shoal_control::api::{NodeInfo, UpdateNodeRequest};

use super::swarm::changes;
use crate::{commands::node::render::docker_shape, engine::errors::ApiError, time_format::rfc3339};

pub fn node(info: &NodeInfo) -> serde_json::Value {
    let mut shaped = docker_shape(info);
    shaped["Version"] = serde_json::json!({ "Index": 0 });
    shaped["UpdatedAt"] = rfc3339(info.created_at).into();
    shaped
}

/// The update `posted` asks of `current`: its role, availability and labels (the full set
/// wanted: those missing are removed). Anything else that differs is refused, naming it.
pub fn update_request(current: &NodeInfo, posted: Value) -> Result<UpdateNodeRequest, ApiError> {
    let Value::Object(mut posted) = posted else {
        return Err(ApiError::bad_request(
            "invalid JSON: the node spec must be an object",
        ));
    };
    let mut request = UpdateNodeRequest {
        node: current.id.clone(),
        ..Default::default()
    };
    match posted.remove("Labels").unwrap_or(Value::Null) {
        Value::Null => request.labels_rm = current.labels.keys().cloned().collect(),
        Value::Object(wanted) => {
            for (key, value) in &wanted {
                let Value::String(value) = value else {
                    return Err(ApiError::bad_request(
                        "invalid JSON: Labels must be an object of strings",
                    ));
                };
                if current.labels.get(key) != Some(value) {
                    request.labels_add.insert(key.clone(), value.clone());
                }
            }
            request.labels_rm = current
                .labels
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid JSON: Labels must be an object of strings",
            ));
        }
    }
    request.labels_rm.sort();
    let reported = &docker_shape(current)["Spec"];
    let reported = serde_json::json!({
        "Role": reported["Role"],
        "Availability": reported["Availability"],
    });
    for (path, value) in changes(&reported, &Value::Object(posted)) {
        let text = value.as_str().map(str::to_lowercase);
        match (path.as_str(), text.as_deref()) {
            ("Role", Some(role @ ("worker" | "manager"))) => {
                if role != current.role {
                    request.role = role.to_string();
                }
            }
            ("Availability", Some(a @ ("active" | "pause" | "drain"))) => {
                if a != current.availability {
                    request.availability = a.to_string();
                }
            }
            // dockerd's words (`convert.NodeSpecToGRPC`).
            ("Role" | "Availability", _) => {
                let shown = if value.is_null() {
                    r#""""#.to_string()
                } else {
                    value.to_string()
                };
                return Err(ApiError::bad_request(format!("invalid {path}: {shown}")));
            }
            ("Name", _) => {
                return Err(ApiError::bad_request(
                    "Name is not supported by shoal: a node is named by its hostname",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{path} is not supported by shoal"
                )));
            }
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn current() -> NodeInfo {
        NodeInfo {
            id: "n1".into(),
            hostname: "node1".into(),
            role: "worker".into(),
            availability: "active".into(),
            labels: [
                ("zone".to_string(), "a".to_string()),
                ("old".into(), "x".into()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_spec_posted_back_asks_for_what_changed() {
        let posted = json!({
            "Labels": { "zone": "b", "old": "x", "new": "1" },
            "Role": "Manager",
            "Availability": "drain",
        });
        let request = update_request(&current(), posted).unwrap();
        assert_eq!(request.role, "manager");
        assert_eq!(request.availability, "drain");
        assert_eq!(request.labels_add.len(), 2);
        assert_eq!(request.labels_add["zone"], "b");
        assert!(request.labels_rm.is_empty());
        let unchanged = json!({ "Labels": {}, "Role": "worker", "Availability": "active" });
        let request = update_request(&current(), unchanged).unwrap();
        assert_eq!(request.labels_rm, ["old", "zone"]);
        assert!(request.role.is_empty() && request.availability.is_empty());
    }

    #[test]
    fn what_cannot_change_is_named() {
        let bad = |posted| update_request(&current(), posted).unwrap_err().message;
        assert_eq!(
            bad(json!({ "Role": "boss", "Availability": "active" })),
            r#"invalid Role: "boss""#
        );
        assert_eq!(
            bad(json!({ "Role": "worker" })),
            r#"invalid Availability: """#
        );
        assert!(
            bad(json!({ "Role": "worker", "Availability": "active", "Name": "db" }))
                .starts_with("Name is not")
        );
        assert_eq!(
            bad(json!({ "Role": "worker", "Availability": "active", "Extra": 1 })),
            "Extra is not supported by shoal"
        );
    }
}
