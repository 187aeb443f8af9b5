//! Secrets and configs, as Docker's swarm mode has them: small named files kept in Raft, which
//! services reference (`--secret`, `--config`) and which reach a node only with the assignments
//! of its tasks that use them ([`TaskFiles`]).
//!
//! The data of a secret is never shown: [`FileData`]'s `Debug` prints its length, so no log
//! line, panic or `{:?}` of a state, command or payload holds it. At rest it is in the Raft store,
//! which every manager seals with its data key (see `raft::store`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Component, Path},
};

use serde::{Deserialize, Serialize};

use super::{ClusterState, ServiceSpec, Task, TaskState};

/// swarmkit's `MaxSecretSize`: a secret's data is shorter than this.
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// swarmkit's `MaxConfigSize` (raised from 500 KiB in 2019): a config's data is shorter.
pub const MAX_CONFIG_BYTES: usize = 1000 * 1024;
/// Docker's longest secret or config name.
pub const MAX_NAME: usize = 64;
/// Where a secret with a relative target is, in its task's view: a tmpfs of the task's own.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Where a config with a relative target is, in its task's view (Docker's: the container's
/// root).
pub const CONFIGS_DIR: &str = "/";
/// Docker's default permission bits of a secret or config file.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

/// Docker's words for a name that does not match its rule.
const INVALID_NAME: &str = "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the \
     start and end character must be [a-zA-Z0-9]";

/// Secrets and configs are the same kind of object, kept apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    Secret,
    Config,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }

    /// The data must be shorter than this.
    pub fn max_bytes(self) -> usize {
        match self {
            ObjectKind::Secret => MAX_SECRET_BYTES,
            ObjectKind::Config => MAX_CONFIG_BYTES,
        }
    }

    /// Where a relative target is, in the task's view.
    pub fn base_dir(self) -> &'static str {
        match self {
            ObjectKind::Secret => SECRETS_DIR,
            ObjectKind::Config => CONFIGS_DIR,
        }
    }
}

/// The content of a secret or config. Its `Debug` shows the length only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData(Vec<u8>);

impl FileData {
    pub fn new(bytes: Vec<u8>) -> FileData {
        FileData(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Hand-written so that a stray `{:?}` never prints a secret.
impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileData(<{} bytes>)", self.0.len())
    }
}

/// A secret or config in the store. Immutable once created but for its labels, as in Docker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    /// 25 characters, like every ID of the cluster.
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: FileData,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// 1 when created, bumped by each label update: Docker's `Version.Index`, which an update
    /// quotes. (0, an object from before the field, reads as 1.)
    #[serde(default)]
    pub version: u64,
}

impl FileObject {
    /// The version the API shows and updates quote.
    pub fn version(&self) -> u64 {
        self.version.max(1)
    }
}

/// `--secret` / `--config` in a service spec: Docker's `SecretReference` and
/// `ConfigReference`. The ID is what the task's node is sent the data of; the name is what the
/// user typed, resolved by the leader when the spec was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileReference {
    pub id: String,
    pub name: String,
    /// As given (Docker keeps it so): a relative target is under the kind's
    /// [`base_dir`](ObjectKind::base_dir). Never empty in a stored spec.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl FileReference {
    /// Where the task sees the file, absolute.
    pub fn path(&self, kind: ObjectKind) -> String {
        if self.target.starts_with('/') {
            self.target.clone()
        } else {
            Path::new(kind.base_dir())
                .join(&self.target)
                .display()
                .to_string()
        }
    }
}

/// Docker's rule: `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err("name must be provided".to_string());
    };
    let valid = bytes.len() <= MAX_NAME
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(INVALID_NAME.to_string())
    }
}

/// Docker's bounds on the data, in its words.
pub fn validate_data(kind: ObjectKind, data: &[u8]) -> Result<(), String> {
    if data.is_empty() || data.len() >= kind.max_bytes() {
        return Err(format!(
            "{} data must be larger than 0 and less than {} bytes",
            kind.as_str(),
            kind.max_bytes()
        ));
    }
    Ok(())
}

/// Checks one reference's target and mode: a path without `.` or `..` (the file must land
/// where it says), not a directory shoal owns.
fn validate_reference(kind: ObjectKind, r: &FileReference) -> Result<(), String> {
    let what = kind.as_str();
    let invalid = |why: &str| {
        Err(format!(
            "invalid target {:?} for {what} {}: {why}",
            r.target, r.name
        ))
    };
    if r.target.is_empty() {
        return invalid("empty");
    }
    if r.target.contains('\0') {
        return invalid("it contains a NUL byte");
    }
    let path = r.path(kind);
    let components: Vec<Component<'_>> = Path::new(&path).components().collect();
    if components
        .iter()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || path.ends_with('/')
    {
        return invalid("a file path is needed, without '.' or '..'");
    }
    if components.len() < 2 {
        return invalid("a file path is needed");
    }
    let in_secrets = Path::new(&path).starts_with(SECRETS_DIR);
    if Path::new(&path) == Path::new(SECRETS_DIR) {
        return invalid("that is the directory of the task's secrets");
    }
    if kind == ObjectKind::Config && in_secrets {
        return invalid("/run/secrets holds the task's secrets");
    }
    if r.mode > 0o7777 {
        return Err(format!(
            "invalid mode {:o} for {what} {}: permission bits only (at most 7777, octal)",
            r.mode, r.name
        ));
    }
    Ok(())
}

