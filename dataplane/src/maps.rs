//! Helpers every owner of the object's maps uses: taking a map out of the loaded object, naming
//! the map in errors, per-CPU zeros and sums, and addresses in the maps' byte order.

use std::net::Ipv4Addr;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use shoal_common::lb::LbCounters;

use crate::error::Error;

/// The error mapper for a failed operation on map `name`.
pub(crate) fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        name,
        source: Box::new(e),
    }
}

/// Takes map `name` out of the loaded object; each map has one owner.
pub(crate) fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Map, Error> {
    ebpf.take_map(name).ok_or(Error::MissingMap { name })
}

/// An address as the maps hold it: its four bytes in network order, read as a native `u32`.
pub(crate) fn octets(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The address behind a map's network-order `u32` (the inverse of [`octets`]).
pub(crate) fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

/// One zero per possible CPU: what resets a per-CPU array entry.
pub(crate) fn per_cpu_zeros<T: aya::Pod + Default>() -> Result<PerCpuValues<T>, Error> {
    let cpus = aya::util::nr_cpus().map_err(|(what, source)| Error::Io {
        what: "counting CPUs",
        path: what.into(),
        source,
    })?;
    PerCpuValues::try_from(vec![T::default(); cpus]).map_err(|source| Error::Io {
        what: "building per-CPU values",
        path: "per-cpu".into(),
        source,
    })
}

/// Entry `id` of a per-CPU counters map, summed over CPUs.
pub(crate) fn sum(
    map: &PerCpuArray<MapData, LbCounters>,
    id: u32,
    name: &'static str,
) -> Result<LbCounters, Error> {
    let per_cpu = map.get(&id, 0).map_err(map_error(name))?;
    let mut total = LbCounters::default();
    for cpu in per_cpu.iter() {
        total.add(cpu);
    }
    Ok(total)
}

/// One event counter's per-CPU values (index `index` of the events map `name`), or `None` if
/// the map has no entry for it: a map pinned by an older agent, made when there were fewer
/// events (an array lookup past its end is `ENOENT`; the programs' counts of it are lost the
/// same way, silently).
pub(crate) fn event_per_cpu(
    map: &PerCpuArray<MapData, u64>,
    index: u32,
    name: &'static str,
) -> Result<Option<Vec<u64>>, Error> {
    match map.get(&index, 0) {
        Ok(values) => Ok(Some(values.to_vec())),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) =>
        {
            Ok(None)
        }
        Err(e) => Err(map_error(name)(e)),
    }
}

/// An event counter summed over CPUs (0 where the map has no entry for it).
pub(crate) fn event_total(
    map: &PerCpuArray<MapData, u64>,
    index: u32,
    name: &'static str,
) -> Result<u64, Error> {
    Ok(event_per_cpu(map, index, name)?
        .unwrap_or_default()
        .into_iter()
        .fold(0, u64::wrapping_add))
}

/// Adds `n` to an event counter the agent keeps (the programs never write it), on the first
/// CPU's slot. The agent is the only writer, so read-add-write is safe.
pub(crate) fn add_to_event(
    map: &mut PerCpuArray<MapData, u64>,
    index: u32,
    n: u64,
    name: &'static str,
) -> Result<(), Error> {
    let Some(mut values) = event_per_cpu(map, index, name)?.filter(|_| n > 0) else {
        return Ok(());
    };
    if let Some(first) = values.first_mut() {
        *first = first.wrapping_add(n);
    }
    let values = PerCpuValues::try_from(values).map_err(|source| Error::Io {
        what: "building per-CPU values",
        path: name.into(),
        source,
    })?;
    map.set(index, values, 0).map_err(map_error(name))
}
