//! Services and tasks: the desired state (`ServiceSpec`) and its instances (`Task`), as kept
//! in Raft. Vocabulary and defaults follow Docker's swarm mode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the user asked for: `service create` / `service update`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// The task's command line (argv), run by the exec driver.
    pub command: Vec<String>,
    /// `-e KEY=VALUE`, in order.
    pub env: Vec<(String, String)>,
    /// `--mount`: binds, volumes and tmpfs, in order.
    pub mounts: Vec<Mount>,
    pub mode: ServiceMode,
    /// `--constraint`, all of which must hold on a node.
    pub constraints: Vec<Constraint>,
    /// `--network`: IDs of the overlay networks every task attaches to, in order (eth0, eth1,
    /// ...). Names are resolved when the spec is accepted, so a renamed or re-created network
    /// never silently changes what a running service is on.
    pub networks: Vec<String>,
    /// `--endpoint-mode`: how the service's name resolves on its networks.
    pub endpoint_mode: EndpointMode,
    pub restart: RestartPolicy,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub stop_grace_ms: u64,
    /// Bumped by `service update --force` so tasks are replaced even if nothing else changed.
    pub force_update: u64,
    /// `-p`/`--publish`, as asked (`published` 0: any free port, allocated in the replicated
    /// apply). Ingress-mode ports attach every task to the `ingress` network too.
    pub ports: Vec<PortConfig>,
    /// `--label`: the service's own labels (Docker's `Spec.Labels`), not the task's: changing
    /// them restarts nothing. (`#[serde(default)]` on the fields below: task specs an older
    /// agent saved have none.)
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--network name=NET,alias=A`: by network ID (one of `networks`), names the embedded DNS
    /// answers like the service's own name (and `tasks.<alias>`), on that network only.
    #[serde(default)]
    pub network_aliases: BTreeMap<String, Vec<String>>,
    /// `--workdir`: the task's working directory, absolute; empty: `/`.
    #[serde(default)]
    pub workdir: String,
    /// `--user USER[:GROUP]`: names or numeric IDs, resolved on the task's node; empty: root.
    #[serde(default)]
    pub user: String,
    /// `--hostname`: the task's UTS hostname, with `{{.Service.Name}}`-style placeholders
    /// (see [`super::template`]) expanded on the node; empty: the task ID.
    #[serde(default)]
    pub hostname: String,
    /// `--stop-signal`, as typed (see [`super::signal`]); empty: SIGTERM.
    #[serde(default)]
    pub stop_signal: String,
    /// `--replicas-max-per-node`: the scheduler puts at most this many of the service's tasks
    /// on one node (replicated mode); 0: no limit.
    #[serde(default)]
    pub max_replicas_per_node: u64,
    /// `--secret`: by ID (and name), what each task finds in its own tmpfs at
    /// `/run/secrets/<target>` (see [`super::objects`]).
    #[serde(default)]
    pub secrets: Vec<super::objects::FileReference>,
    /// `--config`: by ID (and name), files each task sees at their targets, read-only.
    #[serde(default)]
    pub configs: Vec<super::objects::FileReference>,
    /// `--health-cmd` and the rest: what the agent runs in each task to tell it is healthy
    /// (and ready for traffic); `None`: no check (readiness by listening socket).
    #[serde(default)]
    pub healthcheck: Option<super::health::HealthCheck>,
    /// How a Docker Engine API client split `command` into Image, Command and Args: display
    /// only (the tasks run `command`), so a spec read back is the one sent.
    #[serde(default)]
    pub command_shape: Option<CommandShape>,
    /// `--limit-*` and `--reserve-*`: what each task may use (enforced in its cgroup on the
    /// node) and what the scheduler sets aside for it on its node.
    #[serde(default, with = "crate::format::since_schema_2")]
    pub resources: Resources,
}

/// A task's resources, Docker's `Resources` (`NanoCPUs`: 10^-9 CPU). 0: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `--limit-cpu`: a CFS quota of this many CPUs per period.
    pub limit_nano_cpus: u64,
    /// `--limit-memory`: beyond it the kernel's OOM killer ends the task.
    pub limit_memory_bytes: u64,
    /// `--limit-pids`: processes and threads at once.
    pub limit_pids: u64,
    /// `--reserve-cpu`: set aside on the task's node by the scheduler.
    pub reserve_nano_cpus: u64,
    /// `--reserve-memory`: set aside by the scheduler, and the task's soft limit.
    pub reserve_memory_bytes: u64,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// Docker's split of a task's argv ([`ServiceSpec::command_shape`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandShape {
    /// `ContainerSpec.Image` as given.
    pub image: String,
    /// How many leading words of `command` were `ContainerSpec.Command`.
    pub command_len: u32,
}

impl ServiceSpec {
    /// Whether the tasks join the routing mesh (`ingress`): any port published in ingress mode.
    pub fn needs_ingress(&self) -> bool {
        self.ports.iter().any(|p| p.mode == PublishMode::Ingress)
    }
}

/// A published port: Docker's `PortConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: PortProtocol,
    /// The port the tasks listen on.
    pub target: u16,
    /// The port every node (ingress) or the task's node (host) accepts; 0 in a spec: any.
    pub published: u16,
    pub mode: PublishMode,
    /// Ingress mode: what the task sees as its peer (host mode always sees the client).
    #[serde(default, with = "crate::format::since_schema_2")]
    pub source: PortSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// Docker's publish modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublishMode {
    /// The routing mesh: every node accepts the port and balances it over all tasks.
    Ingress,
    /// Only the nodes running a task accept the port, for their own task(s).
    Host,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

