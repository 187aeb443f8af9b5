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

use super::headers::{ETH_DST, ETH_SRC, IP_CHECK, Ipv4Flow, PROTO_TCP, TCP_CHECK, UDP_CHECK};

/// Replaces the address at `addr_offset` (source or destination) `from` -> `to`.
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
    let (check, flags) = if flow.proto == PROTO_TCP {
        (flow.l4 + TCP_CHECK, u64::from(BPF_F_PSEUDO_HDR))
    } else {
        (
            flow.l4 + UDP_CHECK,
            u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0),
        )
    };
    // The size (4) goes in the low bits of the flags, as the helper defines.
    ctx.l4_csum_replace(check, u64::from(from), u64::from(to), flags | 4)?;
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
