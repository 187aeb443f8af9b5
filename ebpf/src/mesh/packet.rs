//! Direct packet access for the underlay XDP program, and one's-complement checksum updates.
//!
//! Only the common shape is parsed in place: Ethernet, a 20-byte IPv4 header (no options), TCP
//! or UDP. Values stay as loaded (network order read as little-endian integers), which is how
//! the map keys hold them; the one's-complement sum does not care about byte order as long as
//! every word is taken the same way (RFC 1071), so checksums are updated on loaded values.

use aya_ebpf::programs::XdpContext;

// The layouts are the tc programs' (`lb::headers`): one definition of the wire.
pub use crate::lb::headers::{
    ETH_P_IP, IP, IP_FRAG_MASK, Ipv4Header, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_CHECK, TCP_FLAGS,
    TCP_MIN, TCP_SEQ, UDP_CHECK, UDP_MIN,
};

/// Where the L4 header starts after an IPv4 header without options.
pub const L4: usize = crate::lb::headers::L4_NO_OPTIONS;

/// The first 4 bytes of TCP and UDP: the ports.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

/// The acknowledgment number's offset within the TCP header.
pub const TCP_ACK: usize = 8;

/// A pointer to a `T` at `offset`, if the frame holds it.
#[inline(always)]
pub fn at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Reads a `T` at `offset`, if the frame holds it.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: bounds checked by `at`; unaligned reads are fine on packet data.
    at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Writes `value` at `offset`; false if the frame is too short.
#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> bool {
    match at::<T>(ctx, offset) {
        // SAFETY: bounds checked by `at`.
        Some(p) => {
            unsafe { p.write_unaligned(value) };
            true
        }
        None => false,
    }
}

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The two 16-bit words of a loaded `u32`, added to `sum`.
#[inline(always)]
pub fn add32(sum: u32, v: u32) -> u32 {
    sum + (v & 0xffff) + (v >> 16)
}

/// RFC 1624 incremental update of `check` for words changing `old -> new`:
/// `~(~check + ~old + new)`. Pairs are 32-bit values: addresses, or ports zero-extended with
/// [`word`].
#[inline(always)]
pub fn update(check: u16, old_new: &[(u32, u32)]) -> u16 {
    let mut sum = u32::from(!check);
    for (old, new) in old_new {
        sum = add32(sum, !old);
        sum = add32(sum, *new);
    }
    !fold(sum)
}

/// A 16-bit value for [`update`]: zero-extended, its high half complements to `0xffff`, which
/// is -0 in one's complement, so it adds nothing.
#[inline(always)]
pub fn word(v: u16) -> u32 {
    u32::from(v)
}

/// The checksum of an IPv4 header without options (its `check` field zero).
#[inline(always)]
pub fn ipv4_checksum(h: &Ipv4Header) -> u16 {
    let mut sum = 0u32;
    sum += u32::from(u16::from_ne_bytes([h.ver_ihl, h.tos]));
    sum += u32::from(h.tot_len);
    sum += u32::from(h.id);
    sum += u32::from(h.frag);
    sum += u32::from(u16::from_ne_bytes([h.ttl, h.proto]));
    sum = add32(sum, h.src);
    sum = add32(sum, h.dst);
    !fold(sum)
}
