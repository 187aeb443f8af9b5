//! The swarm in Docker's shape (`GET /swarm`, `/info`'s `Swarm.Cluster`), and a posted swarm
//! spec read against it (`POST /swarm/init`, `POST /swarm/update`).
//!
//! Docker's clients update by reading the whole spec, changing a field and posting it all
//! back, so a posted spec is compared field by field with the one reported ([`changes`]):
//! what differs is what was asked for. The fields shoal can set become calls; any other that
//! differs is refused, naming it, rather than ignored.
//!
//! The settings come from the manager's store (`InspectSwarm`): version, times, address
//! pools, dispatcher heartbeat, node certificate expiry, autolock; the root CA and its rotation
//! from `RootCa`. Raft's settings and the task history limit, which shoal does not have, are
//! left at Docker's zero values rather than guessed.

use serde_json::{Map, Value};

use super::{json::is_empty, timestamp};
use crate::engine::errors::ApiError;

/// What the API's calls tell of the swarm.
pub struct Cluster {
    pub id: String,
    /// The settings' version: `POST /swarm/update?version=` must quote it.
    pub version: u64,
    pub created_ms: u64,
    /// The last change to the settings (the creation until one).
    pub updated_ms: u64,
    pub data_path_port: u32,
    /// `--default-addr-pool` (CIDRs) and `--default-addr-pool-mask-length`.
    pub default_addr_pools: Vec<String>,
    pub subnet_size: u32,
    pub heartbeat_ms: u64,
    pub cert_expiry_secs: u64,
    pub autolock: bool,
    pub ca_cert_pem: String,
    /// A root CA rotation is under way.
    pub rotating: bool,
    /// The worker and manager join tokens (only `GET /swarm` shows them).
    pub tokens: Option<(String, String)>,
}

/// `Spec` as reported: what a client posts back, with its changes, to update. Durations are
/// Go's `time.Duration`, in nanoseconds.
pub fn spec(cluster: &Cluster) -> Value {
    serde_json::json!({
        "Name": "default",
        "Labels": {},
        "Orchestration": {},
        "Raft": {},
        "Dispatcher": { "HeartbeatPeriod": cluster.heartbeat_ms.saturating_mul(1_000_000) },
        "CAConfig": { "NodeCertExpiry": cluster.cert_expiry_secs.saturating_mul(1_000_000_000) },
        "TaskDefaults": {},
        "EncryptionConfig": { "AutoLockManagers": cluster.autolock },
    })
}

/// Docker's `ClusterInfo` (`/info`'s `Swarm.Cluster`), and with the join tokens `/swarm`.
pub fn swarm(cluster: &Cluster) -> Value {
    let mut shaped = serde_json::json!({
        "ID": cluster.id,
        "Version": { "Index": cluster.version },
        "CreatedAt": timestamp(cluster.created_ms),
        "UpdatedAt": timestamp(cluster.updated_ms),
        "Spec": spec(cluster),
        "TLSInfo": { "TrustRoot": cluster.ca_cert_pem },
        "RootRotationInProgress": cluster.rotating,
        "DataPathPort": cluster.data_path_port,
        "DefaultAddrPool": cluster.default_addr_pools,
        "SubnetSize": cluster.subnet_size,
    });
    if let Some((worker, manager)) = &cluster.tokens {
        shaped["JoinTokens"] = serde_json::json!({ "Worker": worker, "Manager": manager });
    }
    shaped
}

/// The fields of `posted` whose values differ from `current`'s, as dotted paths with the
/// posted value. Absent and Docker's zero values are the same (Go clients omit empty fields).
pub fn changes(current: &Value, posted: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    diff("", current, posted, &mut found);
    found
}

fn diff(path: &str, current: &Value, posted: &Value, found: &mut Vec<(String, Value)>) {
    let empty = Map::new();
    let as_object = |v: &'_ Value| -> Option<Map<String, Value>> {
        match v {
            Value::Object(map) => Some(map.clone()),
            v if is_empty(v) => Some(empty.clone()),
            _ => None,
        }
    };
    match (as_object(current), as_object(posted)) {
        (Some(a), Some(b)) if current.is_object() || posted.is_object() => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff(
                    &child,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    found,
                );
            }
        }
        _ if is_empty(current) && is_empty(posted) => {}
        _ if current == posted => {}
        _ => found.push((path.to_string(), posted.clone())),
    }
}

