//! ICMP errors about a balanced flow, translated back to the client's view: a backend (or a
//! router on its way) answers the NAT-ed packet `client -> backend`, so its error (port
//! unreachable, fragmentation needed, time exceeded) names the backend, which the client's
//! socket, connected to the VIP, does not know: the error would be lost (a UDP client waits
//! for its timeout instead of getting `ECONNREFUSED`; path MTU discovery stalls). As Linux's
//! NAT does for ICMP (`nf_nat_icmp_reply_translation`), the error's source and its quoted
//! packet's destination get the VIP back, with the outer IP, the quoted IP and UDP, and the
//! ICMP checksums kept right, and the frame comes from the VIP's MAC.

use aya_ebpf::programs::TcContext;

use super::{
    checksum::{replace16, replace32},
    find_flow,
    headers::{IP, IP_CHECK, IP_SRC, PROTO_TCP, PROTO_UDP, mac_of},
    nat,
};
use shoal_common::lb::{FLOW_REPLY, FlowKey};

/// The ICMP header after an outer IPv4 header without options, and the quoted packet.
const ICMP: usize = IP + 20;
const ICMP_CHECK: usize = ICMP + 2;
const INNER: usize = ICMP + 8;
const INNER_CHECK: usize = INNER + 10;
const INNER_SRC: usize = INNER + 12;
const INNER_DST: usize = INNER + 16;
const INNER_L4: usize = INNER + 20;
const INNER_UDP_CHECK: usize = INNER_L4 + 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const IPV4_NO_OPTIONS: u8 = 0x45;

/// What the translation did.
pub enum Translated {
    /// Not an error about a balanced flow: left alone.
    NotOurs,
    /// Rewritten to come from the VIP.
    Done,
    /// A helper failed half-way: the frame is damaged and must be dropped.
    Failed,
}

/// Translates an ICMP error on its way to a task, if it is about one of its balanced flows.
#[inline(always)]
pub fn translate(ctx: &TcContext) -> Translated {
    let Some((backend, vip, inner_proto)) = balanced_flow(ctx) else {
        return Translated::NotOurs;
    };
    match rewrite(ctx, backend, vip, inner_proto) {
        Ok(()) => Translated::Done,
        Err(_) => Translated::Failed,
    }
}

/// The backend the quoted packet went to and the VIP it was sent to, from the flow's reply
/// entry, if the frame is a destination unreachable or time exceeded quoting a balanced flow.
#[inline(always)]
fn balanced_flow(ctx: &TcContext) -> Option<(u32, u32, u8)> {
    if ctx.load::<u8>(IP).ok()? != IPV4_NO_OPTIONS {
        return None;
    }
    let kind = ctx.load::<u8>(ICMP).ok()?;
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return None;
    }
    if ctx.load::<u8>(INNER).ok()? != IPV4_NO_OPTIONS {
        return None;
    }
    let proto = ctx.load::<u8>(INNER + 9).ok()?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let client = ctx.load::<u32>(INNER_SRC).ok()?;
    let backend = ctx.load::<u32>(INNER_DST).ok()?;
    let client_port = ctx.load::<u16>(INNER_L4).ok()?;
    let backend_port = ctx.load::<u16>(INNER_L4 + 2).ok()?;
    // The reply entry of the quoted packet's flow: as the backend's answers carry it.
    let key = FlowKey {
        src_ip: backend,
        dst_ip: client,
        src_port: backend_port,
        dst_port: client_port,
        proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    let (state, _) = find_flow(&key)?;
    Some((backend, state.nat_ip, proto))
}

#[inline(always)]
fn rewrite(ctx: &TcContext, backend: u32, vip: u32, inner_proto: u8) -> Result<(), i64> {
    let icmp_check = ctx.load::<u16>(ICMP_CHECK).map_err(|_| -1i64)?;
    let inner_check = ctx.load::<u16>(INNER_CHECK).map_err(|_| -1i64)?;
    let new_inner_check = replace32(inner_check, backend, vip);
    // The quoted UDP header's checksum covers the pseudo-header's destination (0: none).
    let udp = if inner_proto == PROTO_UDP {
        let check = ctx.load::<u16>(INNER_UDP_CHECK).map_err(|_| -1i64)?;
        (check != 0).then(|| {
            let new = replace32(check, backend, vip);
            (check, if new == 0 { 0xffff } else { new })
        })
    } else {
        None
    };
    // The ICMP checksum covers the quoted packet: its destination and both checksums.
    let mut new_icmp_check = replace32(icmp_check, backend, vip);
    new_icmp_check = replace16(new_icmp_check, inner_check, new_inner_check);
    if let Some((old, new)) = udp {
        new_icmp_check = replace16(new_icmp_check, old, new);
        ctx.store(INNER_UDP_CHECK, &new, 0)?;
    }
    ctx.store(INNER_DST, &vip, 0)?;
    ctx.store(INNER_CHECK, &new_inner_check, 0)?;
    ctx.store(ICMP_CHECK, &new_icmp_check, 0)?;
    // The error itself now comes from the VIP (the outer header has no L4 checksum over it).
    ctx.l3_csum_replace(IP_CHECK, u64::from(backend), u64::from(vip), 4)?;
    ctx.store(IP_SRC, &vip, 0)?;
    nat::set_src_mac(ctx, &mac_of(vip))
}
