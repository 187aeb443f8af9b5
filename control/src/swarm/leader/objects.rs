//! What the leader does for the secret and config API: create, list, inspect, update (labels
//! only), remove. A secret's data goes in and never comes back out; a config's comes back when
//! inspected.

use std::collections::BTreeMap;

use super::Leader;
use crate::{
    api::{
        ConfigInfo, ConfigSpec, Empty, KeyValue, ListConfigsResponse, ListSecretsResponse,
        ObjectRef, SecretInfo, SecretSpec, UpdateObjectRequest,
    },
    clock::now_ms,
    cluster::{
        Command,
        objects::{
            FileData, FileObject, ObjectCommand, ObjectKind, in_use, validate_data, validate_name,
        },
    },
    identity::NodeId,
    swarm::{error::Error, lookup::resolve_object},
};

impl Leader {
    pub async fn create_secret(&self, spec: SecretSpec) -> Result<SecretInfo, Error> {
        let object = self
            .create_object(ObjectKind::Secret, spec.name, spec.labels, spec.data)
            .await?;
        Ok(secret_info(&object))
    }

    pub async fn list_secrets(&self, _: Empty) -> Result<ListSecretsResponse, Error> {
        self.read(|state| {
            Ok(ListSecretsResponse {
                secrets: state.secrets.values().map(secret_info).collect(),
            })
        })
    }

    pub async fn inspect_secret(&self, request: ObjectRef) -> Result<SecretInfo, Error> {
        self.read(|state| {
            let object = resolve_object(state, ObjectKind::Secret, &request.reference)?;
            Ok(secret_info(object))
        })
    }

    pub async fn update_secret(&self, request: UpdateObjectRequest) -> Result<SecretInfo, Error> {
        let object = self.update_object(ObjectKind::Secret, request).await?;
        Ok(secret_info(&object))
    }

    pub async fn remove_secret(&self, request: ObjectRef) -> Result<Empty, Error> {
        self.remove_object(ObjectKind::Secret, &request.reference)
            .await
    }

    pub async fn create_config(&self, spec: ConfigSpec) -> Result<ConfigInfo, Error> {
        let object = self
            .create_object(ObjectKind::Config, spec.name, spec.labels, spec.data)
            .await?;
        Ok(config_info(&object, false))
    }

    /// Without their data: a listing of many large configs must stay small.
    pub async fn list_configs(&self, _: Empty) -> Result<ListConfigsResponse, Error> {
        self.read(|state| {
            Ok(ListConfigsResponse {
                configs: state
                    .configs
                    .values()
                    .map(|c| config_info(c, false))
                    .collect(),
            })
        })
    }

    pub async fn inspect_config(&self, request: ObjectRef) -> Result<ConfigInfo, Error> {
        self.read(|state| {
            let object = resolve_object(state, ObjectKind::Config, &request.reference)?;
            Ok(config_info(object, true))
        })
    }

    pub async fn update_config(&self, request: UpdateObjectRequest) -> Result<ConfigInfo, Error> {
        let object = self.update_object(ObjectKind::Config, request).await?;
        Ok(config_info(&object, false))
    }

    pub async fn remove_config(&self, request: ObjectRef) -> Result<Empty, Error> {
        self.remove_object(ObjectKind::Config, &request.reference)
            .await
    }

    /// Checks a new object as swarmkit does (with its words) and commits it.
    async fn create_object(
        &self,
        kind: ObjectKind,
        name: String,
        labels: Vec<KeyValue>,
        data: Vec<u8>,
    ) -> Result<FileObject, Error> {
        validate_name(&name).map_err(Error::invalid)?;
        validate_data(kind, &data).map_err(Error::invalid)?;
        let labels = labels_from_api(labels)?;
        if self.read(|state| state.objects(kind).values().any(|o| o.name == name)) {
            return Err(Error::exists(format!(
                "{} {name} already exists",
                kind.as_str()
            )));
        }
        let now = now_ms();
        let object = FileObject {
            id: NodeId::generate().to_string(),
            name,
            labels,
            data: FileData::new(data),
            created_at_ms: now,
            updated_at_ms: now,
            version: 1,
        };
        let command = ObjectCommand::Create {
            kind,
            object: object.clone(),
        };
        self.propose(Command::Objects(command)).await?;
        Ok(object)
    }

    /// Replaces an object's labels, at the version the caller read if it says (checked when
    /// the update applies); the object as it is then.
    async fn update_object(
        &self,
        kind: ObjectKind,
        request: UpdateObjectRequest,
    ) -> Result<FileObject, Error> {
        let labels = labels_from_api(request.labels)?;
        let id = self.read(|state| {
            Ok::<_, Error>(resolve_object(state, kind, &request.reference)?.id.clone())
        })?;
        let command = ObjectCommand::Update {
            kind,
            id: id.clone(),
            labels,
            expected_version: request.expected_version,
            at_ms: now_ms(),
        };
        self.propose(Command::Objects(command)).await?;
        // Removed between the commit and this read: said as a missing object.
        self.read(|state| state.objects(kind).get(&id).cloned())
            .ok_or_else(|| {
                Error::not_found(format!("{} {} not found", kind.as_str(), request.reference))
            })
    }

    /// Removes an object no service uses (checked again when the removal applies).
    async fn remove_object(&self, kind: ObjectKind, reference: &str) -> Result<Empty, Error> {
        let id = self.read(|state| {
            let object = resolve_object(state, kind, reference)?;
            let users = state.users_of(kind, &object.id);
            if !users.is_empty() {
                return Err(Error::refused(in_use(kind, &object.name, &users)));
            }
            Ok(object.id.clone())
        })?;
        let command = ObjectCommand::Remove { kind, id };
        self.propose(Command::Objects(command)).await?;
        Ok(Empty {})
    }
}

/// Labels as the store keeps them; an empty key is refused (Docker's `--label =v`).
fn labels_from_api(labels: Vec<KeyValue>) -> Result<BTreeMap<String, String>, Error> {
    if let Some(kv) = labels.iter().find(|kv| kv.key.is_empty()) {
        return Err(Error::invalid(format!(
            "invalid label '={}': the key is empty",
            kv.value
        )));
    }
    Ok(labels.into_iter().map(|kv| (kv.key, kv.value)).collect())
}

fn labels_to_api(labels: &BTreeMap<String, String>) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A secret as the API shows it: there is no field for its data.
fn secret_info(o: &FileObject) -> SecretInfo {
    SecretInfo {
        id: o.id.clone(),
        name: o.name.clone(),
        labels: labels_to_api(&o.labels),
        version: o.version(),
        created_at_ms: o.created_at_ms,
        updated_at_ms: o.updated_at_ms,
    }
}

fn config_info(o: &FileObject, with_data: bool) -> ConfigInfo {
    ConfigInfo {
        id: o.id.clone(),
        name: o.name.clone(),
        labels: labels_to_api(&o.labels),
        version: o.version(),
        created_at_ms: o.created_at_ms,
        updated_at_ms: o.updated_at_ms,
        data: if with_data {
            o.data.as_bytes().to_vec()
        } else {
            Vec::new()
        },
    }
}
