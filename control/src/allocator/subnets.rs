//! Overlay subnets (user-chosen, or the first free one of the cluster's address pools), their
//! gateways, and VXLAN network identifiers.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::AllocError;
use crate::cluster::{
    ClusterState,
    network::{FIRST_USER_VNI, MAX_VNI},
};

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

fn overlapping(state: &ClusterState, net: Ipv4Net) -> Option<(String, Ipv4Net)> {
    state
        .networks
        .values()
        .find(|n| n.subnet.contains(&net) || net.contains(&n.subnet))
        .map(|n| (n.name.clone(), n.subnet))
}

pub(super) fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::tests::with_network;

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
}
