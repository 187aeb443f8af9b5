//! Turning a client's TCP segment into the RST a closed port would send, from the VIP, and
//! handing it straight back to the client: connections to a VIP with no backend are refused at
//! once, and connections whose backend went away fail fast instead of hanging.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};

use super::checksum::{fold, sum_words};
use super::headers::{Ipv4Flow, TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN};

/// Ethernet + IPv4 without options + TCP without options.
pub(crate) const RESET_LEN: usize = 54;
const IP: usize = 14;
const TCP: usize = 34;

/// Replaces the segment with a reset and redirects it back out of the interface it came in on
/// (towards the task). Segments with IP options, and resets themselves, are only dropped.
#[inline(always)]
pub fn reply_with_reset(ctx: &TcContext, flow: &Ipv4Flow) -> i32 {
    if flow.ihl != 5 {
        return TC_ACT_SHOT as i32;
    }
    let Ok(seg) = ctx.load::<[u8; RESET_LEN]>(0) else {
        return TC_ACT_SHOT as i32;
    };
    let Some(out) = reset_for(&seg) else {
        return TC_ACT_SHOT as i32;
    };

    // SAFETY: helper calls on this program's own skb.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, RESET_LEN as u32, 0) != 0 {
            return TC_ACT_SHOT as i32;
        }
    }
    if flow.l4 != TCP || ctx.store(0, &out, 0).is_err() {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: as above.
    unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
}

/// The reset for `seg` (the first bytes of an Ethernet/IPv4/TCP frame without IP options),
/// back to its sender from the address and MAC it was sent to; `None` for a reset (never
/// answered). Also the routing mesh's (XDP) reset.
#[inline(always)]
pub(crate) fn reset_for(seg: &[u8; RESET_LEN]) -> Option<[u8; RESET_LEN]> {
    let flags = seg[TCP + 13];
    if flags & TCP_RST != 0 {
        return None;
    }
    let tot_len = u16::from_be_bytes([seg[IP + 2], seg[IP + 3]]);
    let header_len = 20 + u16::from(seg[TCP + 12] >> 4) * 4;
    let mut consumed = u32::from(tot_len.saturating_sub(header_len));
    consumed += u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    let seq = u32::from_be_bytes([seg[TCP + 4], seg[TCP + 5], seg[TCP + 6], seg[TCP + 7]]);
    let ack = u32::from_be_bytes([seg[TCP + 8], seg[TCP + 9], seg[TCP + 10], seg[TCP + 11]]);
    // RFC 9293 3.10.7.1: if the segment has an ACK, the reset takes its sequence number from
    // it; otherwise sequence 0 and an ACK of everything the segment occupied.
    let (rst_seq, rst_ack, rst_flags) = if flags & TCP_ACK_FLAG != 0 {
        (ack, 0, TCP_RST)
    } else {
        (0, seq.wrapping_add(consumed), TCP_RST | TCP_ACK_FLAG)
    };

    let mut out = [0u8; RESET_LEN];
    // Ethernet: back to the sender, from the MAC it sent to.
    out[0..6].copy_from_slice(&seg[6..12]);
    out[6..12].copy_from_slice(&seg[0..6]);
    out[12] = 0x08;
    // IPv4: 20 bytes, DF, TTL 64, TCP, swapped addresses.
    out[IP] = 0x45;
    out[IP + 3] = 40;
    out[IP + 6] = 0x40;
    out[IP + 8] = 64;
    out[IP + 9] = 6;
    out[IP + 12..IP + 16].copy_from_slice(&seg[IP + 16..IP + 20]);
    out[IP + 16..IP + 20].copy_from_slice(&seg[IP + 12..IP + 16]);
    let ip_check = fold(sum_words(&out, IP, IP + 20, 0));
    out[IP + 10..IP + 12].copy_from_slice(&ip_check.to_be_bytes());
    // TCP: ports swapped, no options, window 0.
    out[TCP..TCP + 2].copy_from_slice(&seg[TCP + 2..TCP + 4]);
    out[TCP + 2..TCP + 4].copy_from_slice(&seg[TCP..TCP + 2]);
    out[TCP + 4..TCP + 8].copy_from_slice(&rst_seq.to_be_bytes());
    out[TCP + 8..TCP + 12].copy_from_slice(&rst_ack.to_be_bytes());
    out[TCP + 12] = 0x50;
    out[TCP + 13] = rst_flags;
    // Pseudo header: addresses, protocol, TCP length (20).
    let pseudo = sum_words(&out, IP + 12, IP + 20, 6 + 20);
    let tcp_check = fold(sum_words(&out, TCP, RESET_LEN, pseudo));
    out[TCP + 16..TCP + 18].copy_from_slice(&tcp_check.to_be_bytes());
    Some(out)
}
