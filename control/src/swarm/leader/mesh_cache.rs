//! Each node's routing mesh, built, encoded and digested once per change of what it is made of
//! rather than on every beat: at 10,000 services building it walks every service, and encoding
//! and hashing it are milliseconds, which a leader answering hundreds of nodes' beats a second
//! cannot pay each time. The key is the state machine's mesh generation
//! ([`Generations::mesh`](crate::raft::store::Generations::mesh)), which only the commands
//! that may change the mesh move on; task reports and placements leave it.
//!
//! Every node is told the same mesh but for its own address on `ingress`, the mesh's last
//! field: the shared part is encoded once, with no address, and a node's copy is that encoding
//! with the null at its end replaced by the node's address. Its digest continues a SHA-256 of
//! the shared bytes, kept at the point the address starts. So a change costs one encoding and
//! one hash whatever the number of nodes, a beat a few microseconds, and a node's bytes are
//! put together only when it needs them.
//!
//! The last few meshes are kept too: a node that has one of them (its beat names it by its
//! digest) is sent the change from it ([`MeshCache::delta_to`], `cluster::mesh_delta`),
//! computed once per pair of generations, rather than the whole mesh.

use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError},
};

use sha2::{Digest, Sha256};

use crate::{
    cluster::{ClusterState, mesh::RoutingMesh, mesh_delta::MeshDelta},
    format,
    swarm::codec::{CodecError, encode_mesh, encode_mesh_delta},
};

/// How many meshes before the current one are kept to send changes from.
const RECENT: usize = 8;

/// What every node is told alike, encoded once.
#[derive(Debug)]
struct SharedMesh {
    /// The state machine's mesh generation it was built for.
    generation: u64,
    /// The mesh with no `node_addr`.
    mesh: RoutingMesh,
    /// Its encoding without the last byte (the null of `node_addr`).
    head: Vec<u8>,
    /// SHA-256 of `head`, to be continued with a node's address.
    hashed_head: Sha256,
}

/// The routing mesh as one node is told it.
#[derive(Debug)]
pub struct NodeMesh {
    shared: Arc<SharedMesh>,
    /// The address's encoding (CBOR null when the node has none).
    addr: Vec<u8>,
    node_addr: Option<Ipv4Addr>,
    /// [`mesh_digest`](crate::swarm::codec::mesh_digest) of [`NodeMesh::encoded`]: what the
    /// answer names the mesh by.
    pub digest: Vec<u8>,
}

impl NodeMesh {
    /// [`encode_mesh`] of [`NodeMesh::mesh`]: what the beat's answer carries.
    pub fn encoded(&self) -> Vec<u8> {
        [self.shared.head.as_slice(), &self.addr].concat()
    }

    /// The mesh itself, for the leader's own node.
    pub fn mesh(&self) -> RoutingMesh {
        RoutingMesh {
            node_addr: self.node_addr,
            ..self.shared.mesh.clone()
        }
    }
}

impl SharedMesh {
    /// The digest of this mesh as told to a node whose address encodes as `addr`.
    fn digest_with(&self, addr: &[u8]) -> Vec<u8> {
        let mut hasher = self.hashed_head.clone();
        hasher.update(addr);
        hasher.finalize().to_vec()
    }
}

/// Kept by a manager for the state machine it reads (one per Raft store: generations of
/// different stores do not compare).
#[derive(Default)]
pub struct MeshCache(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    /// The shared part of the newest generation built.
    current: Option<Arc<SharedMesh>>,
    /// Those of the generations before, newest first, at most [`RECENT`].
    recent: VecDeque<Arc<SharedMesh>>,
    /// The changes computed, by (from, to) generation, with no `node_addr`.
    deltas: HashMap<(u64, u64), Arc<MeshDelta>>,
}

impl MeshCache {
    /// `node_id`'s mesh in `state`, whose mesh generation is `generation`: from the shared
    /// part kept for that generation, or built again.
    pub fn for_node(
        &self,
        state: &ClusterState,
        generation: u64,
        node_id: &str,
    ) -> Result<NodeMesh, CodecError> {
        let shared = self.shared(state, generation)?;
        let node_addr = state.ingress_addrs.get(node_id).copied();
        let addr = format::to_cbor(&node_addr).map_err(|source| CodecError::Encode {
            what: "routing mesh",
            source,
        })?;
        Ok(NodeMesh {
            digest: shared.digest_with(&addr),
            shared,
            addr,
            node_addr,
        })
    }

