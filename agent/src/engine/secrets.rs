//! `/secrets` (and, through [`routes_of`], `/configs`: the two kinds are one kind of object in
//! shoal, kept apart as the cluster's [`ObjectKind`]): list (filters `names` (secrets only),
//! `name` and `id` prefixes: any of them; `label`: all of them, as swarmkit's), create, inspect
//! (a config with its `Data`, a secret never), delete, and update as dockerd answers them.
//!
//! References resolve as dockerd's (`lookup`), so a missing one is its 404 "secret X not
//! found"; what the leader answers is passed on as dockerd passes swarmkit's answers:
//! "rpc error: code = AlreadyExists desc = secret db already exists".
//!
//! Update: only the labels change, as in swarmkit (`UpdateSecret`/`UpdateConfig`, at the
//! version the client quoted, checked by the leader when it applies). An update that changes
//! nothing is answered as done without a write, which is what `docker stack deploy` sends
//! again for a stack's unchanged secrets; another name or other data is refused in swarmkit's
//! words ("only updates to Labels are allowed"). A stack's secret data cannot be read back, so
//! objects created with the stack label carry the digest of their data
//! (`com.shoal.stack.digest`, as `shoal stack deploy` creates them) to compare with; data sent
//! for a secret without it cannot be compared and is refused as shoal's gap (501).

use std::collections::HashMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use shoal_control::{
    api::{ConfigSpec, Empty, KeyValue, ObjectRef, SecretSpec, UpdateObjectRequest},
    cluster::objects::ObjectKind,
    wire_limits::cluster_client,
};
use tonic::Code;

use super::{
    Shared,
    errors::ApiError,
    filters::QueryFilters,
    lookup, node_state,
    shape::file_object::{self, Object, Spec},
};
use crate::commands::stack::convert::{DIGEST_LABEL, NAMESPACE_LABEL};

pub fn routes() -> Router<Shared> {
    routes_of(ObjectKind::Secret)
}

/// The five endpoints of `kind`, under `/secrets` or `/configs`.
pub fn routes_of(kind: ObjectKind) -> Router<Shared> {
    let base = format!("/{}s", kind.as_str());
    Router::new()
        .route(
            &base,
            get(
                move |State(engine): State<Shared>,
                      Query(query): Query<HashMap<String, String>>| async move {
                    list(&engine, kind, &query).await
                },
            ),
        )
        .route(
            &format!("{base}/create"),
            post(
                move |State(engine): State<Shared>, body: Bytes| async move {
                    create(&engine, kind, &body).await
                },
            ),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(
                move |State(engine): State<Shared>, Path(reference): Path<String>| async move {
                    inspect(&engine, kind, &reference).await
                },
            )
            .delete(
                move |State(engine): State<Shared>, Path(reference): Path<String>| async move {
                    remove(&engine, kind, &reference).await
                },
            ),
        )
        .route(
            &format!("{base}/{{id}}/update"),
            post(
                move |State(engine): State<Shared>,
                      Path(reference): Path<String>,
                      Query(query): Query<HashMap<String, String>>,
                      body: Bytes| async move {
                    update(&engine, kind, &reference, &query, &body).await
                },
            ),
        )
}

/// dockerd's filter keys (moby `daemon/cluster/filters.go`): configs have no `names`.
fn filter_keys(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::Secret => &["id", "label", "name", "names"],
        ObjectKind::Config => &["id", "label", "name"],
    }
}

async fn list(
    engine: &Shared,
    kind: ObjectKind,
    query: &HashMap<String, String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    node_state::manager(engine).await?;
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), filter_keys(kind))?;
    Ok(Json(
        all(engine, kind)
            .await?
            .iter()
            .filter(|o| matches(o, &filters))
            .map(file_object::docker_shape)
            .collect(),
    ))
}

