//! The network DB's wire types: an endpoint (a task's attachment to an overlay network) and one
//! signed, versioned record of it, as broadcasts and push-pull carry them; and the changes
//! subscribers see. Shared by the table, which orders and stores records, and `sign`, which
//! signs and verifies them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A task's attachment to an overlay network, as replicated between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    /// The task id.
    pub endpoint_id: String,
    pub node_id: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The VTEP (data-path address) of the node running the task.
    pub vtep: Ipv4Addr,
    /// The service's name, and its VIP on this network (vip mode; `None` in dnsrr mode): what
    /// the embedded DNS answers the service name with.
    pub service: String,
    pub vip: Option<Ipv4Addr>,
    /// The task's DNS names: `<service>.<slot>.<task-id>` first, then `<service>.<slot>`.
    pub aliases: Vec<String>,
    /// The service's aliases on this network (`--network name=NET,alias=A`): answered like
    /// `service` (and `tasks.<alias>`), on this network only.
    pub service_aliases: Vec<String>,
    /// Withdrawn before its task stops: out of DNS and of every load balancer's round robin,
    /// while the connections it has, and its FDB and ARP entries, stay until it is deleted.
    pub draining: bool,
}

/// What subscribers see: only changes to live entries of joined networks of alive owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Endpoint),
    Remove(Endpoint),
}

/// One versioned entry as sent on the wire (broadcasts and push-pull).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub endpoint: Endpoint,
    /// The node that wrote this version (the only node allowed to change it).
    pub owner: String,
    pub clock: u64,
    pub deleted: bool,
    /// The owner's signature over all of the above (see `sign`).
    pub signature: Vec<u8>,
}

impl Record {
    pub(crate) fn version(&self) -> (u64, &str) {
        (self.clock, &self.owner)
    }
    pub(crate) fn key(&self) -> (String, String) {
        (
            self.endpoint.network_id.clone(),
            self.endpoint.endpoint_id.clone(),
        )
    }
}
