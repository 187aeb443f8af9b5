//! ICMP echo requests to a VIP, answered in place, as the node behind an IPVS virtual address
//! answers them: `ping VIP` from a task tells whether the service's address is there, whatever
//! its backends run. The request becomes its own reply (addresses and MACs swapped, type 8 ->
//! 0, the ICMP checksum adjusted for that one word: `checksum::replace16`) and goes straight
//! back to the task. Other ICMP to a VIP stays dropped and counted as malformed: nothing but
//! echo answers on a VIP's address.

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_redirect, programs::TcContext};
use shoal_common::lb::LbEvent;

use super::{
    checksum::replace16,
    headers::{ETH_DST, ETH_SRC, IP, IP_DST, IP_FRAG, IP_FRAG_MASK, IP_SRC},
    maps::count_event,
};

/// The ICMP header right after an IPv4 header without options.
const ICMP: usize = IP + 20;
const ICMP_CHECK: usize = ICMP + 2;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Version 4, header length 5 words: no options.
const IPV4_NO_OPTIONS: u8 = 0x45;

/// Answers an echo request to a VIP; drops (and counts) any other ICMP packet.
#[inline(always)]
pub fn answer(ctx: &TcContext) -> i32 {
    match reply_in_place(ctx) {
        Ok(()) => {
            // SAFETY: a helper call on this program's own skb.
            unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
        }
        Err(event) => {
            count_event(event);
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn reply_in_place(ctx: &TcContext) -> Result<(), LbEvent> {
    let malformed = |_| LbEvent::Malformed;
    if ctx.load::<u8>(IP).map_err(malformed)? != IPV4_NO_OPTIONS {
        return Err(LbEvent::Malformed);
    }
    if ctx.load::<u16>(IP_FRAG).map_err(malformed)? & IP_FRAG_MASK != 0 {
        return Err(LbEvent::Fragment);
    }
    let [kind, code] = ctx.load::<[u8; 2]>(ICMP).map_err(malformed)?;
    if kind != ICMP_ECHO_REQUEST || code != 0 {
        return Err(LbEvent::Malformed);
    }
    let check = ctx.load::<u16>(ICMP_CHECK).map_err(malformed)?;
    let macs = ctx.load::<[u8; 12]>(ETH_DST).map_err(malformed)?;
    let src = ctx.load::<u32>(IP_SRC).map_err(malformed)?;
    let dst = ctx.load::<u32>(IP_DST).map_err(malformed)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    // Destination then source MAC, both at once (ETH_SRC follows ETH_DST).
    const _: () = assert!(ETH_SRC == ETH_DST + 6);
    ctx.store(ETH_DST, &swapped, 0).map_err(malformed)?;
    // The IP header checksum stays: a ones' complement sum does not depend on the order of
    // its words.
    ctx.store(IP_SRC, &dst, 0).map_err(malformed)?;
    ctx.store(IP_DST, &src, 0).map_err(malformed)?;
    ctx.store(ICMP, &[0u8, 0u8], 0).map_err(malformed)?;
    // The type/code word goes 8/0 -> 0/0 (words as loaded, as the checksum is).
    let check = replace16(check, u16::from_ne_bytes([ICMP_ECHO_REQUEST, 0]), 0);
    ctx.store(ICMP_CHECK, &check, 0).map_err(malformed)?;
    Ok(())
}