/// Whose address a task behind an ingress-mode port sees as its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortSource {
    /// The client's own address and port, also when another node received the connection
    /// (its answers go back through that node). shoal's default, beyond Swarm (moby#25526).
    #[default]
    Client,
    /// The receiving node's address on `ingress` (source NAT), as Swarm's routing mesh does:
    /// for tasks that must not see outside addresses, or that answer them some other way.
    Snat,
}

impl PortSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PortSource::Client => "client",
            PortSource::Snat => "snat",
        }
    }
}

/// Docker's endpoint modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointMode {
    /// The service name resolves to one virtual IP per network, load-balanced to the tasks.
    #[default]
    Vip,
    /// No virtual IP: the service name resolves to the task IPs (DNS round robin).
    Dnsrr,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

/// A vip-mode service's virtual IP on one of its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub network_id: String,
    /// The address with the subnet's prefix length (Docker shows `10.0.0.2/24`).
    pub addr: ipnet::Ipv4Net,
}

/// `--mount`: what a task sees at `target`, in its own mount namespace only. Shoal runs no
/// images, so every target is an existing path of the host that the mount covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Task specs saved before mounts had kinds held binds only.
    #[serde(default)]
    pub kind: MountKind,
    /// Bind: an absolute path of the host. Volume: the volume's name; empty for an anonymous
    /// volume, which the task's node names when it starts the task. Tmpfs: empty.
    pub source: String,
    pub target: String,
    pub readonly: bool,
    /// Tmpfs only (zero otherwise).
    #[serde(default)]
    pub tmpfs: TmpfsOptions,
}

/// Docker's mount types that make sense without an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MountKind {
    /// A path of the host.
    #[default]
    Bind,
    /// A named volume of the task's node (Docker's `local` driver): a directory under the
    /// agent's state dir, created on first use and kept when the task goes.
    Volume,
    /// A tmpfs private to the task.
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// Docker's `TmpfsOptions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    /// Size limit in bytes; 0: the kernel's default (half of the RAM).
    pub size_bytes: u64,
    /// Permission bits of the tmpfs root; 0: Docker's default, 1777.
    pub mode: u32,
}

impl TmpfsOptions {
    /// Docker's default mode of a tmpfs root: everyone writes, only owners delete.
    pub const DEFAULT_MODE: u32 = 0o1777;

    /// The mode the tmpfs root gets.
    pub fn effective_mode(&self) -> u32 {
        if self.mode == 0 {
            Self::DEFAULT_MODE
        } else {
            self.mode
        }
    }
}

/// Why a volume name is refused: Docker's rule for its `local` driver, in Docker's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVolumeName {
    #[error("volume name is too short, names should be at least two alphanumeric characters")]
    TooShort,
    #[error(
        "{0:?} includes invalid characters for a local volume name, only \"{VOLUME_NAME_CHARS}\" \
         are allowed. If you intended to pass a host directory, use absolute path"
    )]
    InvalidCharacters(String),
    /// A volume is a directory: its name must fit in one path component.
    #[error("volume name is too long: {0} bytes, at most {MAX_VOLUME_NAME}")]
    TooLong(usize),
}

/// What a volume name may hold, as Docker prints it: a letter or digit, then at least one more
/// of these or `_`, `.`, `-`.
pub const VOLUME_NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";
/// Longest volume name: a file name (NAME_MAX).
pub const MAX_VOLUME_NAME: usize = 255;

/// Docker's `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` (so never `.`, `..` or a path).
pub fn validate_volume_name(name: &str) -> Result<(), InvalidVolumeName> {
    let bytes = name.as_bytes();
    if bytes.len() == 1 {
        return Err(InvalidVolumeName::TooShort);
    }
    let valid = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.len() >= 2
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(InvalidVolumeName::InvalidCharacters(name.to_owned()));
    }
    if bytes.len() > MAX_VOLUME_NAME {
        return Err(InvalidVolumeName::TooLong(bytes.len()));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    /// One task on every eligible node.
    Global,
}

/// `node.role==manager`, `node.labels.zone!=b`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub equal: bool,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintKey {
    Role,
    Hostname,
    NodeId,
    Label(String),
}

