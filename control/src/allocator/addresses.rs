//! Task addresses (from the bottom of a subnet), service VIPs (from the top) and the nodes'
//! addresses on `ingress`.
//!
//! A VIP is allocated in the apply of a service change while the leader may be addressing a
//! batch of tasks from an older state; taking them from opposite ends means the two only meet
//! when the subnet is nearly full (the apply of `PutTasks` catches that case).

use std::{collections::HashMap, ops::RangeInclusive};

use ipnet::Ipv4Net;

use super::{AllocError, ports::attachment_networks};
use crate::cluster::{
    ClusterState, EndpointMode, NetworkAttachment, Service, Task, VirtualIp,
    held::{Held, highest_free, lowest_free},
    network::Network,
};

/// Gives each task of `tasks` that has no addresses yet one address per network of its spec.
/// Returns the tasks that could not get them, with why; those keep no addresses.
///
/// Addresses never held by a stored task are preferred, so a new task does not take the address
/// of one that just stopped while its endpoint may still be withdrawing on other nodes; only
/// when those run out are addresses of finished tasks reused. Allocations made earlier in the
/// same batch count as held.
pub fn address_tasks(state: &ClusterState, tasks: &mut [Task]) -> Vec<(String, AllocError)> {
    // The stored tasks' addresses and the VIPs are indexed by the store; what else is taken
    // (the gateway, the nodes' ingress addresses, this batch's) is gathered here per network.
    let mut reserved: HashMap<String, Held> = HashMap::new();
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
            let reserved = reserved
                .entry(id.clone())
                .or_insert_with(|| reserved_on(state, network));
            let vips = state.services.vips_on(id);
            let free = |tasks: &Held| lowest_free(hosts(network.subnet), &[tasks, vips, reserved]);
            let Some(ip) = free(state.tasks.held_on(id)).or_else(|| free(state.tasks.live_on(id)))
            else {
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
                // Without its labels: nodes have no use for them, and every task would carry
                // them (up to `limits::MAX_NETWORKS` copies per task, times its replicas).
                network: Network {
                    labels: Default::default(),
                    ..network.clone()
                },
                addr: Ipv4Net::new(ip.into(), network.subnet.prefix_len())
                    .unwrap_or(network.subnet),
                vip,
            });
        }
        if attachments.len() == networks.len() {
            for a in &attachments {
                if let Some(batch) = reserved.get_mut(&a.network.id) {
                    batch.add(u32::from(a.addr.addr()));
                }
            }
            task.networks = attachments;
        }
    }
    failed
}

/// The hosts of `subnet`, as `u32` (a subnet always has one: a /32 is its one address).
fn hosts(subnet: Ipv4Net) -> RangeInclusive<u32> {
    let mut hosts = subnet.hosts();
    let first = hosts.next().map_or(u32::from(subnet.network()), u32::from);
    let last = hosts.next_back().map_or(first, u32::from);
    first..=last
}

/// What is taken on `network` besides the stored tasks' addresses and the VIPs: its gateway,
/// and on `ingress` every node's address.
fn reserved_on(state: &ClusterState, network: &Network) -> Held {
    let mut reserved = Held::default();
    reserved.add(u32::from(network.gateway));
    if network.ingress {
        for addr in state.ingress_addrs.values() {
            reserved.add(u32::from(*addr));
        }
    }
    reserved
}

