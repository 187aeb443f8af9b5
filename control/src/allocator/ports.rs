//! Published ports (asked for, kept, or taken from Swarm's range) and the networks a service's
//! tasks attach to, which publishing in ingress mode extends.

use super::AllocError;
use crate::cluster::{
    ClusterState, PortConfig, PortProtocol, Service, ServiceSpec,
    held::{Held, lowest_free},
};

/// Where published ports are allocated when none is asked for: Swarm's range.
pub const PUBLISHED_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

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
    let other_owner = |port: u16, protocol: PortProtocol| {
        state
            .services
            .publishing(port, protocol)
            .find(|s| s.id != service.id)
    };
    let asked: Vec<&PortConfig> = service
        .spec
        .ports
        .iter()
        .filter(|p| p.published != 0)
        .collect();
    for (i, p) in asked.iter().enumerate() {
        if let Some(owner) = other_owner(p.published, p.protocol) {
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
        // This spec's own: asked for, or given to an earlier open port.
        let mut own = Held::default();
        for d in asked.iter().copied().chain(&decided) {
            if d.protocol == p.protocol {
                own.add(u32::from(d.published));
            }
        }
        // Free: nobody else's, and not this spec's own.
        let free = |port: &u16| {
            other_owner(*port, p.protocol).is_none() && own.holders(u32::from(*port)) == 0
        };
        let kept = service
            .endpoint_ports
            .iter()
            .find(|e| e.target == p.target && e.protocol == p.protocol && e.mode == p.mode)
            .map(|e| e.published)
            .filter(free);
        let port = kept
            .or_else(|| lowest_free_port(state, service, p.protocol, &own))
            .ok_or(AllocError::PortsExhausted {
                first: *PUBLISHED_PORTS.start(),
                last: *PUBLISHED_PORTS.end(),
            })?;
        decided.push(PortConfig {
            published: port,
            ..*p
        });
    }
    service.endpoint_ports = decided;
    Ok(())
}

/// The lowest port of [`PUBLISHED_PORTS`] for `protocol` that no other service publishes and
/// `own` does not hold. The store's index holds the ports `service` itself publishes now,
/// which are free for it: the lowest of those that nobody else holds competes with the lowest
/// port nobody holds at all.
fn lowest_free_port(
    state: &ClusterState,
    service: &Service,
    protocol: PortProtocol,
    own: &Held,
) -> Option<u16> {
    let range = u32::from(*PUBLISHED_PORTS.start())..=u32::from(*PUBLISHED_PORTS.end());
    let published = state.services.ports(protocol);
    let unheld = lowest_free(range.clone(), &[published, own]);
    let stored = state.services.get(&service.id);
    let held_by_it_alone = stored
        .into_iter()
        .flat_map(|s| &s.endpoint_ports)
        .filter(|e| e.protocol == protocol)
        .map(|e| u32::from(e.published))
        .filter(|port| range.contains(port) && own.holders(*port) == 0)
        .filter(|port| {
            let others = state.services.publishing(*port as u16, protocol);
            others.filter(|s| s.id != service.id).count() == 0
        })
        .min();
    let port = match (unheld, held_by_it_alone) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    u16::try_from(port).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{PortProtocol, PublishMode, network::Network};

    fn port(published: u16, target: u16, protocol: PortProtocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol,
            target,
            published,
            mode,
            source: Default::default(),
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
                    labels: Default::default(),
                    options: Default::default(),
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
