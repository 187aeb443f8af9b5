//! Header offsets and field reads for the frames the tc programs see (Ethernet first).
//!
//! Fields are read with `bpf_skb_load_bytes`, which bounds-checks against the skb, so a
//! truncated frame is an error value, never an out-of-bounds read. Addresses and ports stay in
//! network byte order as loaded (`u32`/`u16` holding the wire bytes), matching the map keys.

use aya_ebpf::programs::TcContext;

pub const ETH_LEN: usize = 14;
pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
pub const ETH_TYPE: usize = 12;
/// Ethertypes as loaded (wire bytes read as a little-endian `u16`).
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_ARP: u16 = 0x0806u16.to_be();

pub const IP: usize = ETH_LEN;
pub const IP_FRAG: usize = IP + 6;
pub const IP_PROTO: usize = IP + 9;
pub const IP_CHECK: usize = IP + 10;
pub const IP_SRC: usize = IP + 12;
pub const IP_DST: usize = IP + 16;
/// More-fragments flag and fragment offset, as loaded.
pub const IP_FRAG_MASK: u16 = 0x3fffu16.to_be();

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Offsets within the L4 header.
pub const L4_SRC_PORT: usize = 0;
pub const L4_DST_PORT: usize = 2;
pub const TCP_SEQ: usize = 4;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CHECK: usize = 16;
pub const UDP_CHECK: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK_FLAG: u8 = 0x10;

/// The IPv4 header of a TCP or UDP packet, as far as the load balancer needs it.
#[derive(Clone, Copy)]
pub struct Ipv4Flow {
    /// Offset of the L4 header (after IP options, if any).
    pub l4: usize,
    pub ihl: u8,
    pub proto: u8,
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Why a frame is not an unfragmented IPv4 TCP/UDP packet.
pub enum NotAFlow {
    /// Too short for its own headers.
    Truncated,
    /// A fragment (no ports, or not only the first part of them).
    Fragment,
    /// Not TCP or UDP.
    OtherProtocol,
}

#[inline(always)]
pub fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, NotAFlow> {
    ctx.load::<T>(offset).map_err(|_| NotAFlow::Truncated)
}

/// Parses the IPv4 and L4 headers of an IPv4 frame (the ethertype was checked).
#[inline(always)]
pub fn ipv4_flow(ctx: &TcContext) -> Result<Ipv4Flow, NotAFlow> {
    let ver_ihl: u8 = load(ctx, IP)?;
    let ihl = ver_ihl & 0x0f;
    if ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(NotAFlow::Truncated);
    }
    let frag: u16 = load(ctx, IP_FRAG)?;
    if frag & IP_FRAG_MASK != 0 {
        return Err(NotAFlow::Fragment);
    }
    let proto: u8 = load(ctx, IP_PROTO)?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(NotAFlow::OtherProtocol);
    }
    let l4 = IP + usize::from(ihl) * 4;
    // The fixed part of the L4 header must be there: 20 bytes for TCP, 8 for UDP.
    let l4_min = if proto == PROTO_TCP { 20 } else { 8 };
    if (ctx.len() as usize) < l4 + l4_min {
        return Err(NotAFlow::Truncated);
    }
    Ok(Ipv4Flow {
        l4,
        ihl,
        proto,
        src_ip: load(ctx, IP_SRC)?,
        dst_ip: load(ctx, IP_DST)?,
        src_port: load(ctx, l4 + L4_SRC_PORT)?,
        dst_port: load(ctx, l4 + L4_DST_PORT)?,
    })
}

/// The MAC of an address as loaded (network-order `u32`): `02:42:a.b.c.d`.
#[inline(always)]
pub fn mac_of(ip: u32) -> [u8; 6] {
    shoal_common::lb::mac_for_ip(ip.to_ne_bytes())
}
