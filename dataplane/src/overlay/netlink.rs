//! rtnetlink connections bound to a chosen network namespace.
//!
//! A netlink socket talks to the netns of the thread that created it. [`with_handle`] therefore
//! enters the netns on a fresh thread ([`crate::netns::run_in`]), builds a current-thread tokio
//! runtime there, opens the connection and runs the caller's future to completion. The thread,
//! runtime and socket all die together, so no tokio worker ever changes namespace.

use std::{future::Future, path::Path, pin::pin};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkUnspec,
    packet_route::link::{LinkAttribute, LinkMessage},
};

use super::OverlayError;

/// Runs `f` with a netlink handle whose socket lives in `netns`.
pub(crate) fn with_handle<T, F, Fut>(netns: &Path, f: F) -> Result<T, OverlayError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, OverlayError>>,
{
    let connect_err = |source| OverlayError::Connect {
        netns: netns.to_path_buf(),
        source,
    };
    crate::netns::run_in(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(connect_err)?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(connect_err)?;
            let driver = tokio::spawn(connection);
            let result = f(handle).await;
            driver.abort();
            result
        })
    })
    .map_err(|source| OverlayError::EnterNetns {
        path: netns.to_path_buf(),
        source: Box::new(source),
    })?
}

/// The negative errno carried by a netlink error reply, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<nix::errno::Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg
            .code
            .map(|code| nix::errno::Errno::from_raw(-code.get())),
        _ => None,
    }
}

/// Builds the error mapper for a netlink call on `object` in `netns`.
pub(crate) fn nl_err(
    what: &'static str,
    object: impl Into<String>,
    netns: &Path,
) -> impl FnOnce(rtnetlink::Error) -> OverlayError {
    let object = object.into();
    let netns = netns.to_path_buf();
    move |source| OverlayError::Netlink {
        what,
        object,
        netns,
        source: Box::new(source),
    }
}

/// Looks a link up by name; `None` when the kernel says there is no such device.
pub(crate) async fn link_by_name(
    handle: &Handle,
    name: &str,
    netns: &Path,
) -> Result<Option<LinkMessage>, OverlayError> {
    let mut links = pin!(handle.link().get().match_name(name).execute());
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(nl_err("looking up link", name, netns)(e)),
    }
}

/// Index of a link that must exist.
pub(crate) async fn index_of(
    handle: &Handle,
    name: &str,
    netns: &Path,
) -> Result<u32, OverlayError> {
    link_by_name(handle, name, netns)
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| OverlayError::LinkMissing {
            link: name.to_string(),
            netns: netns.to_path_buf(),
        })
}

/// Enslaves link `index` (called `name`) to `bridge`, sets its MTU and brings it up: what
/// every port of a sandbox bridge needs, the VXLAN device and each task's veth alike.
pub(crate) async fn enslave_and_raise(
    handle: &Handle,
    index: u32,
    name: &str,
    bridge: u32,
    mtu: u32,
    netns: &Path,
) -> Result<(), OverlayError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl_err("enslaving and raising", name, netns))
}

/// The link's hardware address, if it has one.
pub(crate) fn mac_of(link: &LinkMessage) -> Option<&[u8]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.as_slice()),
        _ => None,
    })
}

/// Deletes link `index` (`name` in `netns`, for the error); already gone is success.
pub(crate) async fn delete_link(
    h: &Handle,
    index: u32,
    name: &str,
    netns: &Path,
) -> Result<(), OverlayError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(nix::errno::Errno::ENODEV) => Ok(()),
        Err(e) => Err(nl_err("deleting link", name, netns)(e)),
    }
}