/// Checks a spec's references on their own (targets, modes, conflicts), in Docker's words where
/// it has them. Whether the objects exist is the caller's to check.
pub fn validate_references(
    secrets: &[FileReference],
    configs: &[FileReference],
) -> Result<(), String> {
    let mut targets: BTreeMap<String, (ObjectKind, &str)> = BTreeMap::new();
    for (kind, references) in [(ObjectKind::Secret, secrets), (ObjectKind::Config, configs)] {
        for r in references {
            if r.name.is_empty() {
                return Err(format!("malformed {} reference", kind.as_str()));
            }
            validate_reference(kind, r)?;
            if let Some((other_kind, other)) = targets.insert(r.path(kind), (kind, &r.name)) {
                // swarmkit's words, for two of one kind.
                let kinds = if other_kind == kind {
                    kind.as_str().to_string()
                } else {
                    format!("{} and {}", other_kind.as_str(), kind.as_str())
                };
                return Err(format!(
                    "{kinds} references '{other}' and '{}' have a conflicting target: '{}'",
                    r.name, r.target
                ));
            }
        }
    }
    Ok(())
}

/// Secrets and configs created and removed: the entries of the Raft log
/// ([`super::Command::Objects`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectCommand {
    /// `secret create`, `config create`: the name must be free.
    Create {
        kind: ObjectKind,
        object: FileObject,
    },
    /// `secret rm`, `config rm`: refused while a service uses it.
    Remove { kind: ObjectKind, id: String },
    /// A label update (the only change swarmkit allows): the object's labels become `labels`,
    /// its version is bumped and `updated_at_ms` set to `at_ms` (the leader's clock). Refused
    /// as out of sequence unless the object is at `expected_version`, when one is given.
    Update {
        kind: ObjectKind,
        id: String,
        labels: BTreeMap<String, String>,
        expected_version: Option<u64>,
        at_ms: u64,
    },
}

impl ObjectCommand {
    /// Applies the command (the state is untouched when it is refused).
    pub(super) fn apply(&self, state: &mut ClusterState) -> Result<(), String> {
        match self {
            ObjectCommand::Create { kind, object } => {
                validate_name(&object.name)?;
                validate_data(*kind, object.data.as_bytes())?;
                let objects = state.objects_mut(*kind);
                if objects.values().any(|o| o.name == object.name) {
                    // swarmkit's words.
                    return Err(format!("{} {} already exists", kind.as_str(), object.name));
                }
                if objects.contains_key(&object.id) {
                    return Err(format!("{} ID {} is taken", kind.as_str(), object.id));
                }
                objects.insert(object.id.clone(), object.clone());
            }
            ObjectCommand::Remove { kind, id } => {
                // Checked here, in the replicated apply, so a service created meanwhile with a
                // reference cannot slip between a check and the removal.
                let Some(object) = state.objects(*kind).get(id) else {
                    return Err(format!("{} {id} not found", kind.as_str()));
                };
                let users = state.users_of(*kind, id);
                if !users.is_empty() {
                    return Err(in_use(*kind, &object.name, &users));
                }
                state.objects_mut(*kind).remove(id);
            }
            ObjectCommand::Update {
                kind,
                id,
                labels,
                at_ms,
                ..
            } => {
                // A stale version is the caller's (`is_stale`), checked before this.
                let Some(object) = state.objects_mut(*kind).get_mut(id) else {
                    return Err(format!("{} {id} not found", kind.as_str()));
                };
                if labels.keys().any(String::is_empty) {
                    return Err("a label's key is empty".to_string());
                }
                object.labels = labels.clone();
                object.version = object.version() + 1;
                object.updated_at_ms = *at_ms;
            }
        }
        Ok(())
    }

    /// An update quoting a version the object has left (another update applied since).
    pub(super) fn is_stale(&self, state: &ClusterState) -> bool {
        match self {
            ObjectCommand::Update {
                kind,
                id,
                expected_version: Some(expected),
                ..
            } => state
                .objects(*kind)
                .get(id)
                .is_some_and(|o| o.version() != *expected),
            _ => false,
        }
    }
}

