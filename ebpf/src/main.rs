//! shoal's kernel-side programs. Entry points are thin; the logic lives in one module per concern.
//!
//! # Layout
//! - `stats`: the per-CPU packet/byte counters every program updates.
//! - `clock`: the clock flow entries are stamped with (jiffies).
//! - `lb`: service VIP load balancing on the task-facing veths (tc).
//! - `mesh`: published ports: the underlay XDP program and the reply program (tc).
//! - `sock_lb`: node-local clients of published ports and tasks' VIP clients, balanced at the
//!   socket (cgroup `connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The round-robin cursor needs an atomic fetch-add, which the bpfel target exposes only as an
// intrinsic (it has no `core::sync::atomic` types). The crate is built with a pinned nightly.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod clock;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod mesh;
#[cfg(target_arch = "bpf")]
mod sock_lb;
#[cfg(target_arch = "bpf")]
mod stats;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, xdp_action},
        macros::{cgroup_sock_addr, classifier, xdp},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use shoal_common::stats::StatsSlot;

    use crate::{lb, mesh, sock_lb, stats};

    /// Underlay XDP hook: counts every frame, sends connections to published ports on to
    /// their tasks, and passes everything else to the stack.
    #[xdp]
    pub fn shoal_xdp(ctx: XdpContext) -> u32 {
        let len = ctx.data_end().saturating_sub(ctx.data());
        stats::count(StatsSlot::XdpUnderlayRx, len as u64);
        mesh::from_underlay(&ctx)
    }

    /// tc ingress of the node's ingress interface and of host-mode tasks' gateway-bridge
    /// ports: answers of published-port flows go back to their clients.
    #[classifier]
    pub fn shoal_tc_mesh_reply(ctx: TcContext) -> i32 {
        mesh::from_backend(&ctx)
    }

    /// tc ingress of a task-facing veth (what the task sends): counts, answers ARP for VIPs,
    /// balances traffic to VIPs.
    #[classifier]
    pub fn shoal_tc_ingress(ctx: TcContext) -> i32 {
        stats::count(StatsSlot::TcIngress, u64::from(ctx.len()));
        lb::from_task(&ctx)
    }

    /// tc egress of a task-facing veth (what the task receives): counts, undoes the VIP NAT
    /// on replies.
    #[classifier]
    pub fn shoal_tc_egress(ctx: TcContext) -> i32 {
        stats::count(StatsSlot::TcEgress, u64::from(ctx.len()));
        lb::to_task(&ctx)
    }

    /// `connect(2)` of an IPv4 socket anywhere on the host (cgroup v2 root): a connection from
    /// the node itself to one of its published ports, or from one of its tasks to a VIP, goes
    /// straight to a backend. Always allowed.
    #[cgroup_sock_addr(connect4)]
    pub fn shoal_connect4(ctx: SockAddrContext) -> i32 {
        sock_lb::connect4(&ctx);
        1
    }

    /// `getpeername(2)` of an IPv4 socket: a socket `shoal_connect4` balanced sees the address
    /// it connected to as its peer. Always allowed.
    #[cgroup_sock_addr(getpeername4)]
    pub fn shoal_getpeername4(ctx: SockAddrContext) -> i32 {
        sock_lb::getpeername4(&ctx);
        1
    }

    /// `sendmsg(2)` with an address on an IPv4 UDP socket: a datagram from the node to one of
    /// its published ports, or from one of its tasks to a VIP, goes straight to a backend.
    /// Always allowed.
    #[cgroup_sock_addr(sendmsg4)]
    pub fn shoal_sendmsg4(ctx: SockAddrContext) -> i32 {
        sock_lb::sendmsg4(&ctx);
        1
    }

    /// `recvmsg(2)` with an address on an IPv4 UDP socket: a datagram from a backend
    /// `shoal_sendmsg4` or `shoal_connect4` chose comes from the address the socket sent to.
    /// Always allowed.
    #[cgroup_sock_addr(recvmsg4)]
    pub fn shoal_recvmsg4(ctx: SockAddrContext) -> i32 {
        sock_lb::recvmsg4(&ctx);
        1
    }

    /// The XDP benchmark floor: does nothing but pass.
    #[xdp]
    pub fn shoal_xdp_floor(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// The flow entries' clock, read by the agent (`BPF_PROG_TEST_RUN`): writes `clock::now()`
    /// into the frame's first 8 bytes (native byte order) and passes. Never attached.
    #[xdp]
    pub fn shoal_flow_clock(ctx: XdpContext) -> u32 {
        let start = ctx.data();
        if start + 8 <= ctx.data_end() {
            // SAFETY: bounds-checked just above.
            unsafe { core::ptr::write_unaligned(start as *mut u64, crate::clock::now()) };
        }
        xdp_action::XDP_PASS
    }

    /// The tc benchmark floor: does nothing but pass.
    #[classifier]
    pub fn shoal_tc_floor(_ctx: TcContext) -> i32 {
        TC_ACT_OK
    }

    /// The socket-level balancer's benchmark floor: a `connect4` hook that does nothing but
    /// allow (what any program on the hook costs).
    #[cgroup_sock_addr(connect4)]
    pub fn shoal_connect4_floor(_ctx: SockAddrContext) -> i32 {
        1
    }

    /// The load balancer's benchmark floor: parses what it parses of every packet, and passes.
    #[classifier]
    pub fn shoal_tc_parse_floor(ctx: TcContext) -> i32 {
        lb::parse_only(&ctx)
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so this is dead code.
    unsafe { core::hint::unreachable_unchecked() }
}

/// On the host the crate is an empty binary, so `cargo check --workspace` works on stable.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
