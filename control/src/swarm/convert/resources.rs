//! `--limit-*` / `--reserve-*` between the API and the model, checked as swarmkit checks them
//! (`validateResources`, in its words) when the leader accepts a spec.

use crate::{api, cluster::Resources, swarm::error::Error};

/// swarmkit's floor for a CPU value: 0.001 CPU.
const MIN_NANO_CPUS: u64 = 1_000_000;
/// swarmkit's floor for a memory value: 4 MiB.
const MIN_MEMORY_BYTES: u64 = 4 << 20;

pub fn from_api(msg: Option<&api::ResourcesMsg>) -> Result<Resources, Error> {
    let Some(msg) = msg else {
        return Ok(Resources::default());
    };
    let r = Resources {
        limit_nano_cpus: msg.limit_nano_cpus,
        limit_memory_bytes: msg.limit_memory_bytes,
        limit_pids: msg.limit_pids,
        reserve_nano_cpus: msg.reserve_nano_cpus,
        reserve_memory_bytes: msg.reserve_memory_bytes,
    };
    for cpus in [r.limit_nano_cpus, r.reserve_nano_cpus] {
        if cpus != 0 && cpus < MIN_NANO_CPUS {
            return Err(Error::invalid(format!(
                "invalid cpu value {}: Must be at least {}",
                cpus as f64 / 1e9,
                MIN_NANO_CPUS as f64 / 1e9
            )));
        }
    }
    for bytes in [r.limit_memory_bytes, r.reserve_memory_bytes] {
        if bytes != 0 && bytes < MIN_MEMORY_BYTES {
            return Err(Error::invalid(format!(
                "invalid memory value {bytes}: Must be at least {MIN_MEMORY_BYTES}"
            )));
        }
    }
    if r.limit_memory_bytes != 0 && r.reserve_memory_bytes > r.limit_memory_bytes {
        return Err(Error::invalid(
            "memory reservation must be less than or equal to the memory limit",
        ));
    }
    if r.limit_nano_cpus != 0 && r.reserve_nano_cpus > r.limit_nano_cpus {
        return Err(Error::invalid(
            "cpu reservation must be less than or equal to the cpu limit",
        ));
    }
    Ok(r)
}

pub fn to_api(r: &Resources) -> Option<api::ResourcesMsg> {
    (!r.is_empty()).then_some(api::ResourcesMsg {
        limit_nano_cpus: r.limit_nano_cpus,
        limit_memory_bytes: r.limit_memory_bytes,
        limit_pids: r.limit_pids,
        reserve_nano_cpus: r.reserve_nano_cpus,
        reserve_memory_bytes: r.reserve_memory_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_floors_and_that_reservations_fit_limits() {
        let msg = |lc, lm, rc, rm| api::ResourcesMsg {
            limit_nano_cpus: lc,
            limit_memory_bytes: lm,
            limit_pids: 0,
            reserve_nano_cpus: rc,
            reserve_memory_bytes: rm,
        };
        let ok = msg(500_000_000, 64 << 20, 250_000_000, 32 << 20);
        let r = from_api(Some(&ok)).unwrap();
        assert_eq!(to_api(&r), Some(ok));
        assert_eq!(from_api(None).unwrap(), Resources::default());
        assert_eq!(to_api(&Resources::default()), None);
        let err = |m| from_api(Some(&m)).unwrap_err().to_string();
        assert!(err(msg(1000, 0, 0, 0)).contains("invalid cpu value"));
        assert!(err(msg(0, 1024, 0, 0)).contains("invalid memory value 1024"));
        assert!(err(msg(0, 8 << 20, 0, 16 << 20)).contains("memory reservation"));
        assert!(err(msg(1_000_000_000, 0, 2_000_000_000, 0)).contains("cpu reservation"));
    }
}
