//! A task's veth pair, shared by overlay attachments (`task.rs`) and the gateway bridge
//! (`gateway/veth.rs`): the pair created by one request sent in the bridge's netns, the host
//! end a port of the bridge and the peer made directly inside the task netns (by fd) under its
//! final name, so no temporary name can collide; and the task end's settings.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
};

use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::link::{InfoData, InfoVeth},
};

use super::{
    OverlayError,
    netlink::{index_of, nl_err, with_handle},
};

/// Creates `host_side_name` (in `bridge_netns`, a port of `bridge`, up) paired with `ifname`
/// inside `task_netns` (with `mac`), both at `mtu`. Whatever was left of an earlier pair must
/// be gone already.
pub(super) fn create_pair(
    bridge_netns: &Path,
    bridge: &str,
    host_side_name: &str,
    task_netns: &Path,
    ifname: &str,
    mac: [u8; 6],
    mtu: u32,
) -> Result<(), OverlayError> {
    let task_fd = File::open(task_netns).map_err(|source| OverlayError::Netns {
        what: "opening task netns",
        path: task_netns.to_path_buf(),
        source,
    })?;
    let fd = task_fd.as_raw_fd();
    with_handle(bridge_netns, |h| async move {
        let bridge = index_of(&h, bridge, bridge_netns).await?;
        let peer = LinkUnspec::new_with_name(ifname)
            .address(mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(fd)
            .build();
        h.link()
            .add(
                LinkVeth::new(host_side_name, ifname)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .mtu(mtu)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err("creating veth", host_side_name, bridge_netns))
    })?;
    // Keep the namespace fd open until the kernel has used it.
    drop(task_fd);
    Ok(())
}

/// Inside the task netns: loopback up, MTU, address, up, optional default route. Every step
/// uses set/replace semantics so re-running is harmless.
pub(super) async fn configure_task_end(
    h: &Handle,
    netns: &Path,
    ifname: &str,
    ip: Ipv4Net,
    mtu: u32,
    default_route: Option<Ipv4Addr>,
) -> Result<(), OverlayError> {
    let lo = index_of(h, "lo", netns).await?;
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(nl_err("raising", "lo", netns))?;
    let index = index_of(h, ifname, netns).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(nl_err("raising", ifname, netns))?;
    h.address()
        .add(index, IpAddr::V4(ip.addr()), ip.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(nl_err("adding address on", ifname, netns))?;
    if let Some(gateway) = default_route {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl_err("adding default route via", ifname, netns))?;
    }
    Ok(())
}