/// swarmkit's `ListSecrets`: an exact name, a name prefix or an ID prefix, any of those given;
/// then every label asked for.
fn matches(o: &Object, filters: &QueryFilters) -> bool {
    let names = filters.get("names");
    let prefixes = filters.get("name");
    let ids = filters.get("id");
    let by_reference = (names.is_empty() && prefixes.is_empty() && ids.is_empty())
        || names.contains(&o.name)
        || prefixes.iter().any(|p| o.name.starts_with(p.as_str()))
        || ids.iter().any(|p| o.id.starts_with(p.as_str()));
    by_reference && filters.labels_match(&o.labels)
}

async fn create(
    engine: &Shared,
    kind: ObjectKind,
    body: &[u8],
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    node_state::manager(engine).await?;
    let Spec {
        name,
        mut labels,
        data,
    } = file_object::spec(kind, parse_body(body)?)?;
    let data = data.unwrap_or_default();
    if labels.iter().any(|kv| kv.key == NAMESPACE_LABEL) && !has(&labels, DIGEST_LABEL) {
        labels.push(KeyValue {
            key: DIGEST_LABEL.into(),
            value: digest(&data),
        });
    }
    let mut cluster = cluster_client(engine.channel.clone());
    let id = match kind {
        ObjectKind::Secret => {
            cluster
                .create_secret(SecretSpec { name, labels, data })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .id
        }
        ObjectKind::Config => {
            cluster
                .create_config(ConfigSpec { name, labels, data })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .id
        }
    };
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "ID": id }))))
}

async fn inspect(
    engine: &Shared,
    kind: ObjectKind,
    reference: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    node_state::manager(engine).await?;
    let found = find(engine, kind, reference).await?;
    Ok(Json(file_object::docker_shape(&found)))
}

