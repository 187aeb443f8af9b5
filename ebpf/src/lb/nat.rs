//! Rewriting an address in place with both checksums kept right.
//!
//! `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` handles every checksum state an skb can be in:
//! a full checksum (updated incrementally), and the partial checksum local sockets leave for
//! offload (only the pseudo-header sum is adjusted, as the stack expects). UDP's "no checksum"
//! (0) stays 0 (`BPF_F_MARK_MANGLED_0`).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};

use super::{
    checksum::replace32,
    headers::{
        ETH_DST, ETH_SRC, IP_CHECK, IP_DST, IP_SRC, Ipv4Flow, L4_NO_OPTIONS, PROTO_TCP, TCP_CHECK,
        UDP_CHECK, mac_of, read,
    },
};

/// The Ethernet header and the fixed IPv4 header: what the load balancer's own rewrites
/// ([`nat_addr`], [`swap_addrs`]) write back in one `bpf_skb_store_bytes`.
const HEAD_LEN: usize = L4_NO_OPTIONS;

/// Which address of a packet a NAT replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// The load balancer's NAT: replaces the packet's source or destination address `from` ->
/// `to`, and the MAC on the same side with `to`'s. Two helper calls, where
/// [`rewrite_addr`] and a MAC store take four: `bpf_l4_csum_replace` for the L4 checksum
/// (whatever state it is in, as [`rewrite_addr`]), and the Ethernet and fixed IPv4 headers,
/// updated on the stack (the address, the MAC, the IP header checksum by RFC 1624), written
/// back with one `bpf_skb_store_bytes`. The IP header checksum changes as the address does, so
/// a `CHECKSUM_COMPLETE` sum stays right, as with `bpf_l3_csum_replace`.
///
/// Helpers, not direct packet writes: a program with any direct write gets a verifier
/// prologue that un-clones every cloned skb it sees, and every TCP segment a task sends is a
/// clone (TCP keeps the original for retransmission): packets that are not the load
/// balancer's would be copied for nothing. `bpf_skb_store_bytes` un-clones only what it writes.
#[inline(always)]
pub fn nat_addr(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    side: Side,
    from: u32,
    to: u32,
) -> Result<(), i64> {
    // The headers were parsed from the linear part: they are there.
    let mut head = read::<[u8; HEAD_LEN]>(ctx, 0).ok_or(-1i64)?;
    let (mac_at, addr_at) = match side {
        Side::Src => (ETH_SRC, IP_SRC),
        Side::Dst => (ETH_DST, IP_DST),
    };
    head[mac_at..mac_at + 6].copy_from_slice(&mac_of(to));
    if from != to {
        let check = u16::from_ne_bytes([head[IP_CHECK], head[IP_CHECK + 1]]);
        head[IP_CHECK..IP_CHECK + 2].copy_from_slice(&replace32(check, from, to).to_ne_bytes());
        head[addr_at..addr_at + 4].copy_from_slice(&to.to_ne_bytes());
        l4_csum_addr(ctx, flow, from, to)?;
    }
    ctx.store(0, &head, 0)
}

/// Swaps the packet's source and destination addresses, and sets both MACs to theirs: the
/// hairpin. Neither checksum changes (both sum the same two words as before), so this is one
/// `bpf_skb_store_bytes`.
#[inline(always)]
pub fn swap_addrs(ctx: &TcContext, flow: &Ipv4Flow) -> Result<(), i64> {
    let mut head = read::<[u8; HEAD_LEN]>(ctx, 0).ok_or(-1i64)?;
    let (src, dst) = (flow.dst_ip, flow.src_ip);
    head[ETH_DST..ETH_DST + 6].copy_from_slice(&mac_of(dst));
    head[ETH_SRC..ETH_SRC + 6].copy_from_slice(&mac_of(src));
    head[IP_SRC..IP_SRC + 4].copy_from_slice(&src.to_ne_bytes());
    head[IP_DST..IP_DST + 4].copy_from_slice(&dst.to_ne_bytes());
    ctx.store(0, &head, 0)
}

/// The L4 checksum's update for an address `from` -> `to` (in its pseudo-header).
#[inline(always)]
fn l4_csum_addr(ctx: &TcContext, flow: &Ipv4Flow, from: u32, to: u32) -> Result<(), i64> {
    let (check, flags) = if flow.proto == PROTO_TCP {
        (flow.l4 + TCP_CHECK, u64::from(BPF_F_PSEUDO_HDR))
    } else {
        (
            flow.l4 + UDP_CHECK,
            u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0),
        )
    };
    // The size (4) goes in the low bits of the flags, as the helper defines.
    ctx.l4_csum_replace(check, u64::from(from), u64::from(to), flags | 4)
}

/// Replaces the address at `addr_offset` (source or destination) `from` -> `to` (the routing
/// mesh's reply program, which rewrites ports too).
#[inline(always)]
pub fn rewrite_addr(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    addr_offset: usize,
    from: u32,
    to: u32,
) -> Result<(), i64> {
    if from == to {
        return Ok(());
    }
    l4_csum_addr(ctx, flow, from, to)?;
    ctx.l3_csum_replace(IP_CHECK, u64::from(from), u64::from(to), 4)?;
    ctx.store(addr_offset, &to, 0)
}

/// Replaces the port at `port_offset` (in the L4 header) `from` -> `to`. Ports are not in the
/// pseudo-header: with a partial checksum the helper leaves the field alone, as it must.
#[inline(always)]
pub fn rewrite_port(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    port_offset: usize,
    from: u16,
    to: u16,
) -> Result<(), i64> {
    if from == to {
        return Ok(());
    }
    let (check, flags) = if flow.proto == PROTO_TCP {
        (flow.l4 + TCP_CHECK, 0)
    } else {
        (flow.l4 + UDP_CHECK, u64::from(BPF_F_MARK_MANGLED_0))
    };
    ctx.l4_csum_replace(check, u64::from(from), u64::from(to), flags | 2)?;
    ctx.store(flow.l4 + port_offset, &to, 0)
}

/// Sets the destination MAC (the bridge forwards on it: to a local task's port, or to
/// `vxlan0` through the remote task's static FDB entry).
#[inline(always)]
pub fn set_dst_mac(ctx: &TcContext, mac: &[u8; 6]) -> Result<(), i64> {
    ctx.store(ETH_DST, mac, 0)
}

/// Sets the source MAC (replies carry the VIP's MAC, as the client's ARP entry says).
#[inline(always)]
pub fn set_src_mac(ctx: &TcContext, mac: &[u8; 6]) -> Result<(), i64> {
    ctx.store(ETH_SRC, mac, 0)
}
