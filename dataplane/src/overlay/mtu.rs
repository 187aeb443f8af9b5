//! The overlay's MTU, from the underlay's: VXLAN adds 50 bytes (outer Ethernet 14, IPv4 20,
//! UDP 8, VXLAN 8), so a frame of the underlay's MTU minus 50 fits unfragmented. Docker takes
//! 1450 whatever the underlay; a jumbo-frame underlay (9000) then wastes most of its MTU, and
//! one below 1500 (a cloud's 1460, a tunnel's 1420) silently drops full-size frames.

use std::path::Path;

use rtnetlink::packet_route::link::LinkAttribute;

use super::{
    OverlayError,
    netlink::{link_by_name, with_handle},
};

/// Bytes VXLAN over IPv4 adds to each frame.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The smallest overlay MTU accepted: IPv4's minimum datagram every host must take (RFC 791:
/// 576), so an odd underlay never yields an overlay that cannot carry a DNS answer.
pub const MIN_OVERLAY_MTU: u32 = 576;

/// The MTU for overlay networks whose VXLAN traffic leaves through `underlay` (a link in
/// `netns`): its MTU minus [`VXLAN_OVERHEAD`], at least [`MIN_OVERLAY_MTU`].
pub fn overlay_mtu_over(netns: &Path, underlay: &str) -> Result<u32, OverlayError> {
    let mtu = with_handle(netns, |handle| async move {
        let link = link_by_name(&handle, underlay, netns)
            .await?
            .ok_or_else(|| OverlayError::LinkMissing {
                link: underlay.to_string(),
                netns: netns.to_path_buf(),
            })?;
        Ok(link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        }))
    })?;
    Ok(overlay_mtu_for(
        mtu.unwrap_or(super::DEFAULT_MTU + VXLAN_OVERHEAD),
    ))
}

/// The overlay MTU over an underlay of MTU `underlay`.
pub fn overlay_mtu_for(underlay: u32) -> u32 {
    underlay.saturating_sub(VXLAN_OVERHEAD).max(MIN_OVERLAY_MTU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_is_the_underlay_minus_vxlan() {
        assert_eq!(overlay_mtu_for(1500), super::super::DEFAULT_MTU);
        assert_eq!(overlay_mtu_for(9000), 8950);
        assert_eq!(overlay_mtu_for(1420), 1370);
        assert_eq!(overlay_mtu_for(600), MIN_OVERLAY_MTU);
        assert_eq!(overlay_mtu_for(0), MIN_OVERLAY_MTU);
    }
}
