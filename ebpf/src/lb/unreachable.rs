//! Turning a client's UDP datagram into the ICMP port unreachable a closed port would send
//! (type 3 code 3, quoting the datagram's IP header and first 8 bytes), from the address it was
//! sent to, and handing it straight back: a datagram to a VIP with no backend is refused at
//! once, and the client's connected socket gets `ECONNREFUSED`. The routing mesh (XDP) builds
//! the same frame with [`unreachable_for`], and with [`frag_needed_for`] the "fragmentation
//! needed" that tells a client's path MTU discovery what the overlay takes.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};

use super::checksum::{fold, sum_words};
use super::headers::Ipv4Flow;

/// What is read of the datagram: Ethernet + IPv4 without options + the UDP header.
pub(crate) const DATAGRAM_LEN: usize = 42;
/// What is sent: Ethernet + IPv4 + ICMP header + the quoted IP header and 8 bytes.
pub(crate) const UNREACHABLE_LEN: usize = 70;
const IP: usize = 14;
const ICMP: usize = 34;
const PROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// Linux's TOS for ICMP errors (precedence "internetwork control").
const TOS_INTERNETCONTROL: u8 = 0xc0;

/// Replaces the datagram with its port unreachable and redirects it back out of the interface
/// it came in on (towards the task). Datagrams with IP options are only dropped.
#[inline(always)]
pub fn reply_with_unreachable(ctx: &TcContext, flow: &Ipv4Flow) -> i32 {
    if flow.ihl != 5 {
        return TC_ACT_SHOT as i32;
    }
    let Ok(datagram) = ctx.load::<[u8; DATAGRAM_LEN]>(0) else {
        return TC_ACT_SHOT as i32;
    };
    let out = unreachable_for(&datagram);
    // SAFETY: helper calls on this program's own skb.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, UNREACHABLE_LEN as u32, 0) != 0 {
            return TC_ACT_SHOT as i32;
        }
    }
    if ctx.store(0, &out, 0).is_err() {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: as above.
    unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
}

/// The ICMP port unreachable for `datagram` (the first bytes of an Ethernet/IPv4/UDP frame
/// without IP options), back to its sender from the address and MAC it was sent to.
#[inline(always)]
pub(crate) fn unreachable_for(datagram: &[u8; DATAGRAM_LEN]) -> [u8; UNREACHABLE_LEN] {
    destination_unreachable(datagram, ICMP_PORT_UNREACH, 0)
}

/// The ICMP "fragmentation needed" (type 3 code 4, RFC 1191) for a packet bigger than `mtu`
/// (the first bytes of an Ethernet/IPv4/TCP-or-UDP frame without IP options: its IP header
/// and first 8 bytes are quoted, as path MTU discovery needs), from the address it was sent to.
#[inline(always)]
pub(crate) fn frag_needed_for(packet: &[u8; DATAGRAM_LEN], mtu: u16) -> [u8; UNREACHABLE_LEN] {
    destination_unreachable(packet, ICMP_FRAG_NEEDED, mtu)
}

/// A destination unreachable with `code` (and `mtu` in the next-hop MTU field, 0 unless the
/// code is fragmentation needed) quoting the frame's IP header and 8 bytes.
#[inline(always)]
fn destination_unreachable(
    datagram: &[u8; DATAGRAM_LEN],
    code: u8,
    mtu: u16,
) -> [u8; UNREACHABLE_LEN] {
    let mut out = [0u8; UNREACHABLE_LEN];
    // Ethernet: back to the sender, from the MAC it sent to.
    out[0..6].copy_from_slice(&datagram[6..12]);
    out[6..12].copy_from_slice(&datagram[0..6]);
    out[12] = 0x08;
    // IPv4: 20 bytes, TTL 64, ICMP, swapped addresses.
    out[IP] = 0x45;
    out[IP + 1] = TOS_INTERNETCONTROL;
    out[IP + 3] = (UNREACHABLE_LEN - IP) as u8;
    out[IP + 8] = 64;
    out[IP + 9] = PROTO_ICMP;
    out[IP + 12..IP + 16].copy_from_slice(&datagram[IP + 16..IP + 20]);
    out[IP + 16..IP + 20].copy_from_slice(&datagram[IP + 12..IP + 16]);
    let ip_check = fold(sum_words(&out, IP, ICMP, 0));
    out[IP + 10..IP + 12].copy_from_slice(&ip_check.to_be_bytes());
    // ICMP: destination unreachable, port unreachable; then the datagram's IP header and the
    // first 8 bytes after it (its UDP header), as received.
    out[ICMP] = ICMP_DEST_UNREACH;
    out[ICMP + 1] = code;
    out[ICMP + 6..ICMP + 8].copy_from_slice(&mtu.to_be_bytes());
    out[ICMP + 8..UNREACHABLE_LEN].copy_from_slice(&datagram[IP..DATAGRAM_LEN]);
    let icmp_check = fold(sum_words(&out, ICMP, UNREACHABLE_LEN, 0));
    out[ICMP + 2..ICMP + 4].copy_from_slice(&icmp_check.to_be_bytes());
    out
}
