//! Header offsets and field reads for the frames the tc programs see (Ethernet first).
//!
//! The headers every packet needs are read in place (direct packet access: a bounds check
//! against `data_end`, then a plain load), after one `bpf_skb_pull_data` when they are not in
//! the skb's linear part ([`linear`]); a truncated frame is an error value, never an
//! out-of-bounds read. The rare paths (ARP, ICMP, resets, IP options) still use
//! `bpf_skb_load_bytes`, which works on any skb. Addresses and ports stay in network byte order
//! as loaded (`u32`/`u16` holding the wire bytes), matching the map keys.

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

/// The length of an IPv4 header without options, and where the L4 header then starts.
pub const IP_LEN: usize = 20;
pub const L4_NO_OPTIONS: usize = IP + IP_LEN;
/// Bytes of the L4 header that must be present: TCP's fixed header, UDP's header.
pub const TCP_MIN: usize = 20;
pub const UDP_MIN: usize = 8;

/// The fixed part of the IPv4 header, as laid out on the wire (fields as loaded).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

/// The first 14 bytes of a TCP header (UDP's 8 are read as its first 4: the ports).
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHead {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    offset: u8,
    flags: u8,
}

/// The IPv4 and L4 headers of a TCP or UDP packet, as far as the load balancer needs them:
/// everything any path of a program reads of a packet, read once ([`ipv4_flow`]).
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
    /// TCP: the segment's flags; 0 for UDP.
    pub tcp_flags: u8,
    /// TCP: its sequence number, as loaded; 0 for UDP.
    pub tcp_seq: u32,
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

/// Makes sure the frame's first `len` bytes are in the skb's linear part, where direct packet
/// access sees them: at once when they are (the stack puts the headers there: a local
/// socket's TSO skb has its headers linear and its payload in page fragments), else with one
/// `bpf_skb_pull_data` of `pull` bytes (at least `len`; fewer if the frame is shorter). False
/// if the frame is shorter than `len`.
#[inline(always)]
pub fn linear(ctx: &TcContext, len: usize, pull: usize) -> bool {
    if ctx.data() + len <= ctx.data_end() {
        return true;
    }
    let frame = ctx.len() as usize;
    len <= frame && ctx.pull_data(pull.min(frame) as u32).is_ok()
}

/// Reads a `T` at a constant `offset` of the linear part, if it holds it (bounds-checked
/// pointer read: no helper call).
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked just above; unaligned reads are fine on packet data.
    Some(unsafe { ((start + offset) as *const T).read_unaligned() })
}

/// The ethertype, as loaded (the Ethernet header is always linear at tc).
#[inline(always)]
pub fn ethertype(ctx: &TcContext) -> Option<u16> {
    read::<u16>(ctx, ETH_TYPE)
}

/// The fixed IPv4 header of an IPv4 frame (the ethertype was checked), pulled into the linear
/// part first if it is not there; `None` if the frame is too short for it. Not validated
/// (see [`ipv4_flow`]). What is made linear is the headers of a TCP packet without IP
/// options (the longest the programs read in place), or the whole frame if it is shorter: so
/// this is the one pull an IPv4 packet without options ever needs, and [`ipv4_flow`] reads
/// its L4 header with a bounds check alone (one `bpf_skb_pull_data` call site in a program
/// also keeps its code simple enough for LLVM's BPF backend: with two, it once kept a
/// register across the call).
#[inline(always)]
pub fn ipv4_header(ctx: &TcContext) -> Option<Ipv4Header> {
    const HEADERS: usize = L4_NO_OPTIONS + TCP_MIN;
    let frame = ctx.len() as usize;
    if !linear(ctx, HEADERS.min(frame), HEADERS) {
        return None;
    }
    read::<Ipv4Header>(ctx, IP)
}

/// Parses the L4 header of an IPv4 packet whose fixed header is `ip`: the ports, and a TCP
/// segment's flags and sequence number. Without IP options (all but never seen) the headers
/// are read in place ([`ipv4_header`] made them linear); with options the L4 header sits at
/// a variable offset and is read with `bpf_skb_load_bytes`, which keeps every direct access at
/// a constant offset (what the verifier can check without tracking a variable one).
#[inline(always)]
pub fn ipv4_flow(ctx: &TcContext, ip: &Ipv4Header) -> Result<Ipv4Flow, NotAFlow> {
    let ihl = ip.ver_ihl & 0x0f;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(NotAFlow::Truncated);
    }
    if ip.frag & IP_FRAG_MASK != 0 {
        return Err(NotAFlow::Fragment);
    }
    let proto = ip.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(NotAFlow::OtherProtocol);
    }
    let is_tcp = proto == PROTO_TCP;
    // The fixed part of the L4 header must be there: 20 bytes for TCP, 8 for UDP.
    let l4_min = if is_tcp { TCP_MIN } else { UDP_MIN };
    let l4 = IP + usize::from(ihl) * 4;
    let (ports, tcp_flags, tcp_seq) = if ihl == 5 {
        // Linear already, as far as the frame goes (see `ipv4_header`).
        if is_tcp {
            let tcp = read::<TcpHead>(ctx, L4_NO_OPTIONS).ok_or(NotAFlow::Truncated)?;
            ((tcp.src_port, tcp.dst_port), tcp.flags, tcp.seq)
        } else {
            let ports = read::<[u16; 2]>(ctx, L4_NO_OPTIONS).ok_or(NotAFlow::Truncated)?;
            ((ports[0], ports[1]), 0, 0)
        }
    } else {
        if (ctx.len() as usize) < l4 + l4_min {
            return Err(NotAFlow::Truncated);
        }
        let load = |at: usize| ctx.load::<u32>(l4 + at).map_err(|_| NotAFlow::Truncated);
        let ports = load(L4_SRC_PORT)?.to_ne_bytes();
        let ports = (
            u16::from_ne_bytes([ports[0], ports[1]]),
            u16::from_ne_bytes([ports[2], ports[3]]),
        );
        if is_tcp {
            let flags = ctx
                .load::<u8>(l4 + TCP_FLAGS)
                .map_err(|_| NotAFlow::Truncated)?;
            (ports, flags, load(TCP_SEQ)?)
        } else {
            (ports, 0, 0)
        }
    };
    Ok(Ipv4Flow {
        l4,
        ihl,
        proto,
        src_ip: ip.src,
        dst_ip: ip.dst,
        src_port: ports.0,
        dst_port: ports.1,
        tcp_flags,
        tcp_seq,
    })
}

/// The MAC of an address as loaded (network-order `u32`): `02:42:a.b.c.d`.
#[inline(always)]
pub fn mac_of(ip: u32) -> [u8; 6] {
    shoal_common::lb::mac_for_ip(ip.to_ne_bytes())
}
