//! The ARP responder for VIPs: a task's ARP request for a VIP on its subnet is answered in
//! place (VIP -> `02:42:<vip>`) and sent straight back to the task, so no neighbour entry has
//! to be kept in every task's namespace, and the request never floods the overlay.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_redirect, programs::TcContext};
use shoal_common::lb::LbEvent;

use super::{
    headers::{ETH_LEN, mac_of},
    maps::{SHOAL_LB_VIPS, count_event},
};

/// The Ethernet/IPv4 ARP header: htype, ptype, hlen, plen, op.
const ARP_REQUEST_HEAD: [u8; 8] = [0, 1, 8, 0, 6, 4, 0, 1];
const ARP_OP_REPLY: u8 = 2;
/// Ethernet header + ARP payload for IPv4.
const ARP_FRAME_LEN: usize = ETH_LEN + 28;

/// Answers the frame (an ARP frame: the ethertype was checked) if it is a request for a VIP;
/// anything else passes.
#[inline(always)]
pub fn answer_vip_request(ctx: &TcContext) -> i32 {
    let Ok(mut frame) = ctx.load::<[u8; ARP_FRAME_LEN]>(0) else {
        return TC_ACT_OK as i32;
    };
    let arp = ETH_LEN;
    if frame[arp..arp + 8] != ARP_REQUEST_HEAD {
        return TC_ACT_OK as i32;
    }
    let target = u32::from_ne_bytes([
        frame[arp + 24],
        frame[arp + 25],
        frame[arp + 26],
        frame[arp + 27],
    ]);
    // SAFETY: the value is copied out at once; see aya's note on hash map aliasing.
    if unsafe { SHOAL_LB_VIPS.get(&target) }.is_none() {
        return TC_ACT_OK as i32;
    }
    let vip_mac = mac_of(target);
    let mut requester_mac = [0u8; 6];
    requester_mac.copy_from_slice(&frame[arp + 8..arp + 14]);
    let mut requester_ip = [0u8; 4];
    requester_ip.copy_from_slice(&frame[arp + 14..arp + 18]);

    frame[0..6].copy_from_slice(&requester_mac);
    frame[6..12].copy_from_slice(&vip_mac);
    frame[arp + 7] = ARP_OP_REPLY;
    frame[arp + 8..arp + 14].copy_from_slice(&vip_mac);
    frame[arp + 14..arp + 18].copy_from_slice(&target.to_ne_bytes());
    frame[arp + 18..arp + 24].copy_from_slice(&requester_mac);
    frame[arp + 24..arp + 28].copy_from_slice(&requester_ip);
    if ctx.store(0, &frame, 0).is_err() {
        return TC_ACT_OK as i32;
    }
    count_event(LbEvent::ArpReplied);
    // SAFETY: plain helper call on this skb's own interface.
    unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
}
