//! Address and identifier allocation: overlay subnets from the cluster's address pools,
//! gateways, VNIs, task addresses, service VIPs, published ports and the nodes' addresses on
//! `ingress`. Pure functions of the cluster state, so every decision is made once (by the
//! leader, or in the replicated apply) and then replicated.
//!
//! Task addresses are taken from the bottom of a subnet and VIPs from the top: a VIP is
//! allocated in the apply of a service change while the leader may be addressing a batch of
//! tasks from an older state, and the two only meet when the subnet is nearly full (the apply
//! of `PutTasks` catches that case).

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

use crate::cluster::{
    ClusterState, EndpointMode, NetworkAttachment, PortConfig, Service, ServiceSpec, Task,
    VirtualIp,
    network::{FIRST_USER_VNI, MAX_VNI},
};

/// Where published ports are allocated when none is asked for: Swarm's range.
pub const PUBLISHED_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("invalid subnet {0:?}: not an IPv4 CIDR")]
    BadSubnet(String),
    #[error("invalid subnet {subnet}: host bits are set (did you mean {network}?)")]
    HostBits { subnet: String, network: Ipv4Net },
    #[error("invalid subnet {0}: it leaves no room for task addresses (at most /29)")]
    TooSmall(Ipv4Net),
    #[error("invalid gateway {0:?}: not an IPv4 address")]
    BadGateway(String),
    #[error("no matching subnet for gateway {gateway}: it is not a host address of {subnet}")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error(
        "Pool overlaps with other one on this address space: {subnet} overlaps network {network} ({existing})"
    )]
    Overlap {
        subnet: Ipv4Net,
        network: String,
        existing: Ipv4Net,
    },
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network ({pools} exhausted in /{size} subnets)"
    )]
    PoolsExhausted { pools: String, size: u8 },
    #[error("no VXLAN network identifier left")]
    VnisExhausted,
    #[error("no IP address left on network {network} ({subnet})")]
    AddressesExhausted { network: String, subnet: Ipv4Net },
    #[error("network {0} no longer exists")]
    NetworkGone(String),
    #[error("port '{port}' is already in use by service '{service}' ({id}) as a published port")]
    PortInUse {
        port: u16,
        service: String,
        id: String,
    },
    #[error("port {port}/{protocol} is published twice")]
    PortTwice { port: u16, protocol: &'static str },
    #[error("no free port left to publish in {first}-{last}")]
    PortsExhausted { first: u16, last: u16 },
}

/// Checks a user-chosen subnet (and gateway) against the existing networks.
pub fn validate_subnet(
    state: &ClusterState,
    subnet: &str,
    gateway: Option<&str>,
) -> Result<(Ipv4Net, Ipv4Addr), AllocError> {
    let net: Ipv4Net = subnet
        .trim()
        .parse()
        .map_err(|_| AllocError::BadSubnet(subnet.to_string()))?;
    if net.addr() != net.network() {
        return Err(AllocError::HostBits {
            subnet: subnet.to_string(),
            network: net.trunc(),
        });
    }
    if net.prefix_len() > 29 {
        return Err(AllocError::TooSmall(net));
    }
    if let Some((name, existing)) = overlapping(state, net) {
        return Err(AllocError::Overlap {
            subnet: net,
            network: name,
            existing,
        });
    }
    let gateway = match gateway {
        None | Some("") => first_host(net),
        Some(g) => {
            let g: Ipv4Addr = g
                .trim()
                .parse()
                .map_err(|_| AllocError::BadGateway(g.to_string()))?;
            if !net.contains(&g) || g == net.network() || g == net.broadcast() {
                return Err(AllocError::GatewayOutside {
                    gateway: g,
                    subnet: net,
                });
            }
            g
        }
    };
    Ok((net, gateway))
}

