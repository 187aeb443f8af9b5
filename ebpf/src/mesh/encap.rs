//! VXLAN encapsulation toward a task's node, and the verdict that sends the frame on.
//!
//! The outer headers are what the kernel's VXLAN device would write: the node's data-path
//! address to the task's VTEP, UDP to the VXLAN port with a source port from the flow (for
//! ECMP entropy) and no UDP checksum (allowed over IPv4, RFC 7348), the `ingress` VNI. A task
//! on another node: the route and neighbour toward its VTEP come from `bpf_fib_lookup`, and
//! the frame leaves again (`XDP_TX`, or a redirect when that route uses another interface).
//! The lookup's answer is kept per VTEP for [`ROUTE_TTL`] (`SHOAL_MESH_ROUTES`), as katran
//! keeps its gateway's MAC, but learned: a changed route or neighbour is followed within that
//! time. It is kept only if the route takes the largest frame the `ingress` MTU lets through,
//! so a kept route never skips a check the lookup would have made; a route with a smaller MTU
//! is looked up for every packet, with that packet's size, as before. A task on this node: the frame is handed to the kernel, addressed to the node's own VXLAN
//! socket, which delivers it into the `ingress` sandbox like any other VXLAN frame; its outer
//! source is then the client's address, since the kernel drops a packet from the wire that
//! claims one of its own addresses as source (a martian).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use shoal_common::mesh::{MeshConfig, MeshEvent, VXLAN_OVERHEAD};

use super::{
    ingress_mtu,
    maps::{CachedRoute, SHOAL_MESH_ROUTES},
    packet::{ETH_P_IP, Ipv4Header, PROTO_UDP, ipv4_checksum, write},
};

/// How long a route found toward a VTEP is used before it is looked up again, in jiffies (the
/// programs' clock, `crate::clock`): a second at 250 Hz (Debian's kernels), a quarter of one
/// at 1000 Hz, 2.5 s at 100 Hz.
const ROUTE_TTL: u64 = 250;

/// Outer UDP and VXLAN headers, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdpVxlan {
    src_port: u16,
    dst_port: u16,
    len: u16,
    check: u16,
    /// `I` flag: the VNI is valid.
    flags: [u8; 4],
    /// VNI in the top 24 bits.
    vni: [u8; 4],
}

const AF_INET: u8 = 2;
const ETH_LEN: usize = 14;
const OUTER_IP: usize = ETH_LEN;
const OUTER_UDP: usize = OUTER_IP + 20;

/// Wraps the (already rewritten) frame in VXLAN to `vtep` and returns the verdict.
/// `client_macs` are the destination and source MACs the frame arrived with; `now` is
/// `clock::now()` as the caller read it.
#[inline(always)]
pub fn send_to_vtep(
    ctx: &XdpContext,
    config: &MeshConfig,
    vtep: u32,
    entropy: u32,
    client_macs: ([u8; 6], [u8; 6]),
    client_ip: u32,
    now: u64,
) -> Result<u32, MeshEvent> {
    let inner_len = (ctx.data_end() - ctx.data()) as u16;
    // SAFETY: reading a field of the context the program was given.
    let in_ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let local = vtep == config.vtep_ip;
    let (dst_mac, src_mac, out_ifindex) = if local {
        // To ourselves: the frame came addressed to this interface, so its MACs will do.
        (client_macs.0, client_macs.1, in_ifindex)
    } else {
        let route = route(ctx, config, vtep, inner_len, in_ifindex, now)?;
        (route.dst_mac, route.src_mac, route.out_ifindex)
    };
    // SAFETY: the helper checks the headroom; all pointers are re-derived after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(VXLAN_OVERHEAD as i32)) } != 0 {
        return Err(MeshEvent::Malformed);
    }
    let mut ip = Ipv4Header {
        ver_ihl: 0x45,
        tos: 0,
        tot_len: (inner_len + 36).to_be(),
        id: 0,
        frag: 0,
        ttl: 64,
        proto: PROTO_UDP,
        check: 0,
        src: if local { client_ip } else { config.vtep_ip },
        dst: vtep,
    };
    ip.check = ipv4_checksum(&ip);
    let vni = config.vni;
    // Entropy only on the wire (ECMP); to our own socket one source port per client keeps the
    // node's conntrack (which sees that local delivery) at one entry per client, not per flow.
    let src_port = if local {
        0xc000
    } else {
        0xc000 | (fold_entropy(entropy) & 0x3fff)
    };
    let udp = UdpVxlan {
        src_port: src_port.to_be(),
        dst_port: config.vxlan_port,
        len: (inner_len + 16).to_be(),
        check: 0,
        flags: [0x08, 0, 0, 0],
        vni: [(vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0],
    };
    let written = write(ctx, 0, dst_mac)
        && write(ctx, 6, src_mac)
        && write(ctx, 12, ETH_P_IP)
        && write(ctx, OUTER_IP, ip)
        && write(ctx, OUTER_UDP, udp);
    if !written {
        return Err(MeshEvent::Malformed);
    }
    Ok(if local {
        xdp_action::XDP_PASS
    } else if out_ifindex == in_ifindex {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(out_ifindex, 0) as u32 }
    })
}

