//! The store's services by ID, with what the replicated apply checks a new or changed service
//! against: the names taken, the published ports and who publishes them, and the VIPs on each
//! network. At 10,000 services a `service create` walked every service for each of these
//! (the name, the ports, the VIP set), and every new task's check against the VIPs did too.
//! And the global services, which the orchestrator passes over when a node changes.
//!
//! As for [`super::Tasks`], the indexes are kept by the only ways to change the services
//! ([`Services::insert`], [`Services::remove`], [`Services::update`]), are not stored (the
//! services serialize as the map alone, as they always have), and are built again when read.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Deref,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    held::{Held, change_held},
    service::{PortProtocol, Service, ServiceMode},
};

/// Services by service ID, indexed by name, published port and VIP.
#[derive(Clone, Debug, Default)]
pub struct Services {
    by_id: BTreeMap<String, Service>,
    /// Service name -> the IDs of the services named so (one, unless a stored state says
    /// otherwise).
    by_name: HashMap<String, BTreeSet<String>>,
    /// Published port and protocol -> the IDs of the services publishing it.
    by_port: HashMap<(u16, PortProtocol), BTreeSet<String>>,
    /// The published ports of each protocol.
    ports: HashMap<PortProtocol, Held>,
    /// The VIPs (as `u32`) on each network, by network ID.
    vips: HashMap<String, Held>,
    /// The IDs of the global services.
    global: BTreeSet<String>,
}

impl Services {
    /// Adds or replaces the service `id`; returns the one it replaced.
    pub fn insert(&mut self, id: String, service: Service) -> Option<Service> {
        let old = self.remove(&id);
        self.index(&id, &service, true);
        self.by_id.insert(id, service);
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<Service> {
        let old = self.by_id.remove(id)?;
        self.index(id, &old, false);
        Some(old)
    }

    /// Changes the service `id` in place, if there is one; the indexes follow.
    pub fn update<T>(&mut self, id: &str, change: impl FnOnce(&mut Service) -> T) -> Option<T> {
        let mut service = self.remove(id)?;
        let out = change(&mut service);
        self.insert(id.to_string(), service);
        Some(out)
    }

    /// The service named `name`, if any.
    pub fn named(&self, name: &str) -> Option<&Service> {
        self.by_name
            .get(name)
            .and_then(|ids| ids.first())
            .and_then(|id| self.by_id.get(id))
    }

    /// The services that publish `port` for `protocol` (any mode).
    pub fn publishing(
        &self,
        port: u16,
        protocol: PortProtocol,
    ) -> impl Iterator<Item = &Service> + '_ {
        self.by_port
            .get(&(port, protocol))
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// The ports published for `protocol`.
    pub fn ports(&self, protocol: PortProtocol) -> &Held {
        self.ports.get(&protocol).unwrap_or(Held::empty())
    }

    /// The VIPs (as `u32`) on `network_id`.
    pub fn vips_on(&self, network_id: &str) -> &Held {
        self.vips.get(network_id).unwrap_or(Held::empty())
    }

    /// The IDs of the global services (one task on every eligible node).
    pub fn global(&self) -> impl Iterator<Item = &String> + '_ {
        self.global.iter()
    }

    /// Puts `service` (stored under `id`) in the indexes (`add`) or takes it out.
    fn index(&mut self, id: &str, service: &Service, add: bool) {
        if service.spec.mode == ServiceMode::Global {
            if add {
                self.global.insert(id.to_string());
            } else {
                self.global.remove(id);
            }
        }
        change_ids(&mut self.by_name, service.spec.name.clone(), id, add);
        for p in &service.endpoint_ports {
            change_ids(&mut self.by_port, (p.published, p.protocol), id, add);
            change_held(&mut self.ports, p.protocol, u32::from(p.published), add);
        }
        for v in &service.virtual_ips {
            let ip = u32::from(v.addr.addr());
            change_held(&mut self.vips, v.network_id.clone(), ip, add);
        }
    }
}

/// Adds `id` to the IDs under `key`, or takes it out (an emptied entry goes).
fn change_ids<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, BTreeSet<String>>,
    key: K,
    id: &str,
    add: bool,
) {
    if add {
        index.entry(key).or_default().insert(id.to_string());
    } else if let Some(ids) = index.get_mut(&key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(&key);
        }
    }
}

impl Deref for Services {
    type Target = BTreeMap<String, Service>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

/// Equal when they hold the same services (the indexes follow from them).
impl PartialEq for Services {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

impl Eq for Services {}

impl FromIterator<(String, Service)> for Services {
    fn from_iter<I: IntoIterator<Item = (String, Service)>>(services: I) -> Self {
        let mut all = Services::default();
        for (id, service) in services {
            all.insert(id, service);
        }
        all
    }
}

impl<'a> IntoIterator for &'a Services {
    type Item = (&'a String, &'a Service);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Service>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_id.iter()
    }
}

/// As the map: the stored form is what it was before the indexes.
impl Serialize for Services {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_id.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Service>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::Services;
    use crate::cluster::{
        PortConfig, PortProtocol, PublishMode, Service, ServiceMode, VirtualIp, held::lowest_free,
    };
    use crate::orchestrator::fixture::{global, new_service, replicated};