/// The first free `/size` subnet of the cluster's pools, and its first host as the gateway.
pub fn allocate_subnet(
    state: &ClusterState,
    pools: &[String],
    size: u8,
) -> Result<(Ipv4Net, Ipv4Addr), AllocError> {
    for pool in pools {
        let Ok(pool) = pool.parse::<Ipv4Net>() else {
            continue;
        };
        let Ok(candidates) = pool.subnets(size) else {
            continue;
        };
        for candidate in candidates {
            if overlapping(state, candidate).is_none() {
                return Ok((candidate, first_host(candidate)));
            }
        }
    }
    Err(AllocError::PoolsExhausted {
        pools: pools.join(", "),
        size,
    })
}

/// The smallest unused VNI from [`FIRST_USER_VNI`].
pub fn allocate_vni(state: &ClusterState) -> Result<u32, AllocError> {
    let used: std::collections::BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    (FIRST_USER_VNI..=MAX_VNI)
        .find(|vni| !used.contains(vni))
        .ok_or(AllocError::VnisExhausted)
}

/// Gives each task of `tasks` that has no addresses yet one address per network of its spec.
/// Returns the tasks that could not get them, with why; those keep no addresses.
///
/// Addresses never held by a stored task are preferred, so a new task does not take the address
/// of one that just stopped while its endpoint may still be withdrawing on other nodes; only
/// when those run out are addresses of finished tasks reused. Allocations made earlier in the
/// same batch count as held.
pub fn address_tasks(state: &ClusterState, tasks: &mut [Task]) -> Vec<(String, AllocError)> {
    let mut held: HashMap<&str, HashSet<Ipv4Addr>> = HashMap::new();
    let mut live: HashMap<&str, HashSet<Ipv4Addr>> = HashMap::new();
    for task in state.tasks.values() {
        for a in &task.networks {
            held.entry(a.network.id.as_str())
                .or_default()
                .insert(a.addr.addr());
            if !task.status.state.is_terminal() {
                live.entry(a.network.id.as_str())
                    .or_default()
                    .insert(a.addr.addr());
            }
        }
    }
    for (network_id, vip) in service_vips(state).chain(node_ingress_addrs(state)) {
        held.entry(network_id).or_default().insert(vip);
        live.entry(network_id).or_default().insert(vip);
    }
    let mut batch: HashMap<String, HashSet<Ipv4Addr>> = HashMap::new();
    let mut failed = Vec::new();
    for task in tasks.iter_mut() {
        let networks = attachment_networks(state, &task.spec);
        if !task.networks.is_empty() || networks.is_empty() {
            continue;
        }
        let mut attachments = Vec::with_capacity(networks.len());
        for id in &networks {
            let Some(network) = state.networks.get(id) else {
                failed.push((task.id.clone(), AllocError::NetworkGone(id.clone())));
                break;
            };
            let taken = |ip: &Ipv4Addr, strict: bool| {
                let sets = if strict { &held } else { &live };
                sets.get(id.as_str()).is_some_and(|s| s.contains(ip))
                    || batch.get(id).is_some_and(|s| s.contains(ip))
            };
            let free = |strict: bool| {
                network
                    .subnet
                    .hosts()
                    .find(|ip| *ip != network.gateway && !taken(ip, strict))
            };
            let Some(ip) = free(true).or_else(|| free(false)) else {
                failed.push((
                    task.id.clone(),
                    AllocError::AddressesExhausted {
                        network: network.name.clone(),
                        subnet: network.subnet,
                    },
                ));
                break;
            };
            let vip = state.services.get(&task.service_id).and_then(|s| {
                s.virtual_ips
                    .iter()
                    .find(|v| v.network_id == *id)
                    .map(|v| v.addr.addr())
            });
            attachments.push(NetworkAttachment {
                network: network.clone(),
                addr: Ipv4Net::new(ip, network.subnet.prefix_len()).unwrap_or(network.subnet),
                vip,
            });
        }
        if attachments.len() == networks.len() {
            for a in &attachments {
                batch
                    .entry(a.network.id.clone())
                    .or_default()
                    .insert(a.addr.addr());
            }
            task.networks = attachments;
        }
    }
    failed
}

/// Every service's VIPs, as (network ID, address).
fn service_vips(state: &ClusterState) -> impl Iterator<Item = (&str, Ipv4Addr)> {
    state.services.values().flat_map(|s| {
        s.virtual_ips
            .iter()
            .map(|v| (v.network_id.as_str(), v.addr.addr()))
    })
}

