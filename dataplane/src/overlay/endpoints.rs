//! Remote endpoints: how a sandbox reaches a task on another node without flooding or learning.
//!
//! Per remote task we program, in the sandbox:
//! - a static FDB entry on `vxlan0`: its MAC -> the remote VTEP (`bridge fdb ... self permanent
//!   dst VTEP`), so the VXLAN device knows where to send unicast frames for that MAC;
//! - a permanent neighbour entry IP -> MAC on `vxlan0`: with `proxy` on, `vxlan0` answers the
//!   local tasks' ARP requests from it, so ARP never crosses the underlay;
//! - the same neighbour entry on `br0`, so traffic the sandbox itself originates (from the
//!   gateway address) resolves without ARP either.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
    },
};

use super::{
    BRIDGE_NAME, OverlayError, Sandbox, VXLAN_NAME,
    netlink::{errno, index_of, nl_err, with_handle},
};

/// A remote endpoint as programmed: its IP, its MAC, and the VTEP (node) it is behind.
pub type RemoteEndpoint = (Ipv4Addr, [u8; 6], Ipv4Addr);

/// Programs a remote endpoint (see the module docs): one FDB and two neighbour entries, each
/// one netlink request, whatever else the sandbox holds. Idempotent: entries are replaced.
pub fn add_remote_endpoint(
    sandbox: &Sandbox,
    ip: Ipv4Addr,
    mac: [u8; 6],
    vtep: Ipv4Addr,
) -> Result<(), OverlayError> {
    add_remote_endpoints(sandbox, &[(ip, mac, vtep)])
}

/// [`add_remote_endpoint`] for many endpoints over one netlink connection (a sandbox's full
/// reconcile). Stops at the first error.
pub fn add_remote_endpoints(
    sandbox: &Sandbox,
    endpoints: &[RemoteEndpoint],
) -> Result<(), OverlayError> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let netns = sandbox.path.as_path();
    with_handle(netns, |h| async move {
        let vxlan = index_of(&h, VXLAN_NAME, netns).await?;
        let bridge = index_of(&h, BRIDGE_NAME, netns).await?;
        for &(ip, mac, vtep) in endpoints {
            h.neighbours()
                .add_bridge(vxlan, &mac)
                .flags(NeighbourFlags::Own)
                .destination(IpAddr::V4(vtep))
                .replace()
                .execute()
                .await
                .map_err(nl_err("adding fdb entry on", VXLAN_NAME, netns))?;
            for (index, name) in [(vxlan, VXLAN_NAME), (bridge, BRIDGE_NAME)] {
                h.neighbours()
                    .add(index, IpAddr::V4(ip))
                    .link_layer_address(&mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl_err("adding neighbour entry on", name, netns))?;
            }
        }
        Ok(())
    })
}

/// Removes what [`add_remote_endpoint`] programmed. Missing entries are not an error.
pub fn remove_remote_endpoint(
    sandbox: &Sandbox,
    ip: Ipv4Addr,
    mac: [u8; 6],
    vtep: Ipv4Addr,
) -> Result<(), OverlayError> {
    remove_remote_endpoints(sandbox, &[(ip, mac, vtep)])
}

/// [`remove_remote_endpoint`] for many endpoints over one netlink connection. Stops at the
/// first error.
pub fn remove_remote_endpoints(
    sandbox: &Sandbox,
    endpoints: &[RemoteEndpoint],
) -> Result<(), OverlayError> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let netns = sandbox.path.as_path();
    with_handle(netns, |h| async move {
        let vxlan = index_of(&h, VXLAN_NAME, netns).await?;
        let bridge = index_of(&h, BRIDGE_NAME, netns).await?;
        for &(ip, mac, vtep) in endpoints {
            let mut fdb = NeighbourMessage::default();
            fdb.header.family = AddressFamily::Bridge;
            fdb.header.ifindex = vxlan;
            fdb.header.state = NeighbourState::Permanent;
            fdb.header.flags = NeighbourFlags::Own;
            fdb.attributes = vec![
                NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::Inet(vtep)),
            ];
            delete(&h, fdb, "deleting fdb entry on", VXLAN_NAME, netns).await?;

            for (index, name) in [(vxlan, VXLAN_NAME), (bridge, BRIDGE_NAME)] {
                let mut neigh = NeighbourMessage::default();
                neigh.header.family = AddressFamily::Inet;
                neigh.header.ifindex = index;
                neigh.attributes =
                    vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
                delete(&h, neigh, "deleting neighbour entry on", name, netns).await?;
            }
        }
        Ok(())
    })
}