/// What a posted swarm spec asks shoal to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SpecChanges {
    pub heartbeat_ms: Option<u64>,
    pub cert_expiry_secs: Option<u64>,
    pub autolock: Option<bool>,
    /// `CAConfig.ForceRotate` raised: `docker swarm ca --rotate`.
    pub rotate_ca: bool,
}

/// The spec's durations that shoal reports.
const DURATIONS: [&str; 2] = ["Dispatcher.HeartbeatPeriod", "CAConfig.NodeCertExpiry"];

/// Where a spec is posted: init sets what update cannot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    Init,
    Update,
}

/// Reads `posted` (a Docker swarm `Spec`) against `current` (the spec reported; at init,
/// Docker's zero spec): each difference shoal can act on, or one error naming the first
/// field it cannot.
pub fn read_spec(current: &Value, posted: Value, at: Posted) -> Result<SpecChanges, ApiError> {
    let mut posted = match posted {
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => Value::Object(map),
        _ => {
            return Err(ApiError::bad_request(
                "invalid JSON: Spec must be an object",
            ));
        }
    };
    // dockerd names an unnamed spec "default" and refuses any other name.
    match posted.get("Name") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if name.is_empty() || name == "default" => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                r#"swarm spec must be named "default""#,
            ));
        }
    }
    if let Some(map) = posted.as_object_mut() {
        map.insert("Name".into(), "default".into());
    }
    let mut current = current.clone();
    if let Some(map) = current.as_object_mut() {
        map.insert("Name".into(), "default".into());
    }
    let mut out = SpecChanges::default();
    for (path, value) in changes(&current, &posted) {
        // dockerd merges a posted spec into the current one (moby `MergeSwarmSpecToGRPC`): a
        // zero duration, as a client that sends only what it changes leaves it, keeps the
        // current one.
        if is_empty(&value) && DURATIONS.contains(&path.as_str()) {
            continue;
        }
        // A field the client left out (docker-py's update posts `{}` with only the rotate
        // flags) keeps its value too.
        if value.is_null() {
            continue;
        }
        match (path.as_str(), at) {
            ("Dispatcher.HeartbeatPeriod", Posted::Init) => {
                out.heartbeat_ms = Some(nanos(&path, &value)?.div_ceil(1_000_000));
            }
            ("CAConfig.NodeCertExpiry", _) => {
                out.cert_expiry_secs = Some(nanos(&path, &value)?.div_ceil(1_000_000_000));
            }
            ("EncryptionConfig.AutoLockManagers", _) => {
                out.autolock = Some(value.as_bool().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid JSON: Spec.{path} must be true or false"
                    ))
                })?);
            }
            ("CAConfig.ForceRotate", Posted::Update) => {
                // Reported as 0: any other count asks for one rotation.
                nanos(&path, &value)?;
                out.rotate_ca = true;
            }
            ("Dispatcher.HeartbeatPeriod", Posted::Update) => {
                return Err(ApiError::bad_request(
                    "Spec.Dispatcher.HeartbeatPeriod cannot be changed in a shoal swarm: it is \
                     set at init (docker swarm init --dispatcher-heartbeat)",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Spec.{path} is not supported by shoal"
                )));
            }
        }
    }
    Ok(out)
}