async fn remove(
    engine: &Shared,
    kind: ObjectKind,
    reference: &str,
) -> Result<StatusCode, ApiError> {
    node_state::manager(engine).await?;
    let found = find(engine, kind, reference).await?;
    let mut cluster = cluster_client(engine.channel.clone());
    let by_id = ObjectRef {
        reference: found.id,
    };
    match kind {
        ObjectKind::Secret => cluster.remove_secret(by_id).await,
        ObjectKind::Config => cluster.remove_config(by_id).await,
    }
    .map_err(|status| {
        // swarmkit refuses an object in use as an invalid argument; shoal's leader as a
        // failed precondition. Both are dockerd's 400: its clients read swarmkit's code.
        if status.code() == Code::FailedPrecondition {
            rpc_error(tonic::Status::invalid_argument(status.message()))
        } else {
            rpc_error(status)
        }
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update(
    engine: &Shared,
    kind: ObjectKind,
    reference: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<StatusCode, ApiError> {
    node_state::manager(engine).await?;
    let asked = file_object::spec(kind, parse_body(body)?)?;
    let version: u64 = query
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid {} version", kind.as_str())))?;
    let current = find(engine, kind, reference).await?;
    // Checked here for an update that writes nothing, and by the leader for one that does.
    if current.version != version {
        return Err(ApiError::internal(OUT_OF_SEQUENCE));
    }
    let Some(labels) = check_update(kind, &current, &asked)? else {
        return Ok(StatusCode::OK);
    };
    let request = UpdateObjectRequest {
        reference: current.id,
        labels,
        expected_version: Some(version),
    };
    let mut cluster = cluster_client(engine.channel.clone());
    let updated = match kind {
        ObjectKind::Secret => cluster.update_secret(request).await.map(drop),
        ObjectKind::Config => cluster.update_config(request).await.map(drop),
    };
    match updated {
        Ok(()) => Ok(StatusCode::OK),
        Err(status) if status.code() == Code::Aborted => Err(ApiError::internal(OUT_OF_SEQUENCE)),
        Err(status) => Err(rpc_error(status)),
    }
}

/// dockerd's answer to an update quoting a version that is no longer current.
const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

/// What an update may ask of an object: its own name and data, and any labels. The labels to
/// set when they differ from the current ones (a stack's data digest kept), else `None`.
fn check_update(
    kind: ObjectKind,
    current: &Object,
    asked: &Spec,
) -> Result<Option<Vec<KeyValue>>, ApiError> {
    let what = kind.as_str();
    let labels_only = || {
        Err(rpc_error(tonic::Status::invalid_argument(
            "only updates to Labels are allowed",
        )))
    };
    if asked.name != current.name {
        return labels_only();
    }
    if let Some(data) = &asked.data {
        let same = match (&current.data, label(&current.labels, DIGEST_LABEL)) {
            (Some(had), _) => had == data,
            (None, Some(had)) => had == digest(data),
            (None, None) => {
                return Err(unimplemented(format!(
                    "shoal cannot compare the data of {what} {} with the data asked for (it \
                     keeps no digest of a {what} created without the label \
                     {NAMESPACE_LABEL}): remove the {what} and create it again",
                    current.name
                )));
            }
        };
        if !same {
            return labels_only();
        }
    }
    let mut had: Vec<&KeyValue> = current
        .labels
        .iter()
        .filter(|kv| kv.key != DIGEST_LABEL)
        .collect();
    let mut wanted: Vec<&KeyValue> = asked
        .labels
        .iter()
        .filter(|kv| kv.key != DIGEST_LABEL)
        .collect();
    had.sort_by(|a, b| a.key.cmp(&b.key));
    wanted.sort_by(|a, b| a.key.cmp(&b.key));
    if had == wanted {
        return Ok(None);
    }
    // The digest is shoal's record of the data, not a label the client manages: kept.
    let digest = current.labels.iter().filter(|kv| kv.key == DIGEST_LABEL);
    Ok(Some(wanted.into_iter().chain(digest).cloned().collect()))
}

/// Every object of `kind`, without data.
async fn all(engine: &Shared, kind: ObjectKind) -> Result<Vec<Object>, ApiError> {
    let mut cluster = cluster_client(engine.channel.clone());
    Ok(match kind {
        ObjectKind::Secret => cluster
            .list_secrets(Empty {})
            .await?
            .into_inner()
            .secrets
            .into_iter()
            .map(Object::from)
            .collect(),
        ObjectKind::Config => cluster
            .list_configs(Empty {})
            .await?
            .into_inner()
            .configs
            .into_iter()
            .map(|c| Object::from_config(c, false))
            .collect(),
    })
}

/// The object `reference` names, as dockerd resolves it; a config with its data.
async fn find(engine: &Shared, kind: ObjectKind, reference: &str) -> Result<Object, ApiError> {
    let objects = all(engine, kind).await?;
    let found = lookup::find(&objects, reference, kind.as_str(), |o| &o.id, |o| &o.name)?;
    match kind {
        ObjectKind::Secret => Ok(found.clone()),
        ObjectKind::Config => {
            let inspected = cluster_client(engine.channel.clone())
                .inspect_config(ObjectRef {
                    reference: found.id.clone(),
                })
                .await?
                .into_inner();
            Ok(Object::from_config(inspected, true))
        }
    }
}

fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

fn label<'a>(labels: &'a [KeyValue], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

fn has(labels: &[KeyValue], key: &str) -> bool {
    label(labels, key).is_some()
}

/// `sha256:HEX`, as `shoal stack deploy` labels its objects' data.
fn digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn unimplemented(message: String) -> ApiError {
    rpc_error(tonic::Status::unimplemented(message))
}

/// A leader's answer as dockerd passes swarmkit's on: grpc-go's text, HTTP status by code.
fn rpc_error(status: tonic::Status) -> ApiError {
    let code = go_code_name(status.code());
    let mut error = ApiError::from(status);
    error.message = format!("rpc error: code = {code} desc = {}", error.message);
    error
}

/// grpc-go's names of the codes (`codes.Code.String()`).
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    fn object(id: &str, name: &str, labels: Vec<KeyValue>) -> Object {
        Object {
            id: id.into(),
            name: name.into(),
            labels,
            version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn filters_are_swarmkits() {
        let db = object("s1aaa", "web_db", vec![kv(NAMESPACE_LABEL, "web")]);
        let key = object("s2bbb", "api-key", vec![]);
        let f = |raw: &str| QueryFilters::parse(Some(raw), &["id", "label", "name", "names"]);
        let pick = |raw: &str| -> Vec<String> {
            let filters = f(raw).unwrap();
            [&db, &key]
                .iter()
                .filter(|o| matches(o, &filters))
                .map(|o| o.name.clone())
                .collect()
        };
        assert_eq!(pick("{}"), ["web_db", "api-key"]);
        assert_eq!(pick(r#"{"names":{"web":true}}"#), Vec::<String>::new());
        assert_eq!(pick(r#"{"name":{"web":true}}"#), ["web_db"]);
        assert_eq!(
            pick(r#"{"name":{"web":true},"id":{"s2":true}}"#),
            ["web_db", "api-key"],
            "names and IDs: any"
        );
        assert_eq!(
            pick(r#"{"label":{"com.docker.stack.namespace=web":true}}"#),
            ["web_db"]
        );
        assert_eq!(
            pick(r#"{"id":{"s2":true},"label":{"com.docker.stack.namespace":true}}"#),
            Vec::<String>::new(),
            "labels: all"
        );
        assert_eq!(
            QueryFilters::parse(
                Some(r#"{"names":{"x":true}}"#),
                filter_keys(ObjectKind::Config)
            )
            .unwrap_err()
            .message,
            "invalid filter 'names'"
        );
    }

    #[test]
    fn an_update_may_ask_only_for_what_is() {
        let stack_labels = vec![kv(NAMESPACE_LABEL, "web"), kv(DIGEST_LABEL, &digest(b"pw"))];
        let secret = object("s1", "web_db", stack_labels);
        let asked = |name: &str, labels: Vec<KeyValue>, data: Option<&[u8]>| Spec {
            name: name.into(),
            labels,
            data: data.map(<[u8]>::to_vec),
        };
        let same = asked("web_db", vec![kv(NAMESPACE_LABEL, "web")], Some(b"pw"));
        assert_eq!(check_update(ObjectKind::Secret, &secret, &same), Ok(None));
        let other_data = asked("web_db", vec![kv(NAMESPACE_LABEL, "web")], Some(b"new"));
        let refused = check_update(ObjectKind::Secret, &secret, &other_data).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.message.as_str()),
            (
                400,
                "rpc error: code = InvalidArgument desc = only updates to Labels are allowed"
            )
        );
        let renamed = asked("web_pw", vec![kv(NAMESPACE_LABEL, "web")], None);
        assert!(check_update(ObjectKind::Secret, &secret, &renamed).is_err());
        // Other labels are the update; the data's digest stays whatever the client sends.
        let relabelled = asked("web_db", vec![kv(NAMESPACE_LABEL, "api")], None);
        assert_eq!(
            check_update(ObjectKind::Secret, &secret, &relabelled),
            Ok(Some(vec![
                kv(NAMESPACE_LABEL, "api"),
                kv(DIGEST_LABEL, &digest(b"pw"))
            ]))
        );
        // A config's data is compared as it is; a secret without a digest cannot be.
        let mut config = object("c1", "app", vec![]);
        config.data = Some(b"port=80".to_vec());
        assert_eq!(
            check_update(
                ObjectKind::Config,
                &config,
                &asked("app", vec![], Some(b"port=80"))
            ),
            Ok(None)
        );
        assert!(
            check_update(
                ObjectKind::Config,
                &config,
                &asked("app", vec![], Some(b"port=81"))
            )
            .is_err()
        );
        let bare = object("s2", "key", vec![]);
        assert_eq!(
            check_update(ObjectKind::Secret, &bare, &asked("key", vec![], Some(b"k")))
                .unwrap_err()
                .status
                .as_u16(),
            501
        );
        assert_eq!(
            check_update(ObjectKind::Secret, &bare, &asked("key", vec![], None)),
            Ok(None)
        );
    }

    #[test]
    fn leader_answers_read_as_grpc_gos() {
        let e = rpc_error(tonic::Status::already_exists("secret db already exists"));
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (
                409,
                "rpc error: code = AlreadyExists desc = secret db already exists"
            )
        );
    }
}