    fn service(
        id: &str,
        name: &str,
        ports: &[(u16, PortProtocol)],
        vips: &[(&str, u8)],
    ) -> Service {
        // Some names global.
        let spec = if name.ends_with(['0', '3', '6', '9']) {
            global(name)
        } else {
            replicated(name, 1)
        };
        let mut s = new_service(id, spec, 0);
        s.endpoint_ports = ports
            .iter()
            .map(|(published, protocol)| PortConfig {
                protocol: *protocol,
                target: 80,
                published: *published,
                mode: PublishMode::Ingress,
                source: Default::default(),
            })
            .collect();
        s.virtual_ips = vips
            .iter()
            .map(|(network, last)| VirtualIp {
                network_id: network.to_string(),
                addr: format!("10.0.0.{last}/24").parse().unwrap(),
            })
            .collect();
        s
    }

    /// The indexes are what a walk of every service gives.
    fn check(services: &Services) {
        let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut ports: BTreeMap<(u16, PortProtocol), BTreeSet<&str>> = BTreeMap::new();
        let mut vips: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        for (id, s) in services.iter() {
            names.entry(&s.spec.name).or_default().insert(id);
            for p in &s.endpoint_ports {
                ports
                    .entry((p.published, p.protocol))
                    .or_default()
                    .insert(id);
            }
            for v in &s.virtual_ips {
                *vips
                    .entry((&v.network_id, u32::from(v.addr.addr())))
                    .or_default() += 1;
            }
        }
        for (name, ids) in &names {
            let named = services.named(name).map(|s| s.id.as_str());
            assert_eq!(named, ids.first().copied(), "{name}");
        }
        assert_eq!(services.by_name.len(), names.len());
        for ((port, protocol), ids) in &ports {
            let publishing: BTreeSet<&str> = services
                .publishing(*port, *protocol)
                .map(|s| s.id.as_str())
                .collect();
            assert_eq!(&publishing, ids, "{port}");
            assert!(services.ports(*protocol).holders(u32::from(*port)) > 0);
        }
        assert_eq!(services.by_port.len(), ports.len());
        for protocol in [PortProtocol::Tcp, PortProtocol::Udp] {
            let first = (30000..=30010).find(|p| !ports.contains_key(&(*p, protocol)));
            let free = lowest_free(30000..=30010, &[services.ports(protocol)]);
            assert_eq!(free.map(|p| p as u16), first, "{protocol:?}");
        }
        for ((network, ip), holders) in &vips {
            assert_eq!(services.vips_on(network).holders(*ip), *holders);
        }
        let networks: BTreeSet<&str> = vips.keys().map(|(n, _)| *n).collect();
        assert_eq!(services.vips.len(), networks.len());
        let global: Vec<&String> = services
            .iter()
            .filter(|(_, s)| s.spec.mode == ServiceMode::Global)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(services.global().collect::<Vec<_>>(), global);
    }

    #[test]
    fn the_indexes_follow_every_change() {
        let mut services = Services::default();
        let mut seed: u64 = 11;
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let protocols = [PortProtocol::Tcp, PortProtocol::Udp];
        for _ in 0..2_000 {
            let id = format!("s{}", random(20));
            match random(4) {
                0 | 1 => {
                    let name = format!("web{}", random(25));
                    let ports: Vec<(u16, PortProtocol)> = (0..random(3))
                        .map(|_| (30000 + random(8) as u16, protocols[random(2) as usize]))
                        .collect();
                    let vips: Vec<(&str, u8)> = (0..random(3))
                        .map(|_| (["a", "b"][random(2) as usize], 2 + random(6) as u8))
                        .collect();
                    services.insert(id.clone(), service(&id, &name, &ports, &vips));
                }
                2 => {
                    services.remove(&id);
                }
                _ => {
                    let name = format!("web{}", random(25));
                    services.update(&id, |s| {
                        s.spec.mode = if random(2) == 0 {
                            ServiceMode::Global
                        } else {
                            ServiceMode::Replicated { replicas: 1 }
                        };
                        s.spec.name = name;
                        s.endpoint_ports.pop();
                        s.virtual_ips.pop();
                    });
                }
            }
            check(&services);
        }
        assert!(!services.is_empty());
    }

    #[test]
    fn stored_as_the_map_alone_and_indexed_again_when_read() {
        let services: Services = [("a", "web", 30000, 2), ("b", "api", 30001, 3)]
            .into_iter()
            .map(|(id, name, port, vip)| {
                let s = service(id, name, &[(port, PortProtocol::Tcp)], &[("net", vip)]);
                (id.to_string(), s)
            })
            .collect();
        let map: BTreeMap<String, Service> = services
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let encoded = crate::format::to_cbor(&services).unwrap();
        assert_eq!(encoded, crate::format::to_cbor(&map).unwrap());
        let read: Services = crate::format::from_cbor(&encoded).unwrap();
        assert_eq!(read, services);
        assert_eq!(read.named("api").map(|s| s.id.as_str()), Some("b"));
        check(&read);
    }
}
