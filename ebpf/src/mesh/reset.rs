//! The routing mesh's answer to a TCP segment it cannot serve (no task for the port, or the
//! connection's task went away): the reset a closed port would send, from `node:P`, sent
//! straight back (`XDP_TX`), so clients fail at once instead of hanging. The frame is built by
//! the VIP load balancer's `reset_for`.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};

use super::packet::{read, write};
use crate::lb::reset::{RESET_LEN, reset_for};

/// Replaces the segment (IPv4 without options, as the mesh only takes those) with its reset
/// and sends it back; a reset itself, or a frame too short, is dropped.
#[inline(always)]
pub fn reply_with_reset(ctx: &XdpContext) -> u32 {
    let Some(out) = read::<[u8; RESET_LEN]>(ctx, 0).and_then(|seg| reset_for(&seg)) else {
        return xdp_action::XDP_DROP;
    };
    let len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helper checks the new length; pointers are re-derived after it.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, RESET_LEN as i32 - len) } != 0 || !write(ctx, 0, out) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}
