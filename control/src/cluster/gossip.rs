//! Network-DB encryption keys, kept in Raft and handed to every node with its heartbeats, and
//! what a node needs to gossip: the keys, where its peers are and their entry-signing keys.
//!
//! Rotation follows swarmkit's key manager: keys are kept oldest first, at most [`KEEP`], and
//! nodes send with the second newest. A new key is thus accepted everywhere one rotation before
//! anyone encrypts with it, and the oldest is still accepted one rotation after nobody sends
//! with it any more: no node ever receives a packet under a key it does not have yet.

use std::net::IpAddr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// How many keys are kept (and accepted).
pub const KEEP: usize = 3;

/// One AES-256-GCM key of the network DB.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKey {
    pub key: [u8; 32],
    /// When it was added (Unix milliseconds); keys are ordered by it.
    pub created_at_ms: u64,
}

impl std::fmt::Debug for GossipKey {
    /// Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey(created {})", self.created_at_ms)
    }
}

impl GossipKey {
    /// A fresh key from the thread-local CSPRNG.
    pub fn generate(created_at_ms: u64) -> GossipKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        GossipKey { key, created_at_ms }
    }
}

/// Adds `key` as the newest and forgets the oldest beyond [`KEEP`].
pub fn rotate(keys: &mut Vec<GossipKey>, key: GossipKey) {
    keys.push(key);
    keys.sort_by_key(|k| k.created_at_ms);
    let excess = keys.len().saturating_sub(KEEP);
    keys.drain(..excess);
}

/// Index of the key to send with: the second newest, or the only one.
pub fn primary_index(len: usize) -> usize {
    len.saturating_sub(2)
}

/// What a node needs to take part in the network DB, sent with every heartbeat answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipConfig {
    /// Oldest first; send with [`primary_index`].
    pub keys: Vec<GossipKey>,
    /// Addresses of the cluster's nodes (their gossip port is the cluster-wide 7946, or
    /// whatever every agent was started with).
    pub peers: Vec<(String, IpAddr)>,
    /// Each node's certified public key (node ID, key): the network DB takes a node's entries
    /// only if signed with it.
    #[serde(default)]
    pub node_keys: Vec<(String, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_three_and_sends_with_the_second_newest() {
        let mut keys = vec![GossipKey::generate(1)];
        assert_eq!(primary_index(keys.len()), 0);
        rotate(&mut keys, GossipKey::generate(2));
        // The new key is accepted but not yet used.
        assert_eq!(keys[primary_index(keys.len())].created_at_ms, 1);
        rotate(&mut keys, GossipKey::generate(3));
        assert_eq!(keys[primary_index(keys.len())].created_at_ms, 2);
        rotate(&mut keys, GossipKey::generate(4));
        let ages: Vec<u64> = keys.iter().map(|k| k.created_at_ms).collect();
        assert_eq!(ages, vec![2, 3, 4]);
        assert_eq!(keys[primary_index(keys.len())].created_at_ms, 3);
        assert_ne!(keys[0].key, keys[1].key, "keys are random");
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let key = GossipKey {
            key: [0xab; 32],
            created_at_ms: 7,
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}
