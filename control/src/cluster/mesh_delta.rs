//! What changed from one routing mesh to the next: sent instead of the whole mesh to a node
//! that has one of the last few (`swarm/leader/mesh_cache.rs`). At 10,000 services the mesh
//! is hundreds of kilobytes, and every change (a service created, a port published) sent it
//! whole to every node. The node applies the change to the mesh it has and checks the result
//! against the digest the leader names; on any difference it asks for the whole mesh.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{
    mesh::{PublishedService, RoutingMesh, ServiceVip},
    network::Network,
};

/// The change from one [`RoutingMesh`] to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshDelta {
    /// The new mesh's `ingress` (small: always sent).
    pub ingress: Option<Network>,
    /// The services that publish no more, by name.
    pub services_gone: Vec<String>,
    /// The services that publish now, or publish otherwise than before.
    pub services: Vec<PublishedService>,
    /// The VIPs gone (one entry per copy gone).
    pub vips_gone: Vec<ServiceVip>,
    /// The VIPs new (one entry per copy new).
    pub vips_new: Vec<ServiceVip>,
    /// The node's own address on `ingress` in the new mesh.
    pub node_addr: Option<Ipv4Addr>,
}

impl MeshDelta {
    /// What turns `old` into `new` (`node_addr` is `new`'s).
    pub fn between(old: &RoutingMesh, new: &RoutingMesh) -> MeshDelta {
        let before: BTreeMap<&str, &PublishedService> =
            old.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let after: BTreeMap<&str, &PublishedService> =
            new.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let services_gone = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
        let services = after
            .iter()
            .filter(|(name, s)| before.get(*name) != Some(*s))
            .map(|(_, s)| (*s).clone())
            .collect();
        // VIPs as counted copies: new minus old.
        let mut counts: BTreeMap<&ServiceVip, i64> = BTreeMap::new();
        for vip in &new.vips {
            *counts.entry(vip).or_default() += 1;
        }
        for vip in &old.vips {
            *counts.entry(vip).or_default() -= 1;
        }
        let copies = |sign: i64| {
            counts
                .iter()
                .filter(move |(_, n)| n.signum() == sign)
                .flat_map(|(vip, n)| std::iter::repeat_n((*vip).clone(), n.unsigned_abs() as usize))
                .collect::<Vec<_>>()
        };
        MeshDelta {
            ingress: new.ingress.clone(),
            services_gone,
            services,
            vips_gone: copies(-1),
            vips_new: copies(1),
            node_addr: new.node_addr,
        }
    }

    /// `mesh` with this change made, in the order the leader builds a mesh (services by
    /// name, VIPs by address). Where that order is not decided by the content (two VIPs with
    /// one address on different networks) the result may differ from the leader's in order:
    /// the digest check catches it, and the node asks for the whole mesh.
    pub fn apply(&self, mesh: &RoutingMesh) -> RoutingMesh {
        let mut services: BTreeMap<&str, &PublishedService> =
            mesh.services.iter().map(|s| (s.name.as_str(), s)).collect();
        for name in &self.services_gone {
            services.remove(name.as_str());
        }
        for s in &self.services {
            services.insert(s.name.as_str(), s);
        }
        let mut vips = mesh.vips.clone();
        for gone in &self.vips_gone {
            if let Some(i) = vips.iter().position(|v| v == gone) {
                vips.remove(i);
            }
        }
        // New ones after the kept ones of their address (a stable sort).
        vips.extend(self.vips_new.iter().cloned());
        vips.sort_by_key(|v| v.addr);
        RoutingMesh {
            ingress: self.ingress.clone(),
            services: services.into_values().cloned().collect(),
            vips,
            node_addr: self.node_addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{PortConfig, PortProtocol, PublishMode};

    fn published(name: &str, port: u16, vip: Option<[u8; 4]>) -> PublishedService {
        PublishedService {
            name: name.to_string(),
            ingress_vip: vip.map(Ipv4Addr::from),
            ports: vec![PortConfig {
                protocol: PortProtocol::Tcp,
                target: 80,
                published: port,
                mode: PublishMode::Ingress,
                source: Default::default(),
            }],
        }
    }

    fn vip(network: &str, last: u8) -> ServiceVip {
        ServiceVip {
            network_id: network.to_string(),
            addr: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    /// A mesh as the leader builds it: services by name, VIPs by address.
    fn mesh(services: Vec<PublishedService>, vips: Vec<ServiceVip>, addr: u8) -> RoutingMesh {
        let mut m = RoutingMesh {
            ingress: None,
            services,
            vips,
            node_addr: Some(Ipv4Addr::new(10, 255, 0, addr)),
        };
        m.services.sort_by(|a, b| a.name.cmp(&b.name));
        m.vips.sort_by_key(|v| v.addr);
        m
    }

    #[test]
    fn a_change_applied_to_the_old_mesh_gives_the_new_one() {
        let old = mesh(
            vec![
                published("api", 30001, Some([10, 255, 0, 9])),
                published("web", 30000, Some([10, 255, 0, 8])),
                published("db", 30002, None),
            ],
            vec![vip("a", 2), vip("a", 3), vip("b", 4)],
            2,
        );
        // web republished elsewhere, db gone, cache new; a VIP gone, two new.
        let new = mesh(
            vec![
                published("api", 30001, Some([10, 255, 0, 9])),
                published("web", 30005, Some([10, 255, 0, 8])),
                published("cache", 30003, None),
            ],
            vec![vip("a", 2), vip("b", 4), vip("a", 5), vip("b", 1)],
            3,
        );
        let delta = MeshDelta::between(&old, &new);
        assert_eq!(delta.services_gone, ["db"]);
        let changed: Vec<&str> = delta.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(changed, ["cache", "web"], "api is unchanged: not sent");
        assert_eq!(delta.vips_gone, [vip("a", 3)]);
        assert_eq!(delta.vips_new, [vip("a", 5), vip("b", 1)]);
        assert_eq!(delta.apply(&old), new);
        // No change: an empty delta, which gives the same mesh.
        let none = MeshDelta::between(&new, &new);
        assert!(none.services.is_empty() && none.vips_new.is_empty() && none.vips_gone.is_empty());
        assert_eq!(none.apply(&new), new);
    }

    /// Random meshes: the change between any two, applied to the first, gives the second.
    #[test]
    fn random_changes_round_trip() {
        let mut seed: u64 = 3;
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut random_mesh = || {
            let services = (0..random(6))
                .map(|i| published(&format!("s{i}"), 30000 + random(3) as u16, None))
                .collect();
            // Distinct addresses: ties in address are the one case left to the digest.
            let mut lasts: Vec<u8> = (0..random(8)).map(|_| random(20) as u8).collect();
            lasts.sort();
            lasts.dedup();
            let vips = lasts.into_iter().map(|l| vip("a", l)).collect();
            mesh(services, vips, random(3) as u8)
        };
        for _ in 0..500 {
            let (old, new) = (random_mesh(), random_mesh());
            let delta = MeshDelta::between(&old, &new);
            assert_eq!(delta.apply(&old), new, "{old:?} -> {new:?}");
        }
    }
}
