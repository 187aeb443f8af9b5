//! Each node's routing mesh, built, encoded and digested once per change of what it is made of
//! rather than on every beat: at 10,000 services building it walks every service and encoding
//! and hashing it are milliseconds, which a leader answering hundreds of nodes' beats a second
//! cannot pay each time. The key is the state machine's mesh generation
//! ([`StateReader::read_meshed`](crate::raft::store::StateReader::read_meshed)), which only
//! the commands that may change the mesh move on; task reports and placements leave it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::{
    cluster::{ClusterState, mesh::RoutingMesh},
    swarm::codec::{CodecError, encode_mesh, mesh_digest},
};

/// The routing mesh as one node is told it.
#[derive(Debug)]
pub struct NodeMesh {
    pub mesh: RoutingMesh,
    /// [`encode_mesh`] of it: what the beat's answer carries.
    pub encoded: Vec<u8>,
    /// [`mesh_digest`] of `encoded`: what the answer names it by.
    pub digest: Vec<u8>,
}

/// The meshes built for one generation of the state.
#[derive(Default)]
struct Generation {
    number: u64,
    /// The part every node is told alike (`node_addr` unset), built at the first beat.
    shared: Option<Arc<RoutingMesh>>,
    by_node: HashMap<String, Arc<NodeMesh>>,
}

/// Kept by a manager for the state machine it reads (one per Raft store: generations of
/// different stores do not compare).
#[derive(Default)]
pub struct MeshCache(Mutex<Generation>);

impl MeshCache {
    /// `node_id`'s mesh in `state`, whose mesh generation is `generation`: the one kept when
    /// the generation is the one it was built for, else built again. A node's own part (its
    /// `ingress` address) is added to the shared part, which is built once per generation.
    pub fn for_node(
        &self,
        state: &ClusterState,
        generation: u64,
        node_id: &str,
    ) -> Result<Arc<NodeMesh>, CodecError> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.number != generation || kept.shared.is_none() {
            *kept = Generation {
                number: generation,
                shared: Some(Arc::new(RoutingMesh::for_node(state, ""))),
                by_node: HashMap::new(),
            };
        }
        if let Some(mesh) = kept.by_node.get(node_id) {
            return Ok(Arc::clone(mesh));
        }
        let mut mesh = kept.shared.as_deref().cloned().unwrap_or_default();
        mesh.node_addr = state.ingress_addrs.get(node_id).copied();
        let encoded = encode_mesh(&mesh)?;
        let built = Arc::new(NodeMesh {
            digest: mesh_digest(&encoded),
            encoded,
            mesh,
        });
        kept.by_node.insert(node_id.to_string(), Arc::clone(&built));
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ingress_addrs: &[(&str, [u8; 4])]) -> ClusterState {
        let mut state = ClusterState::default();
        for (node, addr) in ingress_addrs {
            state.ingress_addrs.insert(node.to_string(), (*addr).into());
        }
        state
    }

    #[test]
    fn a_node_gets_the_mesh_built_for_it_and_the_same_one_until_the_generation_moves() {
        let cache = MeshCache::default();
        let first = state(&[("n1", [10, 255, 0, 2]), ("n2", [10, 255, 0, 3])]);
        let n1 = cache.for_node(&first, 0, "n1").unwrap();
        assert_eq!(n1.mesh, RoutingMesh::for_node(&first, "n1"));
        assert_eq!(n1.encoded, encode_mesh(&n1.mesh).unwrap());
        assert_eq!(n1.digest, mesh_digest(&n1.encoded));
        let n2 = cache.for_node(&first, 0, "n2").unwrap();
        assert_eq!(n2.mesh, RoutingMesh::for_node(&first, "n2"));
        assert_ne!(
            n1.digest, n2.digest,
            "each node's own address is in its mesh"
        );

        // The same generation: what was built is kept, even if handed another state.
        let moved = state(&[("n1", [10, 255, 0, 9])]);
        assert!(Arc::ptr_eq(&cache.for_node(&moved, 0, "n1").unwrap(), &n1));
        // A new generation: built again from the state given.
        let again = cache.for_node(&moved, 1, "n1").unwrap();
        assert_eq!(again.mesh, RoutingMesh::for_node(&moved, "n1"));
        assert_ne!(again.digest, n1.digest);
    }
}
