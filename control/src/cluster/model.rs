//! The objects of the cluster model. All are serde types: they travel in Raft log entries and
//! snapshots (postcard), and are shown by the CLI.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

/// A node's role, as in Swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

/// Whether the scheduler may place tasks on a node, as in Swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Availability {
    /// Takes new tasks.
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move elsewhere.
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }
}

/// The cluster itself: created once by `swarm init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster ID (25 characters, like a node ID).
    pub id: String,
    /// The cluster CA certificate, PEM. Its SHA-256 digest is the first part of join tokens.
    pub ca_cert_pem: String,
    /// The CA's private key, PEM. Replicated to managers only (it lives in the Raft store,
    /// which only managers hold), so any manager can issue certificates.
    pub ca_key_pem: String,
    /// Secret part of the worker join token.
    pub worker_secret: String,
    /// Secret part of the manager join token.
    pub manager_secret: String,
    /// Address pools overlay subnets are allocated from (`--default-addr-pool`).
    pub default_addr_pools: Vec<String>,
    /// Prefix length of each allocated subnet (`--default-addr-pool-mask-length`).
    pub subnet_size: u8,
    /// Heartbeat period; a node silent for 3 periods is Down.
    pub heartbeat_period_ms: u64,
    /// Unix time of `swarm init`, seconds.
    pub created_at: u64,
    /// Network-DB keys, oldest first (see [`super::gossip`]).
    pub gossip_keys: Vec<super::gossip::GossipKey>,
    /// Autolock: the unlock key (`SWMKEY-1-...`) that seals each manager's data key and so its
    /// Raft store and TLS key at rest; `None` when autolock is off. Kept here so that every
    /// manager learns it, and a rotation reaches them all.
    pub unlock_key: Option<String>,
    /// Bumped by every change to the swarm's settings (a [`super::Command::Settings`]: cert
    /// expiry, autolock and its key, join tokens, the root CA): Docker's `Version.Index` of the
    /// swarm, which `swarm update` quotes so that it does not undo a change it has not seen.
    /// (`serde(default)` says what an absent value means; the postcard store itself carries no
    /// schema version, see the README's upgrades.)
    #[serde(default)]
    pub version: u64,
    /// Unix time of the last change to the settings, ms; 0 until one.
    #[serde(default)]
    pub updated_at_ms: u64,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node ID, as kept in the node's state dir.
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    /// Where the node's API listens for other nodes (advertise address, port 2377).
    pub addr: SocketAddr,
    /// VXLAN outer source address.
    pub data_path_addr: IpAddr,
    /// Unix time the node joined, seconds.
    pub created_at: u64,
    /// What the node has for tasks, as its agent reported when it joined.
    #[serde(default, with = "crate::format::since_schema_2")]
    pub resources: NodeResources,
}

/// A node's capacity for tasks (Docker's `NodeDescription.Resources`); 0: unknown (an older
/// agent), which the scheduler treats as unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// Everything the Raft state machine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// `None` until `swarm init` is applied.
    pub cluster: Option<ClusterInfo>,
    /// Nodes by node ID.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Services by service ID.
    pub services: super::Services,
    /// Tasks by task ID, current and history.
    pub tasks: super::Tasks,
    /// Overlay networks by network ID.
    pub networks: BTreeMap<String, super::network::Network>,
    /// Each node's address on the `ingress` network (Swarm's ingress-sbox endpoint): the
    /// source the routing mesh gives the connections it forwards to tasks. Allocated in the
    /// replicated apply when a node joins or `ingress` is created; freed with the node.
    #[serde(default)]
    pub ingress_addrs: BTreeMap<String, std::net::Ipv4Addr>,
    /// Each node's public key (node ID -> the key its certificate certifies: Ed25519, or an
    /// uncompressed P-256 point for certificates issued before), recorded when the managers issue the certificate: the network DB checks a
    /// node's entries against it, so no other member can forge them.
    #[serde(default)]
    pub node_keys: BTreeMap<String, Vec<u8>>,
    /// Removed nodes whose certificates are still within their validity (node ID -> unix
    /// seconds when the last one expires): the 2377 servers refuse them at the handshake.
    /// (Calls are refused anyway, since only nodes in `nodes` are authorized; the list shuts
    /// the door before TLS is even finished, and outlives the node's record.)
    #[serde(default)]
    pub revoked: BTreeMap<String, u64>,
    /// Secrets by ID (see [`super::objects`]): their data is sent only to the nodes whose
    /// tasks use them, and never comes back out of the API.
    #[serde(default)]
    pub secrets: BTreeMap<String, super::objects::FileObject>,
    /// Configs by ID.
    #[serde(default)]
    pub configs: BTreeMap<String, super::objects::FileObject>,
    /// The CA's settings (`--cert-expiry`) and a root rotation under way (see
    /// [`super::certs`]).
    #[serde(default)]
    pub ca: super::certs::CaState,
    /// The last certificate issued to each node (node ID -> its fingerprint, expiry, issuer):
    /// a root rotation is over when every node reports using one of the new CA.
    #[serde(default)]
    pub node_certs: BTreeMap<String, super::certs::IssuedCert>,
}

impl ClusterState {
    /// Whether `node_id` uses (by the fingerprint it `reported`) the certificate last issued
    /// to it, and that certificate comes from the CA with digest `issuer` (see
    /// [`super::certs`]).
    pub fn holds_cert_from(&self, node_id: &str, reported: Option<&str>, issuer: &str) -> bool {
        self.node_certs
            .get(node_id)
            .is_some_and(|c| c.issuer == issuer && reported == Some(c.fingerprint.as_str()))
    }
}

/// The Raft member ID of a node: openraft needs a `Copy` integer, our IDs are strings. The
/// first 8 bytes of the ID's SHA-256; collisions among a cluster's managers are negligible
/// (and checked when a manager joins).
pub fn raft_id(node_id: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(node_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}