    /// The change to `to` from the mesh a node has, named by `digest` (its beat's), encoded
    /// for that node: when that mesh is one of the last [`RECENT`] as told to it (with the
    /// address it has now). `None`: the node is to get the whole mesh.
    pub fn delta_to(&self, to: &NodeMesh, digest: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
        if digest.is_empty() || digest == to.digest {
            return Ok(None);
        }
        let delta = {
            let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let from = kept
                .recent
                .iter()
                .chain(&kept.current)
                .find(|old| {
                    old.generation != to.shared.generation && old.digest_with(&to.addr) == digest
                })
                .cloned();
            let Some(from) = from else {
                return Ok(None);
            };
            let key = (from.generation, to.shared.generation);
            let delta = kept
                .deltas
                .entry(key)
                .or_insert_with(|| Arc::new(MeshDelta::between(&from.mesh, &to.shared.mesh)));
            Arc::clone(delta)
        };
        let delta = MeshDelta {
            node_addr: to.node_addr,
            ..(*delta).clone()
        };
        encode_mesh_delta(&delta).map(Some)
    }

    fn shared(&self, state: &ClusterState, generation: u64) -> Result<Arc<SharedMesh>, CodecError> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = &kept.current
            && shared.generation == generation
        {
            return Ok(Arc::clone(shared));
        }
        let mesh = RoutingMesh {
            node_addr: None,
            ..RoutingMesh::for_node(state, "")
        };
        let mut head = encode_mesh(&mesh)?;
        // The last field's null: `node_addr` is the mesh's last field.
        head.pop();
        let shared = Arc::new(SharedMesh {
            generation,
            hashed_head: Sha256::new_with_prefix(&head),
            head,
            mesh,
        });
        if let Some(before) = kept.current.replace(Arc::clone(&shared)) {
            kept.recent.push_front(before);
            kept.recent.truncate(RECENT);
        }
        // Changes to an older generation are of no more use.
        kept.deltas.clear();
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cluster::{PortConfig, PortProtocol, PublishMode, VirtualIp, mesh::ServiceVip},
        swarm::codec::mesh_digest,
    };

    fn state(ingress_addrs: &[(&str, [u8; 4])]) -> ClusterState {
        let mut sim = crate::orchestrator::fixture::Sim::new(0);
        sim.create("web", crate::orchestrator::fixture::replicated("web", 1));
        sim.state.services.update("web", |web| {
            web.virtual_ips = vec![VirtualIp {
                network_id: "ingress".to_string(),
                addr: "10.255.0.5/16".parse().unwrap(),
            }];
            web.endpoint_ports = vec![PortConfig {
                protocol: PortProtocol::Tcp,
                target: 80,
                published: 30080,
                mode: PublishMode::Ingress,
                source: Default::default(),
            }];
        });
        for (node, addr) in ingress_addrs {
            sim.state
                .ingress_addrs
                .insert(node.to_string(), (*addr).into());
        }
        sim.state
    }

    /// What the leader sent before the shared part was kept: the node's mesh encoded whole.
    fn encoded_whole(state: &ClusterState, node: &str) -> Vec<u8> {
        encode_mesh(&RoutingMesh::for_node(state, node)).unwrap()
    }

    #[test]
    fn a_nodes_copy_is_its_whole_mesh_encoded_and_digested() {
        let cache = MeshCache::default();
        let state = state(&[("n1", [10, 255, 0, 2]), ("n2", [10, 255, 0, 3])]);
        // n3 has no ingress address (yet).
        for node in ["n1", "n2", "n3"] {
            let mesh = cache.for_node(&state, 0, node).unwrap();
            assert_eq!(mesh.mesh(), RoutingMesh::for_node(&state, node), "{node}");
            assert_eq!(mesh.encoded(), encoded_whole(&state, node), "{node}");
            assert_eq!(mesh.digest, mesh_digest(&mesh.encoded()), "{node}");
            assert_eq!(
                crate::swarm::codec::decode_mesh(&mesh.encoded()).unwrap(),
                RoutingMesh::for_node(&state, node)
            );
        }
        let digest = |node| cache.for_node(&state, 0, node).unwrap().digest;
        assert_ne!(
            digest("n1"),
            digest("n2"),
            "each node's own address is in its mesh"
        );
        assert_eq!(
            RoutingMesh::for_node(&state, "n1").vips,
            vec![ServiceVip {
                network_id: "ingress".to_string(),
                addr: [10, 255, 0, 5].into()
            }]
        );
    }

    #[test]
    fn the_shared_part_is_kept_until_the_generation_moves() {
        let cache = MeshCache::default();
        let first = state(&[("n1", [10, 255, 0, 2])]);
        let n1 = cache.for_node(&first, 0, "n1").unwrap();
        // The same generation: the shared part is kept, even if handed another state (only a
        // node's own address is read again).
        let mut moved = state(&[("n1", [10, 255, 0, 2])]);
        moved.services = Default::default();
        let kept = cache.for_node(&moved, 0, "n1").unwrap();
        assert!(Arc::ptr_eq(&kept.shared, &n1.shared));
        assert_eq!(kept.digest, n1.digest);
        // A new generation: built again from the state given.
        let again = cache.for_node(&moved, 1, "n1").unwrap();
        assert_eq!(again.mesh(), RoutingMesh::for_node(&moved, "n1"));
        assert_eq!(again.encoded(), encoded_whole(&moved, "n1"));
        assert_ne!(again.digest, n1.digest);
    }

    /// `state` with one more service publishing `port`.
    fn with_service(mut state: ClusterState, name: &str, port: u16) -> ClusterState {
        let mut service = crate::orchestrator::fixture::new_service(
            name,
            crate::orchestrator::fixture::replicated(name, 1),
            0,
        );
        service.endpoint_ports = vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target: 80,
            published: port,
            mode: PublishMode::Ingress,
            source: Default::default(),
        }];
        state.services.insert(name.to_string(), service);
        state
    }

    #[test]
    fn a_node_with_a_recent_mesh_gets_the_change_and_it_gives_the_new_mesh() {
        let cache = MeshCache::default();
        let addrs = [("n1", [10, 255, 0, 2]), ("n2", [10, 255, 0, 3])];
        let mut states = vec![state(&addrs)];
        let mut told = vec![cache.for_node(&states[0], 0, "n1").unwrap()];
        for generation in 1..=RECENT as u64 + 1 {
            let name = format!("s{generation}");
            let last = states.last().unwrap().clone();
            let next = with_service(last, &name, 30000 + generation as u16);
            told.push(cache.for_node(&next, generation, "n1").unwrap());
            states.push(next);
        }
        let newest = told.last().unwrap();
        // From each of the last RECENT meshes: the change, which gives the newest mesh.
        for (i, old) in told.iter().enumerate().rev().skip(1).take(RECENT) {
            let delta = cache
                .delta_to(newest, &old.digest)
                .unwrap()
                .expect("a change");
            let delta = crate::swarm::codec::decode_mesh_delta(&delta).unwrap();
            let next = delta.apply(&old.mesh());
            assert_eq!(next, newest.mesh(), "from generation {i}");
            assert_eq!(mesh_digest(&encode_mesh(&next).unwrap()), newest.digest);
            assert!(
                delta.services.len() < next.services.len(),
                "a change, not the mesh"
            );
        }
        // Older than that, unknown, none, or the node's own: no change, the whole mesh.
        assert_eq!(cache.delta_to(newest, &told[0].digest).unwrap(), None);
        assert_eq!(cache.delta_to(newest, &[7; 32]).unwrap(), None);
        assert_eq!(cache.delta_to(newest, &[]).unwrap(), None);
        assert_eq!(cache.delta_to(newest, &newest.digest).unwrap(), None);
        // Another node's digest of an old mesh is not this node's: no change for n1.
        let n2_old = {
            let cache = MeshCache::default();
            cache
                .for_node(&states[RECENT], RECENT as u64, "n2")
                .unwrap()
        };
        assert_eq!(cache.delta_to(newest, &n2_old.digest).unwrap(), None);
    }
}