/// The route toward `vtep` for a frame of `inner_len` bytes before encapsulation: the kept
/// one while it is fresh, else a lookup (kept if it takes the largest frame, see the module).
#[inline(always)]
fn route(
    ctx: &XdpContext,
    config: &MeshConfig,
    vtep: u32,
    inner_len: u16,
    in_ifindex: u32,
    now: u64,
) -> Result<CachedRoute, MeshEvent> {
    // SAFETY: copied out at once.
    if let Some(kept) = unsafe { SHOAL_MESH_ROUTES.get(&vtep) }
        && kept.in_ifindex == in_ifindex
        && now.wrapping_sub(kept.found_at) < ROUTE_TTL
    {
        return Ok(*kept);
    }
    let largest = ingress_mtu(config) + ETH_LEN as u16;
    match look_up(ctx, config, vtep, largest, in_ifindex, now) {
        Ok(route) => {
            // Another CPU may race to the same answer: either write will do.
            let _ = SHOAL_MESH_ROUTES.insert(&vtep, &route, 0);
            Ok(route)
        }
        Err(ret) if ret == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) => {
            look_up(ctx, config, vtep, inner_len, in_ifindex, now).map_err(|_| MeshEvent::NoRoute)
        }
        Err(_) => Err(MeshEvent::NoRoute),
    }
}

/// `bpf_fib_lookup` toward `vtep` for a frame of `inner_len` bytes before encapsulation: the
/// next hop's MAC, ours and the interface, else the helper's return code.
#[inline(always)]
fn look_up(
    ctx: &XdpContext,
    config: &MeshConfig,
    vtep: u32,
    inner_len: u16,
    in_ifindex: u32,
    now: u64,
) -> Result<CachedRoute, i64> {
    // SAFETY: a plain-data struct of the kernel's ABI, all zero is valid.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = PROTO_UDP;
    params.dport = config.vxlan_port;
    params.__bindgen_anon_1.tot_len = inner_len + VXLAN_OVERHEAD as u16 - ETH_LEN as u16;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_3.ipv4_src = config.vtep_ip;
    params.__bindgen_anon_4.ipv4_dst = vtep;
    // SAFETY: the context and a params struct of the size passed.
    let ret = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(ret);
    }
    Ok(CachedRoute {
        found_at: now,
        in_ifindex,
        out_ifindex: params.ifindex,
        dst_mac: params.dmac,
        src_mac: params.smac,
    })
}

#[inline(always)]
fn fold_entropy(v: u32) -> u16 {
    let h = v.wrapping_mul(0x9e37_79b9);
    (h >> 16) as u16 ^ h as u16
}
