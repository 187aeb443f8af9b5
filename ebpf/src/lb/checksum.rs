//! The Internet checksum of the frames the programs build from scratch on the stack (resets,
//! ICMP port unreachable), over fixed-size arrays so every index is bounded for the verifier;
//! and its incremental update for a field rewritten in place (RFC 1624: echo replies, ICMP
//! errors translated back to a VIP).

/// Adds the big-endian 16-bit words of `bytes[start..end]` (`end - start` even) to `sum`.
#[inline(always)]
pub fn sum_words<const N: usize>(bytes: &[u8; N], start: usize, end: usize, mut sum: u32) -> u32 {
    let mut i = start;
    while i + 1 < end {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// The ones' complement of the folded ones' complement sum.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// RFC 1624's incremental update of a checksum (as loaded: wire bytes in a `u16`) for a 32-bit
/// field (wire bytes in a `u32`) going `from` -> `to`.
#[inline(always)]
pub fn replace32(check: u16, from: u32, to: u32) -> u16 {
    let halves = |v: u32| {
        let b = v.to_ne_bytes();
        (
            u16::from_ne_bytes([b[0], b[1]]),
            u16::from_ne_bytes([b[2], b[3]]),
        )
    };
    let (f0, f1) = halves(from);
    let (t0, t1) = halves(to);
    replace16(replace16(check, f0, t0), f1, t1)
}

/// The same for a 16-bit field. Ones' complement sums do not depend on the byte order, so the
/// words can stay as loaded.
#[inline(always)]
pub fn replace16(check: u16, from: u16, to: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!from) + u32::from(to);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
