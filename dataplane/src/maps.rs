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
