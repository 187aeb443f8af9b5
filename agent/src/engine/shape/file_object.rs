//! Secrets and configs in Docker's shapes: the `SecretSpec`/`ConfigSpec` of `POST
//! /secrets/create` and `/configs/create` (and of their updates) in, `swarm.Secret` and
//! `swarm.Config` out. The two kinds share one shape; only a config shows its `Data`.

use serde_json::Value;
use shoal_control::{
    api::{ConfigInfo, KeyValue, SecretInfo},
    cluster::objects::ObjectKind,
};

use super::{base64, json::Reader, timestamp};
use crate::engine::errors::ApiError;

/// A secret or config as the API answers it (a secret never with data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Object {
    pub id: String,
    pub name: String,
    pub labels: Vec<KeyValue>,
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// A config's data when it was inspected; `None` in listings and for secrets.
    pub data: Option<Vec<u8>>,
}

impl From<SecretInfo> for Object {
    fn from(s: SecretInfo) -> Self {
        Object {
            id: s.id,
            name: s.name,
            labels: s.labels,
            version: s.version,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            data: None,
        }
    }
}

impl Object {
    /// A config as listed (`with_data` false: listings carry none) or inspected.
    pub fn from_config(c: ConfigInfo, with_data: bool) -> Self {
        Object {
            id: c.id,
            name: c.name,
            labels: c.labels,
            version: c.version,
            created_at_ms: c.created_at_ms,
            updated_at_ms: c.updated_at_ms,
            data: with_data.then_some(c.data),
        }
    }
}

/// Docker's `SecretSpec`/`ConfigSpec` as read.
#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub labels: Vec<KeyValue>,
    /// Absent (null) is not empty: an update without `Data` leaves the data alone.
    pub data: Option<Vec<u8>>,
}

/// Reads a spec. A `Driver` (a secret store plugin) or `Templating` asks for what shoal does
/// not do and is refused: the object would hold other data than the tasks expect. Fields
/// Docker's spec does not have are ignored, as dockerd's JSON decoder ignores them.
pub fn spec(kind: ObjectKind, body: Value) -> Result<Spec, ApiError> {
    let mut r = Reader::new("", body)?;
    let name = r.string("Name")?;
    let labels = r
        .string_map("Labels")?
        .into_iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect();
    let data = match r.value("Data") {
        Value::Null => None,
        Value::String(text) => Some(
            base64::decode(&text)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON: Data: {e}")))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "invalid JSON: Data must be a base64 string",
            ));
        }
    };
    let what = kind.as_str();
    if !r.object("Driver")?.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Driver: {what} drivers are not supported by shoal; give the {what}'s Data"
        )));
    }
    if !r.object("Templating")?.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Templating: {what} templating is not supported by shoal"
        )));
    }
    Ok(Spec { name, labels, data })
}

/// `swarm.Secret` or `swarm.Config`: `Spec.Data` (base64) only for a config that was inspected.
pub fn docker_shape(o: &Object) -> Value {
    let labels: serde_json::Map<String, Value> = o
        .labels
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().into()))
        .collect();
    let mut spec = serde_json::json!({ "Name": o.name, "Labels": labels });
    if let Some(data) = &o.data {
        spec["Data"] = base64::encode(data).into();
    }
    serde_json::json!({
        "ID": o.id,
        "Version": { "Index": o.version },
        "CreatedAt": timestamp(o.created_at_ms),
        "UpdatedAt": timestamp(o.updated_at_ms),
        "Spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_clis_create_body_reads() {
        // What `docker secret create --label env=prod db ./file` (CLI 28) sends.
        let read = spec(
            ObjectKind::Secret,
            serde_json::json!({ "Name": "db", "Labels": { "env": "prod" }, "Data": "cG9ydD04MAo=" }),
        )
        .unwrap();
        assert_eq!(
            read,
            Spec {
                name: "db".into(),
                labels: vec![KeyValue {
                    key: "env".into(),
                    value: "prod".into()
                }],
                data: Some(b"port=80\n".to_vec()),
            }
        );
        let no_data = spec(ObjectKind::Config, serde_json::json!({ "Name": "c" })).unwrap();
        assert_eq!(no_data.data, None);
    }

    #[test]
    fn drivers_templates_and_bad_data_are_refused() {
        let driver = spec(
            ObjectKind::Secret,
            serde_json::json!({ "Name": "db", "Driver": { "Name": "vault" } }),
        )
        .unwrap_err();
        assert_eq!(driver.status.as_u16(), 400);
        assert_eq!(
            driver.message,
            "Driver: secret drivers are not supported by shoal; give the secret's Data"
        );
        let templating = spec(
            ObjectKind::Config,
            serde_json::json!({ "Name": "c", "Data": "eA==", "Templating": { "Name": "golang" } }),
        )
        .unwrap_err();
        assert_eq!(
            templating.message,
            "Templating: config templating is not supported by shoal"
        );
        let bad = spec(
            ObjectKind::Secret,
            serde_json::json!({ "Name": "db", "Data": "not base64!" }),
        )
        .unwrap_err();
        assert!(
            bad.message
                .starts_with("invalid JSON: Data: illegal base64")
        );
    }

    #[test]
    fn a_secret_shows_no_data_and_an_inspected_config_does() {
        let secret = Object::from(SecretInfo {
            id: "s1".into(),
            name: "db".into(),
            version: 1,
            created_at_ms: 1_500,
            updated_at_ms: 2_000,
            ..Default::default()
        });
        assert_eq!(
            docker_shape(&secret),
            serde_json::json!({
                "ID": "s1",
                "Version": { "Index": 1 },
                "CreatedAt": "1970-01-01T00:00:01.500Z",
                "UpdatedAt": "1970-01-01T00:00:02.000Z",
                "Spec": { "Name": "db", "Labels": {} },
            })
        );
        let config = ConfigInfo {
            id: "c1".into(),
            name: "app".into(),
            data: b"x".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            docker_shape(&Object::from_config(config.clone(), true))["Spec"]["Data"],
            "eA=="
        );
        assert!(
            docker_shape(&Object::from_config(config, false))["Spec"]
                .get("Data")
                .is_none()
        );
    }
}