/// A non-negative integer (a Go `time.Duration` in nanoseconds, or a count).
fn nanos(path: &str, value: &Value) -> Result<u64, ApiError> {
    value.as_u64().ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid JSON: Spec.{path} must be a non-negative integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster() -> Cluster {
        Cluster {
            id: "c1".into(),
            version: 7,
            created_ms: 1_500,
            updated_ms: 2_000,
            data_path_port: 4789,
            default_addr_pools: vec!["10.20.0.0/16".into()],
            subnet_size: 26,
            heartbeat_ms: 5_000,
            cert_expiry_secs: 48 * 3600,
            autolock: false,
            ca_cert_pem: "PEM".into(),
            rotating: false,
            tokens: Some(("SWMTKN-w".into(), "SWMTKN-m".into())),
        }
    }

    #[test]
    fn the_swarm_carries_what_the_api_says() {
        let shaped = swarm(&cluster());
        assert_eq!(shaped["JoinTokens"]["Manager"], "SWMTKN-m");
        assert_eq!(shaped["Spec"]["Name"], "default");
        assert_eq!(
            shaped["Spec"]["EncryptionConfig"]["AutoLockManagers"],
            false
        );
        assert_eq!(shaped["CreatedAt"], "1970-01-01T00:00:01.500Z");
        assert_eq!(shaped["UpdatedAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(shaped["Version"]["Index"], 7);
        assert_eq!(shaped["DefaultAddrPool"], json!(["10.20.0.0/16"]));
        assert_eq!(shaped["SubnetSize"], 26);
        assert_eq!(
            shaped["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            5_000_000_000u64
        );
        assert_eq!(
            shaped["Spec"]["CAConfig"]["NodeCertExpiry"],
            48u64 * 3600 * 1_000_000_000
        );
        let info = swarm(&Cluster {
            tokens: None,
            ..cluster()
        });
        assert!(info.get("JoinTokens").is_none());
    }

    #[test]
    fn only_what_differs_counts_and_zero_is_absent() {
        let current = json!({ "A": { "B": 1, "C": {} }, "D": false, "E": "x" });
        let posted = json!({ "A": { "B": 2, "C": { "Z": 0 } }, "E": "x", "F": null });
        assert_eq!(changes(&current, &posted), [("A.B".to_string(), json!(2))]);
    }

    #[test]
    fn a_spec_read_back_with_a_change_asks_for_that_change() {
        let current = spec(&cluster());
        let mut posted = current.clone();
        posted["CAConfig"]["NodeCertExpiry"] = json!(72u64 * 3600 * 1_000_000_000);
        posted["EncryptionConfig"]["AutoLockManagers"] = json!(true);
        assert_eq!(
            read_spec(&current, posted.clone(), Posted::Update).unwrap(),
            SpecChanges {
                cert_expiry_secs: Some(72 * 3600),
                autolock: Some(true),
                ..Default::default()
            }
        );
        assert_eq!(
            read_spec(&current, current.clone(), Posted::Update).unwrap(),
            SpecChanges::default()
        );
        posted["CAConfig"]["ForceRotate"] = json!(1);
        assert!(
            read_spec(&current, posted, Posted::Update)
                .unwrap()
                .rotate_ca
        );
    }

    #[test]
    fn an_empty_spec_changes_nothing_even_under_autolock() {
        let mut current = spec(&cluster());
        current["EncryptionConfig"]["AutoLockManagers"] = json!(true);
        assert_eq!(
            read_spec(&current, json!({}), Posted::Update).unwrap(),
            SpecChanges::default()
        );
    }

    #[test]
    fn what_shoal_cannot_set_is_refused_by_name() {
        let current = spec(&cluster());
        let mut posted = current.clone();
        posted["Raft"]["SnapshotInterval"] = json!(100);
        assert_eq!(
            read_spec(&current, posted, Posted::Update)
                .unwrap_err()
                .message,
            "Spec.Raft.SnapshotInterval is not supported by shoal"
        );
        let heartbeat = json!({ "Dispatcher": { "HeartbeatPeriod": 7_000_000_000u64 } });
        assert!(read_spec(&current, heartbeat.clone(), Posted::Update).is_err());
        assert_eq!(
            read_spec(&json!({}), heartbeat, Posted::Init)
                .unwrap()
                .heartbeat_ms,
            Some(7000)
        );
        let named = json!({ "Name": "prod" });
        assert_eq!(
            read_spec(&json!({}), named, Posted::Init)
                .unwrap_err()
                .message,
            r#"swarm spec must be named "default""#
        );
        // Only what it changes: the durations it leaves out stay as they are.
        let expiry = json!({ "CAConfig": { "NodeCertExpiry": 3_600_000_000_000u64 } });
        assert_eq!(
            read_spec(&current, expiry, Posted::Update).unwrap(),
            SpecChanges {
                cert_expiry_secs: Some(3600),
                ..Default::default()
            }
        );
        let labels = json!({ "Labels": { "team": "a" } });
        assert_eq!(
            read_spec(&current, labels, Posted::Update)
                .unwrap_err()
                .message,
            "Spec.Labels.team is not supported by shoal"
        );
    }
}
