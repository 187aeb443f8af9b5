//! The veth pair between a bridge and a task netns, created in one request, kept when intact
//! and rebuilt otherwise, and the task end's settings (address, MTU, default route).

use std::{net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;

use super::{
    check_ifname,
    links::{is_veth_port_of, not_our_port, peer_index_of},
};
use crate::overlay::{
    OverlayError, mac_for_ip,
    netlink::{delete_link, enslave_and_raise, index_of, link_by_name, mac_of, with_handle},
    pair::{configure_task_end, create_pair},
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
            if let Some((index, _, _)) = host_end {
                with_handle(bridge_netns, |h| async move {
                    delete_link(&h, index, host_side_name, bridge_netns).await
                })?;
            }
            create_pair(
                bridge_netns,
                bridge,
                host_side_name,
                task_netns,
                ifname,
                mac,
                mtu,
            )?;
        }

        with_handle(task_netns, |h| async move {
            configure_task_end(&h, task_netns, ifname, ip, mtu, default_route).await
        })
    }
}
