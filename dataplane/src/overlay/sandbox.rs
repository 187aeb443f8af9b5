//! The per-network sandbox: a netns (bind-mounted where the agent says) holding bridge `br0`
//! and VXLAN device `vxlan0`.
//!
//! `vxlan0` is created by a request sent from the node's netns with `IFLA_NET_NS_FD` pointing at
//! the sandbox: the kernel builds the device in the sandbox but binds its UDP socket in the
//! requesting (node) netns, where the underlay and the data-path address are. This is the
//! "create on the node, then move" pattern done in one atomic message, so no temporary name
//! can collide with anything in the node's netns and a crash leaves nothing behind there.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
};

use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVxlan,
    packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
};

use super::{
    BRIDGE_NAME, OverlayError, OverlaySpec, Sandbox, VXLAN_NAME,
    netlink::{enslave_and_raise, index_of, link_by_name, nl_err, with_handle},
    netns,
};

/// Creates (or re-adopts) the sandbox mounted at `path` for `spec`; see the module docs.
///
/// Idempotent: on an existing sandbox whose `vxlan0` matches `spec`, nothing is recreated (the
/// link indices stay the same); settings are re-applied with replace semantics, which the
/// kernel treats as no-ops. A `vxlan0` with a different VNI/port/local address is replaced.
pub fn ensure_sandbox(
    node_netns: &Path,
    path: &Path,
    spec: &OverlaySpec,
) -> Result<Sandbox, OverlayError> {
    if !spec.subnet.contains(&spec.gateway) {
        return Err(OverlayError::Invalid(format!(
            "gateway {} is outside subnet {}",
            spec.gateway, spec.subnet
        )));
    }
    netns::create_netns(path)?;
    let sandbox = Sandbox {
        path: path.to_path_buf(),
        spec: spec.clone(),
    };

    let path = sandbox.path.as_path();
    let need_vxlan = with_handle(path, |handle| async move {
        ensure_bridge(&handle, spec, path).await?;
        match link_by_name(&handle, VXLAN_NAME, path).await? {
            Some(link) if vxlan_matches(&link, spec) => Ok(false),
            Some(link) => {
                handle
                    .link()
                    .del(link.header.index)
                    .execute()
                    .await
                    .map_err(nl_err("deleting mismatched link", VXLAN_NAME, path))?;
                Ok(true)
            }
            None => Ok(true),
        }
    })?;

    if need_vxlan {
        let sandbox_fd = File::open(&sandbox.path).map_err(|source| OverlayError::Netns {
            what: "opening sandbox netns",
            path: sandbox.path.clone(),
            source,
        })?;
        let fd = sandbox_fd.as_raw_fd();
        with_handle(node_netns, |handle| async move {
            let message = LinkVxlan::new(VXLAN_NAME, spec.vni)
                .port(spec.vxlan_port)
                .local(spec.local_vtep)
                .learning(false)
                // Proxy ARP: vxlan0 answers ARP requests from the neighbour entries programmed
                // per remote endpoint, so ARP never has to be flooded across nodes.
                .proxy(true)
                .mtu(spec.mtu)
                .setns_by_fd(fd)
                .build();
            handle.link().add(message).execute().await.map_err(nl_err(
                "creating vxlan into sandbox",
                VXLAN_NAME,
                node_netns,
            ))
        })?;
        // Keep the namespace fd open until the kernel has used it.
        drop(sandbox_fd);
    }

    let mtu = spec.mtu;
    with_handle(path, |handle| async move {
        let bridge = index_of(&handle, BRIDGE_NAME, path).await?;
        let vxlan = index_of(&handle, VXLAN_NAME, path).await?;
        enslave_and_raise(&handle, vxlan, VXLAN_NAME, bridge, mtu, path).await
    })?;
    Ok(sandbox)
}

/// Creates `br0` if missing, then (re)applies MTU, up and the gateway address.
async fn ensure_bridge(
    handle: &Handle,
    spec: &OverlaySpec,
    netns: &Path,
) -> Result<(), OverlayError> {
    if link_by_name(handle, BRIDGE_NAME, netns).await?.is_none() {
        handle
            .link()
            .add(LinkBridge::new(BRIDGE_NAME).mtu(spec.mtu).build())
            .execute()
            .await
            .map_err(nl_err("creating bridge", BRIDGE_NAME, netns))?;
    }
    let bridge = index_of(handle, BRIDGE_NAME, netns).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(bridge)
                .mtu(spec.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl_err("raising bridge", BRIDGE_NAME, netns))?;
    // Loopback up: local services in the sandbox (e.g. a future DNS or LB hook) need it.
    let lo = index_of(handle, "lo", netns).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(nl_err("raising", "lo", netns))?;
    handle
        .address()
        .add(bridge, IpAddr::V4(spec.gateway), spec.subnet.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(nl_err("adding gateway address on", BRIDGE_NAME, netns))
}

/// Whether an existing `vxlan0` was built from `spec` (VNI, port, local VTEP, no learning).
fn vxlan_matches(link: &LinkMessage, spec: &OverlaySpec) -> bool {
    let mut kind_ok = false;
    let (mut id, mut port, mut local, mut learning) = (None, None, None::<Ipv4Addr>, None);
    for attribute in &link.attributes {
        let LinkAttribute::LinkInfo(infos) = attribute else {
            continue;
        };
        for info in infos {
            match info {
                LinkInfo::Kind(InfoKind::Vxlan) => kind_ok = true,
                LinkInfo::Data(InfoData::Vxlan(data)) => {
                    for item in data {
                        match item {
                            InfoVxlan::Id(v) => id = Some(*v),
                            InfoVxlan::Port(v) => port = Some(*v),
                            InfoVxlan::Local(v) => local = Some(*v),
                            InfoVxlan::Learning(v) => learning = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    kind_ok
        && id == Some(spec.vni)
        && port == Some(spec.vxlan_port)
        && local == Some(spec.local_vtep)
        && learning == Some(false)
}

/// Unmounts and deletes the sandbox netns; its bridge, VXLAN device and the sandbox ends of task
/// veths go with it (which also removes their peers in task namespaces). Missing is success.
pub fn remove_sandbox(path: &Path) -> Result<(), OverlayError> {
    netns::remove_netns(path)
}
