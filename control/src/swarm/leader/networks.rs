//! What the leader does for the network API: create (validating or allocating the subnet and
//! a VNI), remove, list. The routing-mesh network (`ingress`) is created with the swarm; as in
//! Docker it may be removed while no service publishes a port in ingress mode, and one may be
//! created (`--ingress`, any name) while there is none. Both are checked again when the
//! command applies (`cluster/command.rs`), where racing calls meet.

use std::collections::BTreeMap;

use super::Leader;
use crate::{
    allocator::{allocate_subnet, allocate_vni, validate_subnet},
    api::{Empty, KeyValue, ListNetworksResponse, NetworkInfo, NetworkRef, NetworkSpec},
    clock::now_ms,
    cluster::{
        ClusterState, Command, limits,
        network::{INGRESS_NAME, INGRESS_SUBNET, INGRESS_VNI, MTU_OPTION, Network, parse_mtu},
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
        let network = self.read(|state| new_network(state, &spec))?;
        self.propose(Command::CreateNetwork(network.clone()))
            .await?;
        Ok(network_to_api(&network))
    }

    pub async fn remove_network(&self, request: NetworkRef) -> Result<Empty, Error> {
        let id = self.read(|state| {
            let network = resolve_network(state, &request.network)?;
            if network.ingress
                && let Some(user) = state.services.values().find(|s| s.spec.needs_ingress())
            {
                return Err(Error::refused(format!(
                    "ingress network cannot be removed because service {} depends on it",
                    user.spec.name
                )));
            }
            Ok(network.id.clone())
        })?;
        self.propose(Command::RemoveNetwork { id }).await?;
        Ok(Empty {})
    }

    pub async fn list_networks(&self, _: Empty) -> Result<ListNetworksResponse, Error> {
        self.read(|state| {
            Ok(ListNetworksResponse {
                networks: state.networks.values().map(network_to_api).collect(),
            })
        })
    }

    /// At `swarm init`: Swarm's `ingress` network, 10.255.0.0/16 on VNI 4096.
    pub(in crate::swarm) async fn create_ingress(&self) -> Result<(), Error> {
        let free = self.read(|state| {
            if state.networks.values().any(|n| n.ingress) {
                return Ok(None);
            }
            validate_subnet(state, INGRESS_SUBNET, None).map(Some)
        })?;
        let Some((subnet, gateway)) = free else {
            return Ok(());
        };
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
            options: Default::default(),
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
    if spec.ingress {
        if spec.attachable {
            return Err(invalid("ingress network cannot be attachable".into()));
        }
        if let Some(ingress) = state.networks.values().find(|n| n.ingress) {
            return Err(Error::exists(format!(
                "ingress network ({}) is already present",
                ingress.id
            )));
        }
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
    let options = options_from_api(&spec.options)?;
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
        ingress: spec.ingress,
        created_at_ms: now_ms(),
        labels,
        options,
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
        options: labels_to_api(&n.options),
    }
}

/// `--opt`s, as Docker takes driver options: any key is kept (only [`MTU_OPTION`] has an
/// effect), the same key twice keeps the last value; the MTU must be one. Bounded as labels
/// are, since every task on the network carries a copy.
fn options_from_api(options: &[KeyValue]) -> Result<BTreeMap<String, String>, Error> {
    if options.len() > limits::MAX_LABELS {
        return Err(Error::invalid(format!(
            "too many options: {}, a network may have at most {}",
            options.len(),
            limits::MAX_LABELS
        )));
    }
    let bytes: usize = options.iter().map(|o| o.key.len() + o.value.len()).sum();
    if bytes > limits::MAX_LABELS_BYTES {
        return Err(Error::invalid(format!(
            "the network's options are too large: {bytes} bytes, at most {}",
            limits::MAX_LABELS_BYTES
        )));
    }
    let mut model = BTreeMap::new();
    for option in options {
        if option.key.trim().is_empty() {
            return Err(Error::invalid(format!(
                "invalid option '{}={}': empty name",
                option.key, option.value
            )));
        }
        model.insert(option.key.clone(), option.value.clone());
    }
    if let Some(value) = model.get(MTU_OPTION) {
        parse_mtu(value).map_err(Error::invalid)?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn options_are_kept_and_the_mtu_must_be_one() {
        let kept = options_from_api(&[
            kv(MTU_OPTION, "9000"),
            kv("x.unknown", "kept"),
            kv("x.unknown", "last"),
        ])
        .unwrap();
        assert_eq!(kept[MTU_OPTION], "9000");
        assert_eq!(kept["x.unknown"], "last");
        for ok in ["68", "1300", "65535"] {
            assert!(options_from_api(&[kv(MTU_OPTION, ok)]).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("abc", "invalid MTU number \"abc\""),
            ("20", "invalid MTU number 20"),
            ("67", "must be from 68 to 65535"),
            ("65536", "invalid MTU number 65536"),
            ("-1", "an integer from 68 to 65535"),
            ("", "invalid MTU number \"\""),
        ] {
            let err = options_from_api(&[kv(MTU_OPTION, bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{bad:?}: one line: {err}");
        }
        assert!(options_from_api(&[kv(" ", "x")]).is_err(), "empty key");
        let many: Vec<KeyValue> = (0..=limits::MAX_LABELS)
            .map(|i| kv(&format!("k{i}"), "v"))
            .collect();
        assert!(options_from_api(&many).is_err(), "too many");
    }
}
