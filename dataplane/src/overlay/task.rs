//! Attaching a task's netns to a sandbox with a veth pair.
//!
//! The pair is created by one request sent in the sandbox: the sandbox end gets the task-derived
//! name and `br0` as master, and the peer is created directly inside the task netns under its
//! final name (`eth0`, ...) with the IP-derived MAC. Creating the peer in place avoids the
//! temporary-name dance (every task's `eth0` would collide inside the sandbox).

use std::path::Path;

use super::{
    BRIDGE_NAME, OverlayError, Sandbox, mac_for_ip,
    netlink::{delete_link, enslave_and_raise, index_of, link_by_name, mac_of, with_handle},
    pair::{configure_task_end, create_pair},
};

/// Linux's interface-name limit (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

fn check_ifname(name: &str) -> Result<(), OverlayError> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ']) {
        return Err(OverlayError::Invalid(format!(
            "interface name {name:?} (1..={MAX_IFNAME} chars, no '/' or spaces)"
        )));
    }
    Ok(())
}

/// Connects `task_netns` to the sandbox's `br0`: veth `host_side_name` (sandbox) <->
/// `ifname` (task) carrying `ip` with MAC [`mac_for_ip`], the sandbox MTU, loopback up, and a
/// default route via the gateway when `default_route` (a task's first network gets it; extra
/// networks only reach their own subnet, like Docker).
///
/// Idempotent: if both ends exist and the task end has the expected MAC, the pair is kept and
/// its settings re-applied; a half-present pair (e.g. after a crash) is removed and rebuilt.
pub fn attach_task(
    sandbox: &Sandbox,
    task_netns: &Path,
    ifname: &str,
    ip: ipnet::Ipv4Net,
    default_route: bool,
    host_side_name: &str,
) -> Result<(), OverlayError> {
    check_ifname(ifname)?;
    check_ifname(host_side_name)?;
    if !sandbox.spec.subnet.contains(&ip.addr()) {
        return Err(OverlayError::Invalid(format!(
            "task address {ip} is outside subnet {}",
            sandbox.spec.subnet
        )));
    }
    let mac = mac_for_ip(ip.addr());
    let mtu = sandbox.spec.mtu;
    let gateway = sandbox.spec.gateway;
    let sandbox_ns = sandbox.path.as_path();

    let task_end = with_handle(task_netns, |h| async move {
        Ok(link_by_name(&h, ifname, task_netns)
            .await?
            .map(|l| (l.header.index, mac_of(&l) == Some(&mac[..]))))
    })?;
    let host_end = with_handle(sandbox_ns, |h| async move {
        Ok(link_by_name(&h, host_side_name, sandbox_ns)
            .await?
            .map(|l| l.header.index))
    })?;

    let intact = matches!((task_end, host_end), (Some((_, true)), Some(_)));
    if !intact {
        // Remove whichever half is left over, then create the pair in one request.
        if let Some((index, _)) = task_end {
            with_handle(task_netns, |h| async move {
                delete_link(&h, index, ifname, task_netns).await
            })?;
        }
        if let Some(index) = host_end {
            with_handle(sandbox_ns, |h| async move {
                delete_link(&h, index, host_side_name, sandbox_ns).await
            })?;
        }
        create_pair(
            sandbox_ns,
            BRIDGE_NAME,
            host_side_name,
            task_netns,
            ifname,
            mac,
            mtu,
        )?;
    } else {
        with_handle(sandbox_ns, |h| async move {
            let bridge = index_of(&h, BRIDGE_NAME, sandbox_ns).await?;
            let index = index_of(&h, host_side_name, sandbox_ns).await?;
            enslave_and_raise(&h, index, host_side_name, bridge, mtu, sandbox_ns).await
        })?;
    }

    with_handle(task_netns, |h| async move {
        configure_task_end(
            &h,
            task_netns,
            ifname,
            ip,
            mtu,
            default_route.then_some(gateway),
        )
        .await
    })
}

/// Removes the task's veth pair (deleting the sandbox end takes the task end with it).
/// Missing is success.
pub fn detach_task(sandbox: &Sandbox, host_side_name: &str) -> Result<(), OverlayError> {
    check_ifname(host_side_name)?;
    let netns = sandbox.path.as_path();
    with_handle(netns, |h| async move {
        match link_by_name(&h, host_side_name, netns).await? {
            Some(link) => delete_link(&h, link.header.index, host_side_name, netns).await,
            None => Ok(()),
        }
    })
}
