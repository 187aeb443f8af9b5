//! The Internet checksum of the frames the programs build from scratch on the stack (resets,
//! ICMP port unreachable), over fixed-size arrays so every index is bounded for the verifier.

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
