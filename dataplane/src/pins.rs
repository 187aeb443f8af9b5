//! The pinned maps a restarted agent re-adopts ([`crate::Dataplane::load`]), checked first.
//!
//! aya re-adopts whatever map is pinned under a map's name. A map an earlier shoal made with
//! another layout (a key or value of another size, another capacity or type) would then be
//! used as it is: with another value size the new programs fail verification and the agent
//! cannot start until someone removes the pins by hand; with another capacity it runs on the
//! old one, silently. So a pin is re-adopted only when the map is what this build's object
//! defines (type, key and value sizes, capacity, flags; with the capacities the operator chose,
//! `--lb-flows`, `--mesh-flows`); any other is unpinned, said in one line, and the load makes
//! the map anew. A flow table the operator resized (the same layout but its capacity) is
//! handed back still open, for `carry_over` to copy its entries into the new one, so a new
//! size resets no connection. Any other map unpinned loses what it held: for a flow table of
//! another layout, its connections (those of a VIP are reset on their next segment, as after
//! an eviction).

use std::{fmt, path::Path};

use aya::maps::{MapData, MapInfo};
use tracing::{info, warn};

use crate::error::Error;

/// What a map is, as far as re-adopting it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries, flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

impl Layout {
    /// Whether `wanted` is this layout with another capacity only.
    fn resized_to(&self, wanted: &Layout) -> bool {
        Layout {
            max_entries: wanted.max_entries,
            ..*self
        } == *wanted
    }
}

/// The layout of the map pinned at `path`.
fn pinned_layout(path: &Path) -> Result<Layout, aya::maps::MapError> {
    let info = MapInfo::from_pin(path)?;
    Ok(Layout {
        map_type: info.map_type()? as u32,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Unpins, under `dir`, each of the maps `names` whose pinned layout differs from the one the
/// eBPF `object` defines, with the capacities of `resized` (or that is no readable map), so
/// that the load makes it anew (each said in one line). A name without a pin, or that the
/// object does not define, is left alone. Returns the maps of `resized` that differ in their
/// capacity alone, open: the tables to carry over.
pub(crate) fn drop_stale(
    object: &[u8],
    dir: &Path,
    names: &[&'static str],
    resized: &[(&str, u32)],
) -> Result<Vec<(&'static str, MapData)>, Error> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| Error::ParseObject(Box::new(e)))?;
    let mut carried = Vec::new();
    for name in names {
        let path = dir.join(name);
        let Some(defined) = parsed.maps.get(*name) else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let sized = resized.iter().find(|(resized, _)| resized == name);
        let wanted = Layout {
            map_type: defined.map_type(),
            key_size: defined.key_size(),
            value_size: defined.value_size(),
            max_entries: sized.map_or(defined.max_entries(), |(_, entries)| *entries),
            flags: defined.map_flags(),
        };
        let pinned = match pinned_layout(&path) {
            Ok(pinned) if pinned == wanted => continue,
            Ok(pinned) if sized.is_some() && pinned.resized_to(&wanted) => {
                match MapData::from_pin(&path) {
                    Ok(old) => {
                        info!(map = %name, from = pinned.max_entries, to = wanted.max_entries,
                            "flow table resized: a new table made, the old one's entries carried over");
                        carried.push((*name, old));
                        unpin(&path)?;
                        continue;
                    }
                    Err(e) => format!("{pinned}, not readable ({e})"),
                }
            }
            Ok(pinned) => pinned.to_string(),
            Err(e) => format!("not a readable map ({e})"),
        };
        warn!(map = %name, %pinned, wanted = %wanted,
            "the pinned map is not the one this build's programs expect: replaced, and what it \
             held dropped");
        unpin(&path)?;
    }
    Ok(carried)
}

fn unpin(path: &Path) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|source| Error::Io {
        what: "unpinning a stale map",
        path: path.to_path_buf(),
        source,
    })
}
