//! What the leader does for the network API: create (validating or allocating the subnet and
//! a VNI), remove, list. The `ingress` network is created with the swarm.

use tonic::Status;

use super::{ManagerRole, Swarm, convert::validate_name, manager::on_leader, services::now_ms};
use crate::{
    allocator::{allocate_subnet, allocate_vni, validate_subnet},
    api::{Empty, ListNetworksResponse, NetworkInfo, NetworkRef, NetworkSpec},
    cluster::{
        ClusterState, Command,
        network::{INGRESS_NAME, INGRESS_SUBNET, INGRESS_VNI, Network},
    },
    identity::NodeId,
};

impl Swarm {
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInfo, Status> {
        on_leader!(self, _active, manager, spec, create_network);
        let state = manager.state();
        let network = new_network(&state, &spec)?;
        self.propose(manager, Command::CreateNetwork(network.clone()))
            .await?;
        Ok(network_to_api(&network))
    }

    pub async fn remove_network(&self, request: NetworkRef) -> Result<Empty, Status> {
        on_leader!(self, _active, manager, request, remove_network);
        let state = manager.state();
        let network = resolve_network(&state, &request.network)?;
        if network.ingress {
            return Err(Status::failed_precondition(
                "ingress network cannot be removed while the swarm is active",
            ));
        }
        let id = network.id.clone();
        self.propose(manager, Command::RemoveNetwork { id }).await?;
        Ok(Empty {})
    }

    pub async fn list_networks(&self) -> Result<ListNetworksResponse, Status> {
        on_leader!(self, _active, manager, Empty {}, list_networks);
        let state = manager.state();
        Ok(ListNetworksResponse {
            networks: state.networks.values().map(network_to_api).collect(),
        })
    }

    /// At `swarm init`: Swarm's `ingress` network, 10.255.0.0/16 on VNI 4096.
    pub(super) async fn create_ingress(&self, manager: &ManagerRole) -> Result<(), Status> {
        let state = manager.state();
        if state.networks.values().any(|n| n.ingress) {
            return Ok(());
        }
        let (subnet, gateway) = validate_subnet(&state, INGRESS_SUBNET, None)
            .map_err(|e| Status::internal(e.to_string()))?;
        let network = Network {
            id: NodeId::generate().to_string(),
            name: INGRESS_NAME.to_string(),
            driver: "overlay".to_string(),
            subnet,
            gateway,
            vni: INGRESS_VNI,
            attachable: false,
            internal: false,
            ingress: true,
            created_at_ms: now_ms(),
        };
        self.propose(manager, Command::CreateNetwork(network)).await
    }
}

/// Validates a `network create` and allocates what it leaves open.
fn new_network(state: &ClusterState, spec: &NetworkSpec) -> Result<Network, Status> {
    let invalid = |m: String| Status::invalid_argument(m);
    let name = spec.name.trim();
    validate_name("network", name)?;
    if state.networks.values().any(|n| n.name == name) {
        return Err(Status::already_exists(format!(
            "network with name {name} already exists"
        )));
    }
    match spec.driver.as_str() {
        "" | "overlay" => {}
        other => {
            return Err(invalid(format!(
                "network driver {other:?} is not supported: shoal builds overlay networks"
            )));
        }
    }
    let cluster = state
        .cluster
        .as_ref()
        .ok_or_else(|| Status::unavailable("the swarm is still being initialized"))?;
    let (subnet, gateway) = if spec.subnet.is_empty() {
        if !spec.gateway.is_empty() {
            return Err(invalid("a --gateway needs a --subnet".into()));
        }
        allocate_subnet(state, &cluster.default_addr_pools, cluster.subnet_size)
    } else {
        validate_subnet(state, &spec.subnet, Some(&spec.gateway))
    }
    .map_err(|e| invalid(e.to_string()))?;
    let vni = allocate_vni(state).map_err(|e| Status::resource_exhausted(e.to_string()))?;
    Ok(Network {
        id: NodeId::generate().to_string(),
        name: name.to_string(),
        driver: "overlay".to_string(),
        subnet,
        gateway,
        vni,
        attachable: spec.attachable,
        internal: spec.internal,
        ingress: false,
        created_at_ms: now_ms(),
    })
}

pub(super) fn resolve_network<'a>(
    state: &'a ClusterState,
    reference: &str,
) -> Result<&'a Network, Status> {
    if let Some(n) = state.networks.get(reference) {
        return Ok(n);
    }
    if let Some(n) = state.networks.values().find(|n| n.name == reference) {
        return Ok(n);
    }
    let matches: Vec<&Network> = state
        .networks
        .values()
        .filter(|n| !reference.is_empty() && n.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [n] => Ok(n),
        [] => Err(Status::not_found(format!("network {reference} not found"))),
        _ => Err(Status::failed_precondition(format!(
            "network {reference} is ambiguous"
        ))),
    }
}

fn network_to_api(n: &Network) -> NetworkInfo {
    NetworkInfo {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.clone(),
        subnet: n.subnet.to_string(),
        gateway: n.gateway.to_string(),
        vni: n.vni,
        attachable: n.attachable,
        internal: n.internal,
        ingress: n.ingress,
        created_at_ms: n.created_at_ms,
    }
}
