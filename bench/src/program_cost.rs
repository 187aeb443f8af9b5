//! Per-packet cost of shoal's eBPF programs, measured by the kernel with BPF_PROG_TEST_RUN
//! (aya's TestRun, a large repeat count), against a do-nothing program of the same type: the
//! floor, which is the cost of the test-run harness itself. The ratio is what shoal's logic
//! adds on top of the unavoidable minimum.

use std::time::Duration;

use anyhow::Context as _;
use etherparse::PacketBuilder;
use shoal_common::programs;
use shoal_dataplane::Dataplane;

/// Runs per measurement, and measurements per program (the median is reported). Shared with
/// `lb_program_cost`.
pub(crate) const REPEAT: u32 = 1_000_000;
pub(crate) const ROUNDS: usize = 5;

pub fn run() -> anyhow::Result<()> {
    let dataplane = Dataplane::load(None).context("loading the eBPF programs")?;
    let frame = udp_frame();
    println!(
        "program-cost: {}-byte UDP frame, median of {ROUNDS} x {REPEAT} runs",
        frame.len()
    );
    println!("{:<20} {:>10} {:>10}", "program", "ns/packet", "vs floor");
    for (floor, measured) in [
        (programs::XDP_FLOOR, programs::XDP_UNDERLAY),
        (programs::TC_FLOOR, programs::TC_INGRESS),
        (programs::TC_FLOOR, programs::TC_EGRESS),
    ] {
        let floor_ns = median_ns(&dataplane, floor, &frame)?;
        let measured_ns = median_ns(&dataplane, measured, &frame)?;
        println!("{floor:<20} {floor_ns:>10.1} {:>10.2}", 1.0);
        println!(
            "{measured:<20} {measured_ns:>10.1} {:>10.2}",
            measured_ns / floor_ns
        );
    }
    Ok(())
}

/// The kernel's mean time per run of `program` on `frame`, in ns: the median of `ROUNDS`
/// test runs of `REPEAT` runs each.
pub(crate) fn median_ns(
    dataplane: &Dataplane,
    program: &'static str,
    frame: &[u8],
) -> anyhow::Result<f64> {
    let mut samples: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            dataplane
                .test_run(program, frame, REPEAT)
                .map(|outcome| outcome.duration)
                .with_context(|| format!("test run of {program}"))
        })
        .collect::<Result<_, _>>()?;
    samples.sort();
    Ok(samples[ROUNDS / 2].as_nanos() as f64)
}

fn udp_frame() -> Vec<u8> {
    let payload = [0u8; 64];
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40000, 80);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut frame, &payload);
    frame
}
