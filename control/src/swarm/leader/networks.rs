//! What the leader does for the network API: create (validating or allocating the subnet and
//! a VNI), remove, list. The `ingress` network is created with the swarm.

use super::Leader;
use crate::{
    allocator::{allocate_subnet, allocate_vni, validate_subnet},
    api::{Empty, ListNetworksResponse, NetworkInfo, NetworkRef, NetworkSpec},
    clock::now_ms,
    cluster::{
        ClusterState, Command,
        network::{INGRESS_NAME, INGRESS_SUBNET, INGRESS_VNI, Network},
    },
    identity::NodeId,
    swarm::{
        convert::validate_name,
        error::Error,
        lookup::resolve_network,
        spec_fields::{labels_from_api, labels_to_api},
    },
};

impl Leader {
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInfo, Error> {
        let state = self.state();
        let network = new_network(&state, &spec)?;
        self.propose(Command::CreateNetwork(network.clone()))
            .await?;
        Ok(network_to_api(&network))
    }

    pub async fn remove_network(&self, request: NetworkRef) -> Result<Empty, Error> {
        let state = self.state();
        let network = resolve_network(&state, &request.network)?;
        if network.ingress {
            return Err(Error::refused(
                "ingress network cannot be removed while the swarm is active",
            ));
        }
        let id = network.id.clone();
        self.propose(Command::RemoveNetwork { id }).await?;
        Ok(Empty {})
    }

    pub async fn list_networks(&self, _: Empty) -> Result<ListNetworksResponse, Error> {
        let state = self.state();
        Ok(ListNetworksResponse {
            networks: state.networks.values().map(network_to_api).collect(),
        })
    }

    /// At `swarm init`: Swarm's `ingress` network, 10.255.0.0/16 on VNI 4096.
    pub(in crate::swarm) async fn create_ingress(&self) -> Result<(), Error> {
        let state = self.state();
        if state.networks.values().any(|n| n.ingress) {
            return Ok(());
        }
        let (subnet, gateway) = validate_subnet(&state, INGRESS_SUBNET, None)?;
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
            labels: Default::default(),
        };
        self.propose(Command::CreateNetwork(network)).await
    }
}

/// Validates a `network create` and allocates what it leaves open.
fn new_network(state: &ClusterState, spec: &NetworkSpec) -> Result<Network, Error> {
    let invalid = |m: String| Error::invalid(m);
    let name = spec.name.trim();
    validate_name("network", name)?;
    if state.networks.values().any(|n| n.name == name) {
        return Err(Error::exists(format!(
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
        .ok_or_else(|| Error::unavailable("the swarm is still being initialized"))?;
    let (subnet, gateway) = if spec.subnet.is_empty() {
        if !spec.gateway.is_empty() {
            return Err(invalid("a --gateway needs a --subnet".into()));
        }
        allocate_subnet(state, &cluster.default_addr_pools, cluster.subnet_size)
    } else {
        validate_subnet(state, &spec.subnet, Some(&spec.gateway))
    }?;
    let labels = labels_from_api(&spec.labels, "network")?;
    let vni = allocate_vni(state)?;
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
        labels,
    })
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
        labels: labels_to_api(&n.labels),
    }
}
