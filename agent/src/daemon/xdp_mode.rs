//! `--xdp-mode auto`: native XDP on the underlay interface, unless native cannot work there.
//!
//! Native XDP fails outright on a driver without it (the attach returns an error, and the
//! agent falls back to generic then). It also fails silently on a veth whose peer runs no
//! XDP program: frames the program sends back out with `XDP_TX` (the routing mesh does) are
//! dropped by the peer, which takes them only when an XDP program of its own runs there (see
//! the platform notes). So before attaching, a veth's peer is looked up over rtnetlink (in the
//! peer's own namespace, by the link's netns ID) and native is skipped when it runs no XDP.

use anyhow::Context as _;
use futures::TryStreamExt as _;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use shoal_control::error_chain::Chain;

/// Why native XDP cannot work on `interface`, when that can be told before attaching; `None`
/// when native should be tried (its attach error is the other reason to fall back).
pub fn native_blocker(interface: &str) -> Option<String> {
    // rtnetlink is async; the caller may be on the agent's runtime, so the query gets a
    // thread and a runtime of its own.
    let query = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<Option<String>> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting a netlink runtime")?
                    .block_on(veth_peer_blocker(interface))
            })
            .join()
    });
    match query {
        Ok(Ok(blocker)) => blocker,
        Ok(Err(e)) => {
            tracing::debug!(interface, error = %Chain(e.as_ref()), "cannot inspect the underlay interface; trying native XDP");
            None
        }
        Err(_) => None,
    }
}

async fn veth_peer_blocker(interface: &str) -> anyhow::Result<Option<String>> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    let driver = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(interface)
            .execute()
            .try_next()
            .await
            .with_context(|| format!("reading link {interface}"))?
            .with_context(|| format!("no link {interface}"))?;
        if !is_veth(&link) {
            return Ok(None);
        }
        let peer_index = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        });
        let peer_netns = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkNetNsId(id) => Some(*id),
            _ => None,
        });
        let Some(peer_index) = peer_index else {
            return Ok(Some(format!("{interface} is a veth without a peer")));
        };
        let mut request = handle.link().get().match_index(peer_index);
        if let Some(id) = peer_netns {
            // IFLA_TARGET_NETNSID: the peer is looked up in its own namespace.
            request
                .message_mut()
                .attributes
                .push(LinkAttribute::IfNetnsId(id));
        }
        let peer = request.execute().try_next().await;
        Ok(match peer {
            Ok(Some(peer)) if runs_xdp(&peer) => None,
            Ok(_) => Some(format!(
                "{interface} is a veth whose peer runs no XDP program, so frames sent back \
                 with XDP_TX in native mode would be dropped"
            )),
            Err(e) => Some(format!(
                "{interface} is a veth whose peer cannot be inspected ({})",
                Chain(&e)
            )),
        })
    }
    .await;
    driver.abort();
    result
}

fn is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
    })
}

fn runs_xdp(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().any(|x| match x {
            LinkXdp::Attached(attached) => *attached != XdpAttached::None,
            LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) => *id != 0,
            _ => false,
        }),
        _ => false,
    })
}
