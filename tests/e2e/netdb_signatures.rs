//! Network DB entry signatures with real agents: the managers record the public key of every
//! certificate they issue (`swarm init`, admission, renewal on promotion) and send all of them to
//! every node with the heartbeat answer, which each node's network DB checks entries against.
//! Forgery itself is tested with real DB instances in `control/src/netdb/tests.rs` (a real agent
//! cannot be made to forge); that entries still flow between agents, signed, is what the
//! `overlay`, `dns` and `vip` tests see.

use std::{collections::BTreeMap, time::Duration};

use shoal_control::{
    cluster::gossip::GossipConfig,
    pki::{NodeCredentials, certified_key},
};
use shoal_tests::{Cluster, wait_until};

/// The key node `i`'s certificate certifies, from its saved credentials.
fn certified(cluster: &Cluster, i: usize) -> Result<Vec<u8>, String> {
    let dir = cluster.nodes[i].state_dir().join("swarm");
    let creds = NodeCredentials::load(&dir)
        .map_err(|e| format!("node{}: {e}", i + 1))?
        .ok_or_else(|| format!("node{}: no credentials", i + 1))?;
    certified_key(&creds.cert_pem).map_err(|e| format!("node{}: {e}", i + 1))
}

/// The node keys node `i` last got from the leader (its saved gossip settings).
fn distributed(cluster: &Cluster, i: usize) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let path = cluster.nodes[i].state_dir().join("gossip.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: GossipConfig =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config.node_keys.into_iter().collect())
}

/// Every node holds every node's certified key, and no other.
fn everyone_has_every_key(cluster: &Cluster, ids: &[String]) -> Result<(), String> {
    let want: BTreeMap<String, Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Ok((id.clone(), certified(cluster, i)?)))
        .collect::<Result<_, String>>()?;
    for i in 0..ids.len() {
        let got = distributed(cluster, i)?;
        if got != want {
            return Err(format!(
                "node{} holds keys of {:?} (some stale?), want {:?}",
                i + 1,
                got.keys(),
                want.keys()
            ));
        }
    }
    Ok(())
}

#[test]
fn managers_distribute_every_certified_node_key_and_follow_renewals() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();

    // --- 1. the first manager's key (certificate issued at `swarm init`) and the workers'
    //        (issued at admission) reach every node
    wait_until(
        Duration::from_secs(20),
        "every node's certified key on every node",
        || everyone_has_every_key(&cluster, &ids),
    );

    // --- 2. promotion renews node2's certificate with a new key pair: every node learns the
    //        new key, and nobody keeps the old one
    let before = certified(&cluster, 1).unwrap();
    let out = cluster.nodes[0].cli(&["node", "promote", &cluster.nodes[1].name]);
    assert!(
        out.status.success(),
        "node promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "node2's renewed key on every node",
        || {
            if certified(&cluster, 1)? == before {
                return Err("node2's certificate not renewed yet".into());
            }
            everyone_has_every_key(&cluster, &ids)
        },
    );
    // --- 3. and node2's network DB signs with the new key from then on
    wait_until(
        Duration::from_secs(15),
        "node2's network DB to switch to its renewed key",
        || {
            let log =
                std::fs::read_to_string(cluster.nodes[1].log_path()).map_err(|e| e.to_string())?;
            if log.contains("network DB entries signed with the node's current key") {
                Ok(())
            } else {
                Err(cluster.nodes[1].log_tail())
            }
        },
    );
}