/// The remote endpoints programmed in the sandbox, as `(ip, mac, vtep)`: the static FDB entries
/// of `vxlan0`. The IP is the one the MAC was derived from ([`super::mac_for_ip`]), which is how
/// every remote endpoint is programmed. Used to remove entries nothing asks for any more (left
/// by an agent that restarted while their owner went away).
pub fn remote_endpoints(sandbox: &Sandbox) -> Result<Vec<RemoteEndpoint>, OverlayError> {
    Ok(remote_endpoint_entries(sandbox)?
        .into_iter()
        .map(|(endpoint, _)| endpoint)
        .collect())
}

/// [`remote_endpoints`], each with whether its two neighbour entries (IP -> that MAC on
/// `vxlan0` and on `br0`) are in place too: what the agent's background check compares with
/// the endpoints it wants, to repair an endpoint that is only half programmed. Two dumps
/// (FDB, neighbours), the whole sandbox's: not for every change.
pub fn remote_endpoint_entries(
    sandbox: &Sandbox,
) -> Result<Vec<(RemoteEndpoint, bool)>, OverlayError> {
    let netns = sandbox.path.as_path();
    with_handle(netns, |h| async move {
        use futures::TryStreamExt as _;
        let vxlan = index_of(&h, VXLAN_NAME, netns).await?;
        let bridge = index_of(&h, BRIDGE_NAME, netns).await?;
        let mut dump = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        let mut found = Vec::new();
        while let Some(entry) =
            dump.try_next()
                .await
                .map_err(nl_err("listing fdb entries of", VXLAN_NAME, netns))?
        {
            if entry.header.ifindex != vxlan {
                continue;
            }
            let mut mac = None;
            let mut vtep = None;
            for attribute in &entry.attributes {
                match attribute {
                    NeighbourAttribute::LinkLayerAddress(a) => {
                        mac = <[u8; 6]>::try_from(a.as_slice()).ok();
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        vtep = Some(*ip);
                    }
                    // In a bridge-family dump the parser cannot tell the address family.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        vtep = <[u8; 4]>::try_from(bytes.as_slice())
                            .ok()
                            .map(Ipv4Addr::from);
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(vtep)) = (mac, vtep)
                && mac[..2] == [0x02, 0x42]
            {
                found.push((Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5]), mac, vtep));
            }
        }
        // (ifindex, ip) -> MAC of the permanent IPv4 neighbour entries of both links.
        let mut neighbours = std::collections::HashMap::new();
        let mut dump = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(entry) = dump.try_next().await.map_err(nl_err(
            "listing neighbour entries of",
            VXLAN_NAME,
            netns,
        ))? {
            let index = entry.header.ifindex;
            if (index != vxlan && index != bridge)
                || entry.header.state != NeighbourState::Permanent
            {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for attribute in &entry.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                    NeighbourAttribute::LinkLayerAddress(a) => {
                        mac = <[u8; 6]>::try_from(a.as_slice()).ok();
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                neighbours.insert((index, ip), mac);
            }
        }
        Ok(found
            .into_iter()
            .map(|(ip, mac, vtep)| {
                let complete = [vxlan, bridge]
                    .iter()
                    .all(|index| neighbours.get(&(*index, ip)) == Some(&mac));
                ((ip, mac, vtep), complete)
            })
            .collect())
    })
}

async fn delete(
    h: &Handle,
    message: NeighbourMessage,
    what: &'static str,
    link: &str,
    netns: &Path,
) -> Result<(), OverlayError> {
    match h.neighbours().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(nl_err(what, link, netns)(e)),
    }
}
