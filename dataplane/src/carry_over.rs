//! Flow tables carried over a change of size (`--lb-flows`, `--mesh-flows`), so that resizing a
//! table resets no connection.
//!
//! A map's capacity is fixed when the kernel makes it, so a new size is a new map (`pins`
//! unpins the old one, the load makes and pins the new). The old table is kept open here and
//! its entries are copied into the new one: once when the new programs are loaded (before the
//! agent swaps them in), and again on every round of the agent's flow upkeep
//! ([`crate::Dataplane::carry_over`]) while any loaded program still uses the old table. The programs
//! of the last run keep running on it until the restarted agent has swapped its own in on
//! every interface, and a connection they open meanwhile has its entries only there. Once no
//! program uses it, a last copy is made and the old table is released.
//!
//! What a copy writes: an entry the old table holds and the new one lacks, and an entry the old
//! programs changed since it was copied (a later segment's time or flags) if the new programs
//! have not written it since. An entry the new programs made or changed is theirs: never
//! overwritten. A table made smaller than its entries keeps the most recently copied, by the
//! LRU's rule.

use std::collections::HashMap as StdHashMap;

use aya::{
    Pod,
    maps::{HashMap, Map, MapData, MapError},
};
use nix::libc;
use shoal_common::{
    lb::{self, FlowKey, FlowState},
    mesh::{self, MeshFlow, ReturnPath},
};
use tracing::{info, warn};

use crate::{error::Error, maps::map_error};

/// `BPF_NOEXIST`, `BPF_EXIST`: an update that only adds, or only replaces.
const NOEXIST: u64 = 1;
const EXIST: u64 = 2;

/// The old tables still being carried over into the new ones.
#[derive(Default)]
pub(crate) struct Carried {
    tables: Vec<Box<dyn CarriedTable>>,
}

impl Carried {
    /// Starts carrying `old`, the tables `pins` unpinned for their size (each by name, still
    /// open), into the maps of the same names the load made and pinned under `pin_dir`; makes
    /// the first copy. A table that cannot be carried is dropped with one line: its
    /// connections are reset, as without this.
    pub(crate) fn start(pin_dir: &std::path::Path, old: Vec<(&'static str, MapData)>) -> Carried {
        let mut carried = Carried::default();
        for (name, old) in old {
            let table =
                MapData::from_pin(pin_dir.join(name)).and_then(|new| carried_table(name, old, new));
            match table {
                Ok(mut table) => match table.copy() {
                    Ok(copied) => {
                        info!(
                            map = name,
                            entries = copied,
                            "flow table resized: its entries carried over"
                        );
                        carried.tables.push(table);
                    }
                    Err(e) => {
                        warn!(map = name, error = %e, "flow table resized: carrying its entries over failed; its connections are reset")
                    }
                },
                Err(e) => {
                    warn!(map = name, error = %e, "flow table resized: its entries cannot be carried over; its connections are reset")
                }
            }
        }
        carried
    }

    /// One round: copies into each new table what its old table gained or changed since the
    /// last round; releases the old tables no loaded program uses any more (after a last copy).
    /// Returns how many old tables are still carried.
    pub(crate) fn round(&mut self) -> usize {
        // Nothing carried (the usual case): no need to list the kernel's programs.
        if self.tables.is_empty() {
            return 0;
        }
        let in_use = map_ids_in_use();
        self.tables.retain_mut(|table| {
            let used = in_use
                .as_ref()
                .is_none_or(|ids| ids.contains(&table.old_id()));
            match table.copy() {
                Ok(copied) if !used => {
                    info!(map = table.name(), entries = copied, "flow table resized: the old table is no longer used, released");
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    warn!(map = table.name(), error = %e, "flow table resized: carrying entries over failed; the old table released");
                    false
                }
            }
        });
        self.tables.len()
    }
}

/// The IDs of the maps any loaded program uses, or `None` when they cannot be read (then
/// every old table is taken to be in use).
fn map_ids_in_use() -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    for program in aya::programs::loaded_programs() {
        // A program unloaded while the list is read is gone: it uses nothing.
        let Ok(program) = program else { continue };
        ids.extend(program.map_ids().ok()??);
    }
    Some(ids)
}

/// An old table and the new one it is carried into.
trait CarriedTable: Send + Sync {
    fn name(&self) -> &'static str;
    /// The old map's kernel ID.
    fn old_id(&self) -> u32;
    /// Copies what changed in the old table since the last copy; returns how many entries it
    /// wrote.
    fn copy(&mut self) -> Result<usize, Error>;
}

fn carried_table(
    name: &'static str,
    old: MapData,
    new: MapData,
) -> Result<Box<dyn CarriedTable>, MapError> {
    Ok(match name {
        lb::FLOWS_MAP => Box::new(Table::<FlowKey, FlowState>::new(name, old, new)?),
        mesh::FLOWS_MAP => Box::new(Table::<FlowKey, MeshFlow>::new(name, old, new)?),
        mesh::RETURNS_MAP => Box::new(Table::<FlowKey, ReturnPath>::new(name, old, new)?),
        _ => {
            return Err(MapError::InvalidName {
                name: name.to_string(),
            });
        }
    })
}

struct Table<K: Pod, V: Pod> {
    name: &'static str,
    old_id: u32,
    old: HashMap<MapData, K, V>,
    new: HashMap<MapData, K, V>,
    /// What was last copied under each key: an old entry equal to it has not changed since,
    /// and a new entry equal to it has not been written by the new programs since.
    copied: StdHashMap<K, V>,
}

impl<K, V> Table<K, V>
where
    K: Pod + Eq + std::hash::Hash,
    V: Pod + PartialEq,
{
    fn new(name: &'static str, old: MapData, new: MapData) -> Result<Self, MapError> {
        let old_id = old.info()?.id();
        Ok(Table {
            name,
            old_id,
            old: HashMap::try_from(Map::from_map_data(old)?)?,
            new: HashMap::try_from(Map::from_map_data(new)?)?,
            copied: StdHashMap::new(),
        })
    }
}

impl<K, V> CarriedTable for Table<K, V>
where
    K: Pod + Eq + std::hash::Hash + Send + Sync,
    V: Pod + PartialEq + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn old_id(&self) -> u32 {
        self.old_id
    }

    fn copy(&mut self) -> Result<usize, Error> {
        let old: Vec<(K, V)> = self
            .old
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(self.name))?;
        let mut written = 0;
        for (key, value) in old {
            let last = self.copied.get(&key);
            if last == Some(&value) {
                continue;
            }
            let flags = match self.new.get(&key, 0) {
                Err(MapError::KeyNotFound) => NOEXIST,
                Ok(current) if Some(&current) == last => EXIST,
                // The new programs have this flow now.
                Ok(_) => {
                    self.copied.insert(key, value);
                    continue;
                }
                Err(e) => return Err(map_error(self.name)(e)),
            };
            match self.new.insert(key, value, flags) {
                Ok(()) => written += 1,
                // Made or removed by the new programs between the read and the write: theirs.
                Err(MapError::SyscallError(e))
                    if matches!(e.io_error.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) => {}
                Err(e) => return Err(map_error(self.name)(e)),
            }
            self.copied.insert(key, value);
        }
        Ok(written)
    }
}
