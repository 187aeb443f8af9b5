//! The normalized model a stack's Compose files load into: what `stack deploy` turns into
//! services, networks, volumes, secrets and configs.
//!
//! Every file has been merged, interpolated and validated by the time a [`Stack`] exists. Short
//! and long syntaxes are one shape here. Where the Compose file may leave a setting out and
//! Docker fills a default when it creates the service, the field is an `Option` (or empty) and
//! its doc names Docker's default: the converter applies it, so that an unset value and a value
//! equal to the default stay distinguishable (`docker stack config` prints them differently).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

/// A stack as described by its Compose files, before names are prefixed with the stack name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stack {
    /// The `version` key of the files (`3.13`, Docker's latest 3.x, when absent or `3`).
    pub version: String,
    pub services: BTreeMap<String, Service>,
    /// Top-level `networks`. A service with no `networks` goes on the stack's `default`
    /// network, which needs no entry here (Docker creates `STACK_default`).
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

/// One `services.NAME` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Service {
    pub name: String,
    /// Informational for shoal, which runs programs rather than images (Docker's API shows the
    /// program where it shows an image).
    pub image: Option<String>,
    /// Shell-form strings are already split as Docker splits them (shlex).
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `environment` after `env_file` and lookups: `None` is a variable named without a value
    /// (`- FOO`) that the environment did not have either.
    pub environment: BTreeMap<String, Option<String>>,
    /// `env_file` as written (their variables are already in `environment`).
    pub env_file: Vec<String>,
    pub ports: Vec<Port>,
    /// Networks in the order written: the task's eth0, eth1, ...
    pub networks: Vec<ServiceNetwork>,
    pub deploy: Deploy,
    pub healthcheck: Option<Healthcheck>,
    pub configs: Vec<FileRef>,
    pub secrets: Vec<FileRef>,
    pub volumes: Vec<Mount>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub stop_signal: Option<String>,
    /// Docker's default: 10s.
    pub stop_grace_period: Option<Duration>,
    /// Container labels (`deploy.labels` are the service's).
    pub labels: BTreeMap<String, String>,
}

impl Service {
    /// The argv a task runs: `entrypoint` then `command`, as Docker combines them.
    pub fn program(&self) -> Vec<String> {
        let mut argv = self.entrypoint.clone().unwrap_or_default();
        argv.extend(self.command.iter().flatten().cloned());
        argv
    }
}

/// A published port (`ports:`), short syntax expanded (a range is one entry per port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// The port the tasks listen on.
    pub target: u16,
    /// The port the nodes accept; `None`: any free port, chosen when the service is created.
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub mode: PublishMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishMode {
    /// The routing mesh: every node accepts the port.
    Ingress,
    /// Only nodes running a task accept it, for their own tasks.
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

/// A service's attachment to a network (`networks:` list or map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// The key in the top-level `networks` (or `default`).
    pub name: String,
    /// Extra DNS names of the tasks on this network.
    pub aliases: Vec<String>,
}

/// `deploy:`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deploy {
    /// Docker's default: replicated.
    pub mode: Option<DeployMode>,
    /// Docker's default: 1 (replicated mode only).
    pub replicas: Option<u64>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub placement: Placement,
    /// Docker's default: vip.
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployMode {
    Replicated,
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

/// `update_config` or `rollback_config`. Docker's defaults: parallelism 1, delay 0,
/// failure_action pause (rollback: pause), monitor 5s, max_failure_ratio 0, order stop-first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UpdateConfig {
    /// 0: all at once.
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f32>,
    pub order: Option<UpdateOrder>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// `restart_policy`. Docker's defaults: condition any, delay 5s, unlimited attempts, no window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

/// `deploy.resources`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub limits: Option<ResourceSpec>,
    pub reservations: Option<ResourceSpec>,
}

/// Limits or reservations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSpec {
    /// As written (`"0.5"`): Docker keeps the text and parses it when it creates the service;
    /// see [`ResourceSpec::nano_cpus`].
    pub cpus: Option<String>,
    /// Bytes (`512M` parsed with Docker's binary units).
    pub memory: Option<u64>,
    /// Limits only.
    pub pids: Option<i64>,
}

impl ResourceSpec {
    /// `cpus` in billionths of a CPU, as the swarm API wants them (validated at load).
    pub fn nano_cpus(&self) -> Option<u64> {
        self.cpus.as_deref().and_then(crate::size::parse_nano_cpus)
    }
}

/// `deploy.placement`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// As written: `node.role==manager`, `node.labels.zone != b`.
    pub constraints: Vec<String>,
    /// Docker's default: unlimited.
    pub max_replicas_per_node: Option<u64>,
}

/// `healthcheck:`. Docker's defaults: interval 30s, timeout 30s, retries 3, start period 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` (a string `test` becomes CMD-SHELL) or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub disable: bool,
}

/// A service's use of a secret or config (`secrets:`/`configs:`, short or long syntax).
/// Docker's defaults: target = source (secrets under `/run/secrets/`, configs at `/<target>`),
/// uid and gid "0", mode 0o444.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// The key in the top-level `secrets`/`configs`.
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

/// A service's `volumes:` entry, short syntax expanded to the long one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// Volume: its key in the top-level `volumes` (`None`: anonymous). Bind: an absolute host
    /// path (relative ones are resolved against the first file's directory, `~` with HOME).
    pub source: Option<String>,
    /// Absolute path inside the task.
    pub target: String,
    pub read_only: bool,
    /// `volume.nocopy`: do not copy the image's files into a new volume.
    pub nocopy: bool,
    /// `bind.propagation` (rprivate, shared, ...).
    pub propagation: Option<String>,
    /// `tmpfs.size` in bytes.
    pub tmpfs_size: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// A top-level `networks.NAME` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// The cluster-wide name: an external network's real name (defaults to the key), or a
    /// stack network's fixed name instead of `STACK_KEY`.
    pub name: Option<String>,
    /// Already exists; the stack neither creates nor removes it.
    pub external: bool,
    /// Docker's default for stacks: overlay.
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipam_driver: Option<String>,
    /// `ipam.config[].subnet`, validated as CIDRs.
    pub subnets: Vec<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
}

/// A top-level `volumes.NAME` entry (node-local volumes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    /// An external volume's real name (defaults to the key), or a fixed name.
    pub name: Option<String>,
    pub external: bool,
    /// Docker's default: local.
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A top-level `secrets.NAME` or `configs.NAME` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileObject {
    /// An external object's real name (defaults to the key), or a fixed name.
    pub name: Option<String>,
    pub external: bool,
    /// The content, for non-external objects: an absolute path (relative ones are resolved
    /// against the first file's directory).
    pub file: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}