/// As the user writes it: `node.labels.zone!=b`.
impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            ConstraintKey::Role => "node.role".to_string(),
            ConstraintKey::Hostname => "node.hostname".to_string(),
            ConstraintKey::NodeId => "node.id".to_string(),
            ConstraintKey::Label(label) => format!("node.labels.{label}"),
        };
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{key}{op}{}", self.value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0: unlimited.
    pub max_attempts: u64,
    /// Window in which attempts are counted; 0: forever.
    pub window_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at a time; 0: all at once.
    pub parallelism: u64,
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    /// How long a new task must run to count as a success.
    pub monitor_ms: u64,
    /// Fraction of failed tasks tolerated, in thousandths.
    pub max_failure_ratio_milli: u64,
    pub order: UpdateOrder,
}

/// A service in the store: its spec, the previous one (for rollback), and its update state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub spec: ServiceSpec,
    /// Increments on every spec change; tasks record the version they run.
    pub version: u64,
    pub previous_spec: Option<ServiceSpec>,
    pub update_status: Option<UpdateStatus>,
    /// One per network of the spec in vip mode, none in dnsrr mode; allocated when the
    /// service is created or updated (in the replicated apply, so no two services get one).
    pub virtual_ips: Vec<VirtualIp>,
    /// The spec's ports with every published port decided (Docker's `Endpoint.Ports`):
    /// allocated in the replicated apply, like the VIPs, so no two services get the same.
    pub endpoint_ports: Vec<PortConfig>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub message: String,
    pub started_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// swarmkit's name of the state (`UpdateStatus.State` in Docker's JSON, events).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }
}

/// Task states, in Docker's order: a task only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Whether the task has stopped for good.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

/// What the task's node last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub message: String,
    /// Why it failed or was rejected, for the ERROR column.
    pub error: String,
    pub exit_code: Option<i32>,
    pub timestamp_ms: u64,
    /// Running tasks of a service with a health check: what the last checks said.
    #[serde(default)]
    pub health: Option<super::health::Health>,
}

/// One instance of a service on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    /// Replicated services: the slot (1-based). Global services: 0.
    pub slot: u64,
    /// The node it runs on; empty while pending (no eligible node).
    pub node_id: String,
    /// The service version whose spec the task runs.
    pub service_version: u64,
    pub spec: ServiceSpec,
    /// One per network of the spec, in the same order, with the address the leader allocated.
    /// Empty until allocated; the orchestrator never assigns a task to a node before that.
    pub networks: Vec<super::NetworkAttachment>,
    /// What the orchestrator wants: Running, or Shutdown to stop it.
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub created_at_ms: u64,
}

impl Task {
    /// Whether the task holds a place on its node (counted, its reservations held): wanted
    /// running, assigned there, not stopped. A global task Pending on its node is not there
    /// yet.
    pub fn occupies_node(&self) -> bool {
        self.desired_state == TaskState::Running
            && !self.status.state.is_terminal()
            && self.status.state >= TaskState::Assigned
            && !self.node_id.is_empty()
    }

    /// `<service>.<slot>.<task-id>` (replicated) or `<service>.<node-id>.<task-id>` (global).
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}.{}", self.spec.name, self.slot, self.id)
        } else {
            format!("{}.{}.{}", self.spec.name, self.node_id, self.id)
        }
    }

    /// The names the embedded DNS resolves to this task: its full name, then the short
    /// `<service>.<slot>` (`<service>.<node-id>` for global services).
    pub fn dns_names(&self) -> Vec<String> {
        let full = self.name();
        let short = full
            .rsplit_once('.')
            .map_or_else(|| full.clone(), |(s, _)| s.to_string());
        vec![full, short]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_dockers_rule() {
        for good in ["ab", "data", "my-vol_1.2", "0x", &"a".repeat(255)] {
            assert_eq!(validate_volume_name(good), Ok(()), "{good:?}");
        }
        assert_eq!(validate_volume_name("a"), Err(InvalidVolumeName::TooShort));
        for bad in [
            "", "-ab", ".ab", "..", "a/b", "/abs", "a b", "é1", "_x", "ab\0",
        ] {
            assert!(
                matches!(
                    validate_volume_name(bad),
                    Err(InvalidVolumeName::InvalidCharacters(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            validate_volume_name(&"a".repeat(256)),
            Err(InvalidVolumeName::TooLong(256))
        );
        assert_eq!(
            InvalidVolumeName::InvalidCharacters("a/b".into()).to_string(),
            "\"a/b\" includes invalid characters for a local volume name, only \
             \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
             directory, use absolute path"
        );
    }

    #[test]
    fn mounts_saved_before_kinds_read_as_binds() {
        let old = r#"{"source":"/srv","target":"/data","readonly":true}"#;
        let mount: Mount = serde_json::from_str(old).unwrap();
        assert_eq!(
            mount,
            Mount {
                kind: MountKind::Bind,
                source: "/srv".into(),
                target: "/data".into(),
                readonly: true,
                tmpfs: TmpfsOptions::default(),
            }
        );
        assert_eq!(TmpfsOptions::default().effective_mode(), 0o1777);
    }
}
