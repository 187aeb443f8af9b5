//! The routing mesh's answer to a packet it cannot serve (no task for the port, or the
//! connection's task went away): what a closed port would send, from `node:P`, sent straight
//! back (`XDP_TX`), so clients fail at once instead of hanging: a TCP reset, or for UDP an
//! ICMP port unreachable; and to one too big for the ingress overlay, the ICMP fragmentation
//! needed a router on the path would send. The frames are built by the VIP load balancer's `reset_for` and
//! `unreachable_for`.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};

use super::packet::{read, write};
use crate::lb::{
    reset::{RESET_LEN, reset_for},
    unreachable::{DATAGRAM_LEN, frag_needed_for, unreachable_for},
};

/// Replaces the segment (IPv4 without options, as the mesh only takes those) with its reset
/// and sends it back; a reset itself, or a frame too short, is dropped.
#[inline(always)]
pub fn reply_with_reset(ctx: &XdpContext) -> u32 {
    let Some(out) = read::<[u8; RESET_LEN]>(ctx, 0).and_then(|seg| reset_for(&seg)) else {
        return xdp_action::XDP_DROP;
    };
    resize_and_send(ctx, &out)
}

/// Replaces the datagram (IPv4 without options) with its ICMP port unreachable and sends it
/// back; a frame too short is dropped.
#[inline(always)]
pub fn reply_with_unreachable(ctx: &XdpContext) -> u32 {
    let Some(datagram) = read::<[u8; DATAGRAM_LEN]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    resize_and_send(ctx, &unreachable_for(&datagram))
}

/// Replaces a packet too big for the ingress overlay (IPv4 without options) with an ICMP
/// "fragmentation needed" naming `mtu`, and sends it back: the client's path MTU discovery
/// then sends smaller packets (TCP lowers its MSS) instead of timing out.
#[inline(always)]
pub fn reply_with_frag_needed(ctx: &XdpContext, mtu: u16) -> u32 {
    let Some(packet) = read::<[u8; DATAGRAM_LEN]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    resize_and_send(ctx, &frag_needed_for(&packet, mtu))
}

/// Makes the frame `N` bytes long and writes `out` over it, then sends it back out of the
/// interface. A frame shorter than `N` grows at its head, whose room XDP guarantees (the
/// tailroom depends on how the driver, or veth, allocated the frame, and is often too small
/// for a short datagram's answer); a longer one is cut at its tail.
#[inline(always)]
fn resize_and_send<const N: usize>(ctx: &XdpContext, out: &[u8; N]) -> u32 {
    let delta = N as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helpers check the new bounds; pointers are re-derived after them.
    let resized = unsafe {
        if delta > 0 {
            bpf_xdp_adjust_head(ctx.ctx, -delta)
        } else {
            bpf_xdp_adjust_tail(ctx.ctx, delta)
        }
    };
    if resized != 0 || !write(ctx, 0, *out) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}
