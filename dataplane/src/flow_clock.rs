//! The programs' clock, seen from userspace: flow entries are stamped in jiffies
//! (`bpf_jiffies64()`, one load the verifier inlines, where a nanosecond clock is a helper
//! call per packet); the agent's expiry rules think in CLOCK_MONOTONIC nanoseconds.
//!
//! The kernel advances jiffies from that same clock, one tick (`TICK_NSEC`, the resolution
//! `clock_getres(CLOCK_MONOTONIC_COARSE)` reports) at a time, from an offset fixed at boot, so
//! one reading of both converts any stamp, for as long as the system runs, to within a tick.
//! Userspace cannot read jiffies itself: the never-attached `shoal_flow_clock` program, run
//! once with `BPF_PROG_TEST_RUN`, writes them into its frame.

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use nix::time::{ClockId, clock_getres, clock_gettime};
use shoal_common::programs;

use crate::{
    error::Error,
    programs::{program, program_error},
};

/// One reading of jiffies and CLOCK_MONOTONIC together, and the tick between jiffies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowClock {
    jiffies: u64,
    monotonic_ns: u64,
    tick_ns: u64,
}

impl FlowClock {
    /// Reads both clocks: CLOCK_MONOTONIC just before and after the program's run, the middle
    /// taken as the moment of its reading (the syscall takes microseconds, a tick milliseconds).
    pub(crate) fn calibrate(ebpf: &Ebpf) -> Result<FlowClock, Error> {
        let name = programs::FLOW_CLOCK;
        let program = program::<Xdp>(ebpf, name)?;
        // The smallest frame the kernel takes for an XDP test run is an Ethernet header.
        let frame = [0u8; 64];
        let mut out = [0u8; 64];
        let before = monotonic_now_ns();
        let run = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .map_err(|e| program_error(name, e))?;
        let after = monotonic_now_ns();
        let jiffies = u64::from_ne_bytes(out[..8].try_into().unwrap_or_default());
        if run.data_size_out < 8 || jiffies == 0 {
            return Err(Error::NoFlowClock { program: name });
        }
        Ok(FlowClock {
            jiffies,
            monotonic_ns: before + (after - before) / 2,
            tick_ns: tick_ns(),
        })
    }

    /// The clock as of CLOCK_MONOTONIC `now_ns`: what the expiry rules compare stamps with.
    pub fn at(&self, now_ns: u64) -> FlowTime {
        let jiffies = if now_ns >= self.monotonic_ns {
            self.jiffies + (now_ns - self.monotonic_ns) / self.tick_ns
        } else {
            self.jiffies
                .saturating_sub((self.monotonic_ns - now_ns).div_ceil(self.tick_ns))
        };
        FlowTime {
            jiffies,
            tick_ns: self.tick_ns,
            monotonic_ns: now_ns,
        }
    }
}

/// A moment on the programs' clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTime {
    /// Jiffies then.
    pub jiffies: u64,
    /// Nanoseconds per jiffy.
    pub tick_ns: u64,
    /// CLOCK_MONOTONIC then.
    pub monotonic_ns: u64,
}

/// How far past now a stamp can be and still be jiffies: a racing packet stamps a tick or two
/// ahead of a reading; a billion jiffies (46 days at 250 Hz) ahead, it is not jiffies at all.
const AHEAD_OF_JIFFIES: u64 = 1_000_000_000;

impl FlowTime {
    /// Nanoseconds from the stamp `stamp` (jiffies) to this moment; 0 for a later stamp.
    /// A stamp far ahead is CLOCK_MONOTONIC nanoseconds, written by an agent from before the
    /// jiffies clock into maps this one re-adopted (jiffies start near 2^32 at boot, the
    /// nanoseconds pass that within seconds of it), and is read as such until a packet
    /// stamps the entry again.
    pub fn since(&self, stamp: u64) -> u64 {
        if stamp > self.jiffies.saturating_add(AHEAD_OF_JIFFIES) {
            return self.monotonic_ns.saturating_sub(stamp);
        }
        self.jiffies
            .saturating_sub(stamp)
            .saturating_mul(self.tick_ns)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the expiry rules and the agent think in.
pub fn monotonic_now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The kernel's tick: the resolution of the coarse monotonic clock, which advances once a
/// jiffy. 4 ms (250 Hz) if the kernel will not say.
fn tick_ns() -> u64 {
    clock_getres(ClockId::CLOCK_MONOTONIC_COARSE)
        .ok()
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .filter(|&ns| ns > 0)
        .unwrap_or(4_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 4_000_000;

    fn clock() -> FlowClock {
        FlowClock {
            jiffies: 1_000,
            monotonic_ns: 50 * 1_000_000_000,
            tick_ns: TICK,
        }
    }

    #[test]
    fn a_moment_converts_to_jiffies_from_the_calibration() {
        let later = clock().at(50 * 1_000_000_000 + 10 * TICK + 1);
        assert_eq!(later.jiffies, 1_010);
        let earlier = clock().at(50 * 1_000_000_000 - 10 * TICK);
        assert_eq!(earlier.jiffies, 990);
        // Before the calibration by less than a tick: the tick before it.
        assert_eq!(clock().at(50 * 1_000_000_000 - 1).jiffies, 999);
    }

    #[test]
    fn time_since_a_stamp_is_whole_ticks_and_never_negative() {
        let now = clock().at(50 * 1_000_000_000);
        assert_eq!(now.since(990), 10 * TICK);
        assert_eq!(now.since(1_000), 0);
        assert_eq!(
            now.since(2_000),
            0,
            "a stamp from a racing packet, after now"
        );
    }

    #[test]
    fn a_nanosecond_stamp_from_an_older_agent_is_read_as_one() {
        let now_ns = 3_600 * 1_000_000_000;
        let now = FlowClock {
            jiffies: 4_295_000_000,
            monotonic_ns: now_ns,
            tick_ns: TICK,
        }
        .at(now_ns);
        assert_eq!(now.since(now_ns - 20 * 1_000_000_000), 20 * 1_000_000_000);
        assert_eq!(now.since(now_ns + 1), 0);
    }

    #[test]
    fn the_kernel_reports_a_tick_between_100_and_1000_hz() {
        let tick = tick_ns();
        assert!((1_000_000..=10_000_000).contains(&tick), "{tick} ns");
    }
}
