//! How full the flow tables are, and what they take: what `shoal info` shows, so an operator
//! sees a table at its capacity. Every flow table is an LRU hash: when full, an insert takes
//! the least recently used entry (a quiet flow before a busy one), so a new flow is never
//! refused and no service wedges; what the LRU took is counted (`evicted` in
//! `shoal_lb_events_total` and `shoal_mesh_events_total`).

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::maps::MapData;
use shoal_common::{lb, mesh};

use crate::{Dataplane, error::Error};

/// One flow table now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowTable {
    /// The map's name (`SHOAL_LB_FLOWS`, ...).
    pub name: &'static str,
    /// Entries in use (two per flow: forward and reply).
    pub entries: usize,
    /// Entries it holds at most.
    pub capacity: u32,
    /// What the kernel charges for it (`memlock` of the map; LRU maps are preallocated, so
    /// this is their full size), when the map is pinned (the agent's); `None` otherwise.
    pub memory_bytes: Option<u64>,
}

impl Dataplane {
    /// The load balancer's and the mesh's flow tables, read now (each is walked to count its
    /// entries).
    pub fn flow_tables(&self) -> Result<Vec<FlowTable>, Error> {
        let tables = [
            (
                lb::FLOWS_MAP,
                self.lb().flow_entries()?.len(),
                self.table_sizes().lb_flows,
            ),
            (
                mesh::FLOWS_MAP,
                self.mesh().flow_entries()?.len(),
                self.table_sizes().mesh_flows,
            ),
            (
                mesh::UNCONFIRMED_MAP,
                self.mesh().unconfirmed_flow_entries()?.len(),
                mesh::MAX_UNCONFIRMED_ENTRIES,
            ),
            (
                mesh::RETURNS_MAP,
                self.mesh().return_entries()?.len(),
                self.table_sizes().mesh_returns(),
            ),
        ];
        Ok(tables
            .into_iter()
            .map(|(name, entries, capacity)| FlowTable {
                name,
                entries,
                capacity,
                memory_bytes: self.pin_dir().and_then(|dir| memlock(&dir.join(name))),
            })
            .collect())
    }
}

/// The `memlock` the kernel reports for the map pinned at `pin` (its fdinfo).
fn memlock(pin: &Path) -> Option<u64> {
    let map = MapData::from_pin(pin).ok()?;
    let fdinfo = fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        map.fd().as_fd().as_raw_fd()
    ))
    .ok()?;
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}
