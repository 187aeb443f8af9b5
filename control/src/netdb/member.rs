//! A SWIM member's identity (node id, gossip address, generation), as foca, push-pull and the
//! API see it.

use std::collections::HashMap;
use std::net::SocketAddr;

use foca::Identity;
use serde::{Deserialize, Serialize};

/// A SWIM member: the node id plus where it listens. `generation` lets a restarted node (same id,
/// maybe same address) win over its previous, declared-down incarnation, and lets foca renew the
/// identity to rejoin automatically after a false "down".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Member {
    pub node_id: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Members as the API reports them, without ourselves.
pub(crate) fn members(m: &HashMap<Member, bool>) -> Vec<(String, SocketAddr, bool)> {
    let mut out: Vec<_> = m
        .iter()
        .map(|(id, alive)| (id.node_id.clone(), id.addr, *alive))
        .collect();
    out.sort();
    out
}