/// Keeps [`ClusterState::ingress_addrs`] right: one address on `ingress` per node (the lowest
/// free one: not the gateway, not a VIP, not held by any stored task or other node), none for
/// nodes that left. Nothing before `ingress` exists. A node that finds no free address keeps
/// none; its agent then serves no published port and logs why.
pub fn assign_ingress_addrs(state: &mut ClusterState) {
    let gone: Vec<String> = state
        .ingress_addrs
        .keys()
        .filter(|id| !state.nodes.contains_key(*id))
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
    let mut reserved = reserved_on(state, &ingress);
    for id in missing {
        let taken = [
            &reserved,
            state.services.vips_on(&ingress.id),
            state.tasks.held_on(&ingress.id),
        ];
        if let Some(ip) = lowest_free(hosts(ingress.subnet), &taken) {
            reserved.add(ip);
            state.ingress_addrs.insert(id, ip.into());
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
        let taken = [
            state.services.vips_on(id),
            state.tasks.held_on(id),
            &reserved_on(state, network),
        ];
        let ip = highest_free(hosts(network.subnet), &taken).ok_or_else(|| {
            AllocError::AddressesExhausted {
                network: network.name.clone(),
                subnet: network.subnet,
            }
        })?;
        vips.push(VirtualIp {
            network_id: id.clone(),
            addr: Ipv4Net::new(ip.into(), network.subnet.prefix_len()).unwrap_or(network.subnet),
        });
    }
    service.virtual_ips = vips;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{subnets::first_host, tests::with_network};
    use crate::cluster::{PortConfig, TaskState, network::Network};

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
                health: None,
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
        state
            .tasks
            .update("t2", |t| t.status.state = TaskState::Shutdown)
            .unwrap();
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
            labels: Default::default(),
            options: Default::default(),
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
            source: Default::default(),
        }];
        assert!(address_tasks(&state, &mut tasks).is_empty());
        assert_eq!(ips(&tasks[0]), ["10.255.0.4/16"]);
        state.tasks.insert("t1".into(), tasks.remove(0));
        // A joining node gets one too, past the task's; a node that leaves frees its own.
        state.nodes.insert("n3".into(), node("n3", Role::Worker));
        assign_ingress_addrs(&mut state);
        assert_eq!(addr(&state, "n3").as_deref(), Some("10.255.0.5"));
        assert_eq!(
            state.apply(&Command::RemoveNode {
                id: "n1".into(),
                removed_at: 0,
                revoked_until: 0
            }),
            CommandResponse::Ok
        );
        assert_eq!(addr(&state, "n1"), None);
        assert_eq!(state.ingress_addrs.len(), 2);
    }

    #[test]
    fn the_ingress_network_is_removed_and_created_again_as_in_docker() {
        use crate::{
            cluster::{Command, CommandResponse, Role},
            orchestrator::fixture::node,
        };
        let mut state = ClusterState::default();
        for id in ["n1", "n2"] {
            state.nodes.insert(id.into(), node(id, Role::Worker));
        }
        let ingress = |id: &str, name: &str, subnet: &str, gateway: &str, vni: u32| Network {
            id: id.into(),
            name: name.into(),
            driver: "overlay".into(),
            subnet: subnet.parse().unwrap(),
            gateway: gateway.parse().unwrap(),
            vni,
            attachable: false,
            internal: false,
            ingress: true,
            created_at_ms: 0,
            labels: Default::default(),
            options: Default::default(),
        };
        let published = |id: &str| {
            let mut s = service_on(id, &[], EndpointMode::Vip);
            s.spec.ports = vec![PortConfig {
                protocol: crate::cluster::PortProtocol::Tcp,
                target: 80,
                published: 8080,
                mode: crate::cluster::PublishMode::Ingress,
                source: Default::default(),
            }];
            s
        };
        let rejected = |response: CommandResponse| match response {
            CommandResponse::Rejected(why) => why,
            other => panic!("expected a rejection, got {other:?}"),
        };
        let old = ingress("ing", "ingress", "10.255.0.0/16", "10.255.0.1", 4096);
        assert_eq!(
            state.apply(&Command::CreateNetwork(old)),
            CommandResponse::Ok
        );
        assert_eq!(
            state.apply(&Command::CreateService(published("web"))),
            CommandResponse::Ok
        );
        // --- 1. refused while a service publishes in ingress mode
        let rm = Command::RemoveNetwork { id: "ing".into() };
        assert_eq!(
            rejected(state.apply(&rm)),
            "ingress network cannot be removed because service web depends on it"
        );
        // --- 2. removed once none does: the nodes' addresses go with it
        let web_id = state.services.keys().next().unwrap().clone();
        assert_eq!(
            state.apply(&Command::RemoveService { id: web_id }),
            CommandResponse::Ok
        );
        assert_eq!(state.apply(&rm), CommandResponse::Ok);
        assert!(state.ingress_addrs.is_empty());
        assert_eq!(
            rejected(state.apply(&Command::CreateService(published("web")))),
            "service needs ingress network, but no ingress network is present"
        );
        // --- 3. a new one, any name: the nodes get addresses on it (not its gateway)
        let new = ingress("new", "my-ingress", "10.11.0.0/16", "10.11.0.2", 4097);
        assert_eq!(
            state.apply(&Command::CreateNetwork(new)),
            CommandResponse::Ok
        );
        let addrs: Vec<String> = state
            .ingress_addrs
            .values()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addrs, ["10.11.0.1", "10.11.0.3"]);
        let second = ingress("two", "other", "10.12.0.0/16", "10.12.0.1", 4098);
        assert_eq!(
            rejected(state.apply(&Command::CreateNetwork(second))),
            "ingress network (new) is already present"
        );
        // --- 4. published services are taken again, with their VIP on the new network
        assert_eq!(
            state.apply(&Command::CreateService(published("web"))),
            CommandResponse::Ok
        );
        let web = state.services.values().next().unwrap();
        assert_eq!(web.virtual_ips.len(), 1);
        assert_eq!(web.virtual_ips[0].network_id, "new");
        assert!(
            "10.11.0.0/16"
                .parse::<Ipv4Net>()
                .unwrap()
                .contains(&web.virtual_ips[0].addr.addr())
        );
    }
}