/// swarmkit's words for an object that services reference.
pub fn in_use(kind: ObjectKind, name: &str, services: &[&str]) -> String {
    let noun = if services.len() == 1 {
        "service"
    } else {
        "services"
    };
    format!(
        "{} '{name}' is in use by the following {noun}: {}",
        kind.as_str(),
        services.join(", ")
    )
}

/// The references of one kind in a spec.
pub fn references(spec: &ServiceSpec, kind: ObjectKind) -> &[FileReference] {
    match kind {
        ObjectKind::Secret => &spec.secrets,
        ObjectKind::Config => &spec.configs,
    }
}

impl ClusterState {
    /// The secrets or the configs, by ID.
    pub fn objects(&self, kind: ObjectKind) -> &BTreeMap<String, FileObject> {
        match kind {
            ObjectKind::Secret => &self.secrets,
            ObjectKind::Config => &self.configs,
        }
    }

    fn objects_mut(&mut self, kind: ObjectKind) -> &mut BTreeMap<String, FileObject> {
        match kind {
            ObjectKind::Secret => &mut self.secrets,
            ObjectKind::Config => &mut self.configs,
        }
    }

    /// The names of the services whose spec references the object, as Docker counts them (the
    /// current spec only, not the one a rollback would go back to).
    pub fn users_of(&self, kind: ObjectKind, id: &str) -> Vec<&str> {
        self.services
            .values()
            .filter(|s| references(&s.spec, kind).iter().any(|r| r.id == id))
            .map(|s| s.spec.name.as_str())
            .collect()
    }
}

/// In the replicated apply of a service create or update: the references `spec` has that
/// `before` (the service's current and previous specs) did not must name objects that exist
/// now, with that name. (The leader checked when it accepted the spec; an object removed since
/// is caught here.) References the service had are let through, so the orchestrator's writes
/// and rollbacks never stall; a task whose object is gone fails on its node, saying which.
pub(super) fn check_new_references(
    state: &ClusterState,
    spec: &ServiceSpec,
    before: &[&ServiceSpec],
) -> Result<(), String> {
    for kind in [ObjectKind::Secret, ObjectKind::Config] {
        let known: BTreeSet<&str> = before
            .iter()
            .flat_map(|s| references(s, kind))
            .map(|r| r.id.as_str())
            .collect();
        let missing: Vec<&str> = references(spec, kind)
            .iter()
            .filter(|r| !known.contains(r.id.as_str()))
            .filter(|r| {
                state
                    .objects(kind)
                    .get(&r.id)
                    .is_none_or(|o| o.name != r.name)
            })
            .map(|r| r.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(not_found(kind, &missing));
        }
    }
    Ok(())
}

/// swarmkit's words for references to objects that do not exist.
pub fn not_found(kind: ObjectKind, names: &[&str]) -> String {
    let plural = if names.len() == 1 { "" } else { "s" };
    format!("{}{plural} not found: {}", kind.as_str(), names.join(", "))
}

/// What a node receives with its assignments: the data of the secrets and configs that its
/// tasks which may still start use, by ID. A task that runs already has its files (in its own
/// mount namespace), so its data is not sent again beat after beat, and no node ever gets the
/// data of an object none of its tasks uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFiles {
    pub secrets: BTreeMap<String, FileData>,
    pub configs: BTreeMap<String, FileData>,
}

impl TaskFiles {
    /// The files `assigned` (every task of one node) need: those of the tasks desired running
    /// that have not run yet.
    pub fn for_tasks<'a>(
        state: &ClusterState,
        assigned: impl IntoIterator<Item = &'a Task>,
    ) -> TaskFiles {
        let mut files = TaskFiles::default();
        let starting = assigned.into_iter().filter(|t| {
            t.desired_state == TaskState::Running && t.status.state < TaskState::Running
        });
        for task in starting {
            for kind in [ObjectKind::Secret, ObjectKind::Config] {
                for r in references(&task.spec, kind) {
                    if let Some(object) = state.objects(kind).get(&r.id) {
                        files
                            .map_mut(kind)
                            .insert(r.id.clone(), object.data.clone());
                    }
                }
            }
        }
        files
    }

    /// The data of the object `id` of `kind`, if it was sent.
    pub fn get(&self, kind: ObjectKind, id: &str) -> Option<&FileData> {
        match kind {
            ObjectKind::Secret => self.secrets.get(id),
            ObjectKind::Config => self.configs.get(id),
        }
    }

    fn map_mut(&mut self, kind: ObjectKind) -> &mut BTreeMap<String, FileData> {
        match kind {
            ObjectKind::Secret => &mut self.secrets,
            ObjectKind::Config => &mut self.configs,
        }
    }
}

#[cfg(test)]
mod tests;
