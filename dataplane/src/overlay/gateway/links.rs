//! Which links in a netns are ours to touch, told from their netlink attributes: the node's
//! netns holds the host's real interfaces, and a name clash must never make us reconfigure or
//! delete one of them.

use std::path::Path;

use rtnetlink::{
    Handle,
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};

use crate::overlay::{OverlayError, netlink::link_by_name};

pub(super) fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// For a veth, the ifindex of its peer (in the peer's netns).
pub(super) fn peer_index_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(index) => Some(*index),
        _ => None,
    })
}

/// The bridge a link is enslaved to, if any.
pub(super) fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// Whether `link` is a veth port of bridge `bridge`: the only host-side links this module
/// deletes, so a name clash with another tool's veth (or a NIC) never costs that link.
pub(super) fn is_veth_port_of(link: &LinkMessage, bridge: Option<u32>) -> bool {
    kind_of(link) == Some(&InfoKind::Veth) && bridge.is_some() && controller_of(link) == bridge
}

pub(super) fn not_our_port(name: &str, bridge: &str, netns: &Path) -> OverlayError {
    OverlayError::Invalid(format!(
        "link {name} in netns {} exists but is not a veth port of {bridge}; refusing to touch it",
        netns.display()
    ))
}

/// The link called `name` in `netns` if it is of `kind`; an error if something else has the
/// name. The node's netns holds the host's real interfaces: a name clash must never make us
/// reconfigure or delete one of them.
pub(super) async fn owned_link(
    h: &Handle,
    name: &str,
    kind: InfoKind,
    netns: &Path,
) -> Result<Option<LinkMessage>, OverlayError> {
    match link_by_name(h, name, netns).await? {
        Some(link) if kind_of(&link) == Some(&kind) => Ok(Some(link)),
        Some(link) => Err(OverlayError::Invalid(format!(
            "link {name} in netns {} is a {:?}, not a {kind:?}; refusing to touch it",
            netns.display(),
            kind_of(&link)
        ))),
        None => Ok(None),
    }
}
