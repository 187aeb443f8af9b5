//! The veth pair between a bridge and a task netns, created in one request, kept when intact
//! and rebuilt otherwise, and the task end's settings (address, MTU, default route).

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
    check_ifname,
    links::{delete_link, is_veth_port_of, mac_of, not_our_port, peer_index_of},
};
use crate::overlay::{
    OverlayError, mac_for_ip,
    netlink::{enslave_and_raise, index_of, link_by_name, nl_err, with_handle},
};

/// A veth pair from a bridge (in `bridge_netns`) to a task netns, built the way `task.rs` builds
/// overlay attachments: one request, sent in the bridge's netns, creates the host end as a
/// bridge port and the peer directly inside the task netns (by fd) under its final name, so no
/// temporary name can collide. Written so that `attach_task` can be expressed with it too.
pub(super) struct TaskVeth<'a> {
    pub(super) bridge_netns: &'a Path,
    pub(super) bridge: &'a str,
    pub(super) host_side_name: &'a str,
    pub(super) task_netns: &'a Path,
    pub(super) ifname: &'a str,
    /// Address (and prefix) of the task end; its MAC is [`mac_for_ip`] of the address.
    pub(super) ip: Ipv4Net,
    pub(super) mtu: u32,
    /// Gateway of the task's default route, if it gets one through this interface.
    pub(super) default_route: Option<Ipv4Addr>,
}

impl TaskVeth<'_> {
    pub(super) fn ensure(&self) -> Result<(), OverlayError> {
        let Self {
            bridge_netns,
            bridge,
            host_side_name,
            task_netns,
            ifname,
            ip,
            mtu,
            default_route,
        } = *self;
        check_ifname(ifname)?;
        check_ifname(host_side_name)?;
        let mac = mac_for_ip(ip.addr());

        let task_end = with_handle(task_netns, |h| async move {
            Ok(link_by_name(&h, ifname, task_netns)
                .await?
                .map(|l| (l.header.index, mac_of(&l) == Some(&mac[..]))))
        })?;
        let host_end = with_handle(bridge_netns, |h| async move {
            let bridge = index_of(&h, bridge, bridge_netns).await?;
            Ok(link_by_name(&h, host_side_name, bridge_netns)
                .await?
                .map(|l| {
                    (
                        l.header.index,
                        peer_index_of(&l),
                        is_veth_port_of(&l, Some(bridge)),
                    )
                }))
        })?;

        // Ours for sure: the peer of the host end is the task end we look for, with our MAC.
        let intact = match (task_end, host_end) {
            (Some((task_index, true)), Some((_, peer, _))) => peer == Some(task_index),
            _ => false,
        };
        if let Some((_, _, false)) = host_end
            && !intact
        {
            return Err(not_our_port(host_side_name, bridge, bridge_netns));
        }
        if intact {
            with_handle(bridge_netns, |h| async move {
                let bridge = index_of(&h, bridge, bridge_netns).await?;
                let index = index_of(&h, host_side_name, bridge_netns).await?;
                enslave_and_raise(&h, index, host_side_name, bridge, mtu, bridge_netns).await
            })?;
        } else {
            // Remove whichever half is left over, then create the pair in one request.
            if let Some((index, _)) = task_end {
                with_handle(task_netns, |h| async move {
                    delete_link(&h, index, ifname, task_netns).await
                })?;
            }
            let task_fd = File::open(task_netns).map_err(|source| OverlayError::Netns {
                what: "opening task netns",
                path: task_netns.to_path_buf(),
                source,
            })?;
            let fd = task_fd.as_raw_fd();
            with_handle(bridge_netns, |h| async move {
                if let Some((index, _, _)) = host_end {
                    delete_link(&h, index, host_side_name, bridge_netns).await?;
                }
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
        }

        with_handle(task_netns, |h| async move {
            configure_task_end(&h, task_netns, ifname, ip, mtu, default_route).await
        })
    }
}

/// Inside the task netns: loopback up, MTU, address, up, optional default route. Every step
/// uses set/replace semantics so re-running is harmless.
async fn configure_task_end(
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