/// The nodes' addresses on `ingress`, as (network ID, address).
fn node_ingress_addrs(state: &ClusterState) -> impl Iterator<Item = (&str, Ipv4Addr)> {
    let ingress = state.networks.values().find(|n| n.ingress);
    ingress
        .into_iter()
        .flat_map(|n| state.ingress_addrs.values().map(|a| (n.id.as_str(), *a)))
}

/// Keeps [`ClusterState::ingress_addrs`] right: one address on `ingress` per node (the lowest
/// free one: not the gateway, not a VIP, not held by any stored task or other node), none for
/// nodes that left. Nothing before `ingress` exists. A node that finds no free address keeps
/// none; its agent then serves no published port and logs why.
pub fn assign_ingress_addrs(state: &mut ClusterState) {
    let nodes: HashSet<&String> = state.nodes.keys().collect();
    let gone: Vec<String> = state
        .ingress_addrs
        .keys()
        .filter(|id| !nodes.contains(id))
        .cloned()
        .collect();
    for id in gone {
        state.ingress_addrs.remove(&id);
    }
    let Some(ingress) = state.networks.values().find(|n| n.ingress).cloned() else {
        return;
    };
    let missing: Vec<String> = state
        .nodes
        .keys()
        .filter(|id| !state.ingress_addrs.contains_key(*id))
        .cloned()
        .collect();
    for id in missing {
        let mut taken: HashSet<Ipv4Addr> = state.ingress_addrs.values().copied().collect();
        taken.extend(
            service_vips(state)
                .filter(|(n, _)| *n == ingress.id)
                .map(|(_, ip)| ip),
        );
        taken.extend(
            state
                .tasks
                .values()
                .flat_map(|t| &t.networks)
                .filter(|a| a.network.id == ingress.id)
                .map(|a| a.addr.addr()),
        );
        if let Some(ip) = ingress
            .subnet
            .hosts()
            .find(|ip| *ip != ingress.gateway && !taken.contains(ip))
        {
            state.ingress_addrs.insert(id, ip);
        }
    }
}

/// Gives `service` one VIP per network of its spec in vip mode (none in dnsrr mode): VIPs on
/// networks it keeps stay as they are, new networks get the highest free address. Free means
/// not the gateway, not another service's VIP, and not held by any stored task.
pub fn assign_vips(state: &ClusterState, service: &mut Service) -> Result<(), AllocError> {
    if service.spec.endpoint_mode == EndpointMode::Dnsrr {
        service.virtual_ips.clear();
        return Ok(());
    }
    let networks = attachment_networks(state, &service.spec);
    let mut vips = Vec::with_capacity(networks.len());
    for id in &networks {
        if let Some(kept) = service.virtual_ips.iter().find(|v| v.network_id == *id) {
            vips.push(kept.clone());
            continue;
        }
        let network = state
            .networks
            .get(id)
            .ok_or_else(|| AllocError::NetworkGone(id.clone()))?;
        let mut taken: HashSet<Ipv4Addr> = service_vips(state)
            .filter(|(n, _)| *n == id.as_str())
            .map(|(_, ip)| ip)
            .collect();
        taken.extend(
            state
                .tasks
                .values()
                .flat_map(|t| &t.networks)
                .filter(|a| a.network.id == *id)
                .map(|a| a.addr.addr()),
        );
        taken.extend(
            node_ingress_addrs(state)
                .filter(|(n, _)| *n == id.as_str())
                .map(|(_, ip)| ip),
        );
        let ip = network
            .subnet
            .hosts()
            .rev()
            .find(|ip| *ip != network.gateway && !taken.contains(ip))
            .ok_or_else(|| AllocError::AddressesExhausted {
                network: network.name.clone(),
                subnet: network.subnet,
            })?;
        vips.push(VirtualIp {
            network_id: id.clone(),
            addr: Ipv4Net::new(ip, network.subnet.prefix_len()).unwrap_or(network.subnet),
        });
    }
    service.virtual_ips = vips;
    Ok(())
}

