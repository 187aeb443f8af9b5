//! The clock flow entries and kept routes are stamped with: the kernel's jiffies.
//!
//! `bpf_jiffies64()` is one memory load: the verifier inlines it on 64-bit JITs, where
//! `bpf_ktime_get_coarse_ns()`, the clock it replaced, is a helper call (measured in
//! `lb-program-cost`: 13-17 ns of an established packet's and a reply's path, 30-35 ns of their
//! first, cold run). Both tick at the same moments (once a jiffy), so nothing is coarser; the
//! agent converts a stamp to CLOCK_MONOTONIC with one calibration (`dataplane::flow_clock`).

use aya_ebpf::helpers::bpf_jiffies64;

/// Now, in jiffies.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call (inlined by the verifier to a load of `jiffies_64`).
    unsafe { bpf_jiffies64() }
}
