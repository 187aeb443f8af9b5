//! shoal's kernel-side programs. Entry points are thin; the logic lives in one module per concern.
//!
//! # Layout
//! - `stats`: the per-CPU packet/byte counters every program updates.
//!
//! The programs only count and pass for now; later they grow into the VIP load balancer (tc)
//! and the ingress routing mesh (XDP).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod stats;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, xdp_action},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use shoal_common::stats::StatsSlot;

    use crate::stats;

    /// Underlay XDP hook: counts every frame and passes it to the stack.
    #[xdp]
    pub fn shoal_xdp(ctx: XdpContext) -> u32 {
        let len = ctx.data_end().saturating_sub(ctx.data());
        stats::count(StatsSlot::XdpUnderlayRx, len as u64);
        xdp_action::XDP_PASS
    }

    /// Task-facing tc ingress hook: counts and passes.
    #[classifier]
    pub fn shoal_tc_ingress(ctx: TcContext) -> i32 {
        stats::count(StatsSlot::TcIngress, u64::from(ctx.len()));
        TC_ACT_OK
    }

    /// Task-facing tc egress hook: counts and passes.
    #[classifier]
    pub fn shoal_tc_egress(ctx: TcContext) -> i32 {
        stats::count(StatsSlot::TcEgress, u64::from(ctx.len()));
        TC_ACT_OK
    }

    /// The XDP benchmark floor: does nothing but pass.
    #[xdp]
    pub fn shoal_xdp_floor(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// The tc benchmark floor: does nothing but pass.
    #[classifier]
    pub fn shoal_tc_floor(_ctx: TcContext) -> i32 {
        TC_ACT_OK
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
