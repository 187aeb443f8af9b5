//! What this node has for tasks, as dockerd reports it in `NodeDescription.Resources`: the
//! CPUs the agent may run on, and the host's memory. The managers set tasks' reservations
//! against it.

use std::fs;

use shoal_control::cluster::NodeResources;

pub fn host_resources() -> NodeResources {
    // The CPUs of the agent's affinity mask, as Go's runtime.NumCPU (what dockerd reports).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    NodeResources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .unwrap_or(0),
    }
}

/// `MemTotal:  24567892 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_memory() {
        let text = "MemTotal:       24567892 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total(text), Some(24_567_892 * 1024));
        assert_eq!(mem_total("MemFree: 3 kB\n"), None);
        assert!(host_resources().nano_cpus >= 1_000_000_000);
    }
}