/// The networks a service's tasks attach to, in order: the spec's, then `ingress` when a port
/// is published in ingress mode (the routing mesh reaches the tasks there, as in Docker).
pub fn attachment_networks(state: &ClusterState, spec: &ServiceSpec) -> Vec<String> {
    let mut networks = spec.networks.clone();
    if spec.needs_ingress()
        && let Some(ingress) = state.networks.values().find(|n| n.ingress)
    {
        networks.push(ingress.id.clone());
    }
    networks
}

/// Decides `service`'s published ports (`endpoint_ports`) from its spec: a port asked for must
/// not be another service's (any mode: an ingress port is taken on every node, and a host
/// port could meet another service's on any node); a port left open keeps what the service had
/// for the same target, protocol and mode, or gets the lowest free one in [`PUBLISHED_PORTS`].
pub fn assign_published_ports(
    state: &ClusterState,
    service: &mut Service,
) -> Result<(), AllocError> {
    let others: HashMap<(u16, &'static str), &Service> = state
        .services
        .values()
        .filter(|s| s.id != service.id)
        .flat_map(|s| {
            s.endpoint_ports
                .iter()
                .map(move |p| ((p.published, p.protocol.as_str()), s))
        })
        .collect();
    let asked: Vec<&PortConfig> = service
        .spec
        .ports
        .iter()
        .filter(|p| p.published != 0)
        .collect();
    for (i, p) in asked.iter().enumerate() {
        if let Some(owner) = others.get(&(p.published, p.protocol.as_str())) {
            return Err(AllocError::PortInUse {
                port: p.published,
                service: owner.spec.name.clone(),
                id: owner.id.clone(),
            });
        }
        if asked[..i]
            .iter()
            .any(|a| a.published == p.published && a.protocol == p.protocol)
        {
            return Err(AllocError::PortTwice {
                port: p.published,
                protocol: p.protocol.as_str(),
            });
        }
    }
    let mut decided: Vec<PortConfig> = Vec::with_capacity(service.spec.ports.len());
    for p in &service.spec.ports {
        if p.published != 0 {
            decided.push(*p);
            continue;
        }
        // Free: nobody else's, not asked for by this spec, not given to an earlier open port.
        let free = |port: &u16| {
            let same = |d: &PortConfig| d.published == *port && d.protocol == p.protocol;
            !others.contains_key(&(*port, p.protocol.as_str()))
                && !asked.iter().any(|a| same(a))
                && !decided.iter().any(same)
        };
        let kept = service
            .endpoint_ports
            .iter()
            .find(|e| e.target == p.target && e.protocol == p.protocol && e.mode == p.mode)
            .map(|e| e.published)
            .filter(free);
        let port = kept.or_else(|| PUBLISHED_PORTS.clone().find(free)).ok_or(
            AllocError::PortsExhausted {
                first: *PUBLISHED_PORTS.start(),
                last: *PUBLISHED_PORTS.end(),
            },
        )?;
        decided.push(PortConfig {
            published: port,
            ..*p
        });
    }
    service.endpoint_ports = decided;
    Ok(())
}

fn overlapping(state: &ClusterState, net: Ipv4Net) -> Option<(String, Ipv4Net)> {
    state
        .networks
        .values()
        .find(|n| n.subnet.contains(&net) || net.contains(&n.subnet))
        .map(|n| (n.name.clone(), n.subnet))
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{TaskState, network::Network};

    fn with_network(state: &mut ClusterState, name: &str, subnet: &str, vni: u32) {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        state.networks.insert(
            name.to_string(),
            Network {
                id: name.to_string(),
                name: name.to_string(),
                driver: "overlay".into(),
                subnet,
                gateway: first_host(subnet),
                vni,
                attachable: false,
                internal: false,
                ingress: false,
                created_at_ms: 0,
            },
        );
    }

    #[test]
    fn subnets_come_from_the_pools_in_order_and_skip_used_ones() {
        let mut state = ClusterState::default();
        let pools = vec!["10.0.0.0/8".to_string()];
        let (net, gw) = allocate_subnet(&state, &pools, 24).unwrap();
        assert_eq!(
            (net.to_string(), gw.to_string()),
            ("10.0.0.0/24".into(), "10.0.0.1".into())
        );
        with_network(&mut state, "a", "10.0.0.0/24", 4097);
        with_network(&mut state, "b", "10.0.2.0/23", 4098);
        assert_eq!(
            allocate_subnet(&state, &pools, 24).unwrap().0.to_string(),
            "10.0.1.0/24"
        );
        with_network(&mut state, "c", "10.0.1.0/24", 4099);
        assert_eq!(
            allocate_subnet(&state, &pools, 24).unwrap().0.to_string(),
            "10.0.4.0/24"
        );
    }

    #[test]
    fn exhausted_pools_say_so() {
        let mut state = ClusterState::default();
        let pools = vec!["10.9.0.0/23".to_string()];
        with_network(&mut state, "a", "10.9.0.0/24", 4097);
        with_network(&mut state, "b", "10.9.1.0/24", 4098);
        let err = allocate_subnet(&state, &pools, 24).unwrap_err();
        assert!(matches!(err, AllocError::PoolsExhausted { .. }), "{err}");
    }

    fn task_on(id: &str, networks: &[&str], state: TaskState) -> Task {
        let mut spec = crate::orchestrator::fixture::replicated("web", 1);
        spec.networks = networks.iter().map(|n| n.to_string()).collect();
        Task {
            id: id.to_string(),
            service_id: "svc".into(),
            slot: 1,
            node_id: "n1".into(),
            service_version: 1,
            spec,
            networks: Vec::new(),
            desired_state: TaskState::Running,
            status: crate::cluster::TaskStatus {
                state,
                message: String::new(),
                error: String::new(),
                exit_code: None,
                timestamp_ms: 0,
            },
            created_at_ms: 0,
        }
    }

    fn ips(task: &Task) -> Vec<String> {
        task.networks.iter().map(|a| a.addr.to_string()).collect()
    }

    #[test]
    fn task_addresses_skip_the_gateway_and_held_addresses_and_run_out_clearly() {
        let mut state = ClusterState::default();
        with_network(&mut state, "a", "10.1.0.0/29", 4097);
        with_network(&mut state, "b", "10.2.0.0/24", 4098);
        // One address per network, in the spec's order, with the subnet's prefix.
        let mut batch = vec![
            task_on("t1", &["a", "b"], TaskState::New),
            task_on("t2", &["a"], TaskState::New),
        ];
        assert!(address_tasks(&state, &mut batch).is_empty());
        assert_eq!(ips(&batch[0]), ["10.1.0.2/29", "10.2.0.2/24"]);
        assert_eq!(ips(&batch[1]), ["10.1.0.3/29"]);
        // Stored tasks hold their addresses, finished ones too while any is never used.
        for t in batch {
            state.tasks.insert(t.id.clone(), t);
        }
        state.tasks.get_mut("t2").unwrap().status.state = TaskState::Shutdown;
        let mut next = vec![task_on("t3", &["a"], TaskState::New)];
        assert!(address_tasks(&state, &mut next).is_empty());
        assert_eq!(ips(&next[0]), ["10.1.0.4/29"]);
        state.tasks.insert("t3".into(), next.remove(0));
        // 10.1.0.0/29 has hosts .1 (gateway) to .6: .5 and .6 are left, then t2's .3.
        let mut more: Vec<Task> = (4..=7)
            .map(|i| task_on(&format!("t{i}"), &["a"], TaskState::New))
            .collect();
        let failed = address_tasks(&state, &mut more);
        let got: Vec<Vec<String>> = more.iter().map(ips).collect();
        assert_eq!(
            got[..3],
            [
                vec!["10.1.0.5/29"],
                vec!["10.1.0.6/29"],
                vec!["10.1.0.3/29"]
            ]
        );
        assert!(more[3].networks.is_empty());
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "t7");
        assert!(
            failed[0]
                .1
                .to_string()
                .contains("no IP address left on network a"),
            "{}",
            failed[0].1
        );
        // A network that disappeared is an error, not a panic.
        let mut gone = vec![task_on("t8", &["zzz"], TaskState::New)];
        assert_eq!(
            address_tasks(&state, &mut gone)[0].1,
            AllocError::NetworkGone("zzz".into())
        );
    }

    fn service_on(id: &str, networks: &[&str], mode: EndpointMode) -> Service {
        let mut spec = crate::orchestrator::fixture::replicated(id, 1);
        spec.networks = networks.iter().map(|n| n.to_string()).collect();
        spec.endpoint_mode = mode;
        crate::orchestrator::fixture::new_service(id, spec, 0)
    }

    fn vips(service: &Service) -> Vec<String> {
        service
            .virtual_ips
            .iter()
            .map(|v| format!("{}={}", v.network_id, v.addr))
            .collect()
    }

    #[test]
    fn vips_come_from_the_top_are_kept_and_tasks_avoid_them() {
        let mut state = ClusterState::default();
        with_network(&mut state, "a", "10.1.0.0/29", 4097);
        with_network(&mut state, "b", "10.2.0.0/24", 4098);
        let mut web = service_on("web", &["a", "b"], EndpointMode::Vip);
        assign_vips(&state, &mut web).unwrap();
        assert_eq!(vips(&web), ["a=10.1.0.6/29", "b=10.2.0.254/24"]);
        state.services.insert(web.id.clone(), web.clone());
        // Another service gets the next one down; a dnsrr service gets none.
        let mut api = service_on("api", &["a"], EndpointMode::Vip);
        assign_vips(&state, &mut api).unwrap();
        assert_eq!(vips(&api), ["a=10.1.0.5/29"]);
        state.services.insert(api.id.clone(), api);
        let mut rr = service_on("rr", &["a"], EndpointMode::Dnsrr);
        assign_vips(&state, &mut rr).unwrap();
        assert!(rr.virtual_ips.is_empty());
        // A service keeps its VIPs on the networks it keeps, even when it is re-assigned.
        web.spec.networks = vec!["b".into()];
        assign_vips(&state, &mut web).unwrap();
        assert_eq!(vips(&web), ["b=10.2.0.254/24"]);
        // Tasks skip VIPs and carry their service's.
        let mut batch: Vec<Task> = (1..=4)
            .map(|i| {
                let mut t = task_on(&format!("t{i}"), &["a"], TaskState::New);
                t.service_id = "web".into();
                t
            })
            .collect();
        let failed = address_tasks(&state, &mut batch);
        assert_eq!(failed.len(), 1, "{failed:?}");
        let got: Vec<Vec<String>> = batch.iter().map(ips).collect();
        assert_eq!(
            got[..3],
            [["10.1.0.2/29"], ["10.1.0.3/29"], ["10.1.0.4/29"]]
        );
        assert!(batch[3].networks.is_empty(), "the subnet is full of VIPs");
        assert_eq!(
            batch[0].networks[0].vip,
            Some("10.1.0.6".parse().unwrap()),
            "a task carries its service's VIP"
        );
        // A full subnet gives a clear error for a VIP too.
        for t in batch.into_iter().take(3) {
            state.tasks.insert(t.id.clone(), t);
        }
        let mut late = service_on("late", &["a"], EndpointMode::Vip);
        let err = assign_vips(&state, &mut late).unwrap_err();
        assert!(
            err.to_string().contains("no IP address left on network a"),
            "{err}"
        );
    }

    #[test]
    fn user_subnets_and_gateways_are_checked() {
        let mut state = ClusterState::default();
        with_network(&mut state, "a", "10.10.0.0/16", 4097);
        assert!(matches!(
            validate_subnet(&state, "10.10.19.0/24", None),
            Err(AllocError::Overlap { .. })
        ));
        assert!(matches!(
            validate_subnet(&state, "10.0.0.0/8", None),
            Err(AllocError::Overlap { .. })
        ));
        assert!(matches!(
            validate_subnet(&state, "banana", None),
            Err(AllocError::BadSubnet(_))
        ));
        assert!(matches!(
            validate_subnet(&state, "10.20.0.0/33", None),
            Err(AllocError::BadSubnet(_))
        ));
        assert!(matches!(
            validate_subnet(&state, "10.20.0.1/24", None),
            Err(AllocError::HostBits { .. })
        ));
        assert!(matches!(
            validate_subnet(&state, "10.20.0.0/30", None),
            Err(AllocError::TooSmall(_))
        ));
        assert!(matches!(
            validate_subnet(&state, "10.20.0.0/24", Some("10.21.0.1")),
            Err(AllocError::GatewayOutside { .. })
        ));
        assert!(matches!(
            validate_subnet(&state, "10.20.0.0/24", Some("10.20.0.255")),
            Err(AllocError::GatewayOutside { .. })
        ));
        let (net, gw) = validate_subnet(&state, "10.20.0.0/24", Some("10.20.0.254")).unwrap();
        assert_eq!(
            (net.to_string(), gw.to_string()),
            ("10.20.0.0/24".into(), "10.20.0.254".into())
        );
    }

    #[test]
    fn vnis_fill_gaps_from_4097() {
        let mut state = ClusterState::default();
        assert_eq!(allocate_vni(&state), Ok(4097));
        with_network(&mut state, "a", "10.1.0.0/24", 4097);
        with_network(&mut state, "b", "10.2.0.0/24", 4099);
        assert_eq!(allocate_vni(&state), Ok(4098));
    }

    #[test]
    fn every_node_gets_an_ingress_address_that_tasks_and_vips_avoid() {
        use crate::{
            cluster::{Command, CommandResponse, Role},
            orchestrator::fixture::node,
        };
        let mut state = ClusterState::default();
        for id in ["n1", "n2"] {
            state.nodes.insert(id.into(), node(id, Role::Worker));
        }
        // Before `ingress` exists there is nothing to give.
        assign_ingress_addrs(&mut state);
        assert!(state.ingress_addrs.is_empty());
        let subnet: Ipv4Net = "10.255.0.0/16".parse().unwrap();
        let ingress = Network {
            id: "ing".into(),
            name: "ingress".into(),
            driver: "overlay".into(),
            subnet,
            gateway: first_host(subnet),
            vni: 4096,
            attachable: false,
            internal: false,
            ingress: true,
            created_at_ms: 0,
        };
        assert_eq!(
            state.apply(&Command::CreateNetwork(ingress)),
            CommandResponse::Ok
        );
        let addr = |s: &ClusterState, id: &str| s.ingress_addrs.get(id).map(|a| a.to_string());
        assert_eq!(addr(&state, "n1").as_deref(), Some("10.255.0.2"));
        assert_eq!(addr(&state, "n2").as_deref(), Some("10.255.0.3"));
        // A task on ingress takes the next free one.
        let mut tasks = vec![task_on("t1", &[], TaskState::New)];
        tasks[0].spec.ports = vec![PortConfig {
            protocol: crate::cluster::PortProtocol::Tcp,
            target: 80,
            published: 8080,
            mode: crate::cluster::PublishMode::Ingress,
        }];
        assert!(address_tasks(&state, &mut tasks).is_empty());
        assert_eq!(ips(&tasks[0]), ["10.255.0.4/16"]);
        state.tasks.insert("t1".into(), tasks.remove(0));
        // A joining node gets one too, past the task's; a node that leaves frees its own.
        state.nodes.insert("n3".into(), node("n3", Role::Worker));
        assign_ingress_addrs(&mut state);
        assert_eq!(addr(&state, "n3").as_deref(), Some("10.255.0.5"));
        assert_eq!(
            state.apply(&Command::RemoveNode { id: "n1".into() }),
            CommandResponse::Ok
        );
        assert_eq!(addr(&state, "n1"), None);
        assert_eq!(state.ingress_addrs.len(), 2);
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;
    use crate::cluster::{PortProtocol, PublishMode, network::Network};

    fn port(published: u16, target: u16, protocol: PortProtocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol,
            target,
            published,
            mode,
        }
    }

    fn tcp(published: u16, target: u16) -> PortConfig {
        port(published, target, PortProtocol::Tcp, PublishMode::Ingress)
    }

    fn service(id: &str, ports: Vec<PortConfig>) -> Service {
        let mut spec = crate::orchestrator::fixture::replicated(id, 1);
        spec.ports = ports;
        crate::orchestrator::fixture::new_service(id, spec, 0)
    }

    /// Allocates `service`'s ports and stores it, as the apply of a create does.
    fn create(state: &mut ClusterState, mut s: Service) -> Result<Vec<PortConfig>, AllocError> {
        assign_published_ports(state, &mut s)?;
        let ports = s.endpoint_ports.clone();
        state.services.insert(s.id.clone(), s);
        Ok(ports)
    }

    #[test]
    fn open_ports_come_from_swarms_range_and_asked_ones_are_kept() {
        let mut state = ClusterState::default();
        let web = create(&mut state, service("web", vec![tcp(0, 80), tcp(30000, 81)])).unwrap();
        // 30000 is asked for in the same spec, so the open port takes the next one.
        assert_eq!(web, vec![tcp(30001, 80), tcp(30000, 81)]);
        let api = create(&mut state, service("api", vec![tcp(0, 80)])).unwrap();
        assert_eq!(api, vec![tcp(30002, 80)]);
        // UDP has its own numbers.
        let dns = create(
            &mut state,
            service(
                "dns",
                vec![port(0, 53, PortProtocol::Udp, PublishMode::Ingress)],
            ),
        )
        .unwrap();
        assert_eq!(dns[0].published, 30000);
    }

    #[test]
    fn an_update_keeps_allocated_ports() {
        let mut state = ClusterState::default();
        create(&mut state, service("web", vec![tcp(0, 80)])).unwrap();
        create(&mut state, service("other", vec![tcp(0, 90)])).unwrap();
        let mut web = state.services["web"].clone();
        web.spec.ports.push(tcp(0, 443));
        assign_published_ports(&state, &mut web).unwrap();
        assert_eq!(web.endpoint_ports, vec![tcp(30000, 80), tcp(30002, 443)]);
    }

    #[test]
    fn taken_and_duplicate_ports_are_refused() {
        let mut state = ClusterState::default();
        create(&mut state, service("web", vec![tcp(8080, 80)])).unwrap();
        let err = create(&mut state, service("api", vec![tcp(8080, 81)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port '8080' is already in use by service 'web' (web) as a published port"
        );
        let host = port(8080, 82, PortProtocol::Tcp, PublishMode::Host);
        assert!(matches!(
            create(&mut state, service("host", vec![host])),
            Err(AllocError::PortInUse { port: 8080, .. })
        ));
        let twice = service("twice", vec![tcp(9000, 80), tcp(9000, 81)]);
        assert_eq!(
            create(&mut state, twice),
            Err(AllocError::PortTwice {
                port: 9000,
                protocol: "tcp"
            })
        );
        assert!(!state.services.contains_key("api") && !state.services.contains_key("twice"));
    }

    #[test]
    fn the_range_runs_out_clearly() {
        let mut state = ClusterState::default();
        let all: Vec<PortConfig> = PUBLISHED_PORTS.map(|p| tcp(p, 80)).collect();
        create(&mut state, service("hog", all)).unwrap();
        assert_eq!(
            create(&mut state, service("late", vec![tcp(0, 80)])),
            Err(AllocError::PortsExhausted {
                first: 30000,
                last: 32767
            })
        );
    }

    #[test]
    fn ingress_ports_attach_the_ingress_network_last() {
        let mut state = ClusterState::default();
        for (id, ingress) in [("user", false), ("mesh", true)] {
            state.networks.insert(
                id.into(),
                Network {
                    id: id.into(),
                    name: id.into(),
                    driver: "overlay".into(),
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    gateway: "10.1.0.1".parse().unwrap(),
                    vni: 4096,
                    attachable: false,
                    internal: false,
                    ingress,
                    created_at_ms: 0,
                },
            );
        }
        let mut spec = service("web", vec![tcp(8080, 80)]).spec;
        spec.networks = vec!["user".into()];
        assert_eq!(attachment_networks(&state, &spec), ["user", "mesh"]);
        spec.ports = vec![port(8080, 80, PortProtocol::Tcp, PublishMode::Host)];
        assert_eq!(attachment_networks(&state, &spec), ["user"]);
    }
}
