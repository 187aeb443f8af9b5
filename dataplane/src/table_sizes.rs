//! [`TableSizes`]: the capacities of the tables an operator chooses (`shoal agent
//! --lb-flows`, `--mesh-flows`), applied to the maps when the object is loaded.

use shoal_common::{lb, mesh};

use crate::error::Error;

/// The capacities an operator may choose; the others are fixed by the object. Every table
/// here is an LRU hash, preallocated: it takes its whole size in memory, and when full the
/// least recently used entries go (counted), never a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    /// Entries of the VIP flow table (`SHOAL_LB_FLOWS`): two per connection the tc programs
    /// balance (forward and reply).
    pub lb_flows: u32,
    /// Entries of the routing mesh's flow table (`SHOAL_MESH_FLOWS`): two per confirmed
    /// connection this node receives on a published port. The table of answers this node's
    /// tasks send back to the nodes that received their clients (`SHOAL_MESH_RETURNS`, one
    /// entry per connection) gets half as many: [`TableSizes::mesh_returns`].
    pub mesh_flows: u32,
}

impl TableSizes {
    /// The fewest entries a flow table may have.
    pub const FLOWS_MIN: u32 = 1024;
    /// The most (about 1.8 GiB of kernel memory at this size: ~112 bytes an entry, 14 MiB for
    /// the default 131,072, as `shoal info` shows).
    pub const FLOWS_MAX: u32 = 16 * 1024 * 1024;

    /// The sizes, checked: one line saying what is out of range.
    pub fn new(lb_flows: u32, mesh_flows: u32) -> Result<TableSizes, Error> {
        for (what, asked) in [
            ("the VIP flow table (--lb-flows)", lb_flows),
            ("the routing mesh's flow table (--mesh-flows)", mesh_flows),
        ] {
            if !(Self::FLOWS_MIN..=Self::FLOWS_MAX).contains(&asked) {
                return Err(Error::TableSize {
                    what,
                    asked,
                    min: Self::FLOWS_MIN,
                    max: Self::FLOWS_MAX,
                });
            }
        }
        Ok(TableSizes {
            lb_flows,
            mesh_flows,
        })
    }

    /// Entries of `SHOAL_MESH_RETURNS`: one per connection where the flow table has two.
    pub fn mesh_returns(&self) -> u32 {
        self.mesh_flows / 2
    }

    /// The maps whose capacity the operator chooses, with theirs.
    pub(crate) fn resized(&self) -> [(&'static str, u32); 3] {
        [
            (lb::FLOWS_MAP, self.lb_flows),
            (mesh::FLOWS_MAP, self.mesh_flows),
            (mesh::RETURNS_MAP, self.mesh_returns()),
        ]
    }
}

impl Default for TableSizes {
    /// The object's own capacities.
    fn default() -> Self {
        TableSizes {
            lb_flows: lb::MAX_FLOW_ENTRIES,
            mesh_flows: mesh::MAX_FLOW_ENTRIES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_objects_capacities() {
        let sizes = TableSizes::default();
        assert_eq!(sizes.lb_flows, lb::MAX_FLOW_ENTRIES);
        assert_eq!(sizes.mesh_flows, mesh::MAX_FLOW_ENTRIES);
        assert_eq!(sizes.mesh_returns(), mesh::MAX_RETURN_ENTRIES);
    }

    #[test]
    fn sizes_out_of_range_are_refused_in_one_line() {
        let (min, max) = (TableSizes::FLOWS_MIN, TableSizes::FLOWS_MAX);
        assert!(TableSizes::new(min, max).is_ok());
        assert!(TableSizes::new(max, min).is_ok());
        for asked in [0, min - 1, max + 1] {
            for (sizes, flag) in [
                (TableSizes::new(asked, min), "--lb-flows"),
                (TableSizes::new(min, asked), "--mesh-flows"),
            ] {
                let line = sizes.unwrap_err().to_string();
                assert!(
                    line.contains(flag) && line.contains(&asked.to_string()),
                    "{line}"
                );
                assert!(!line.contains('\n'), "{line}");
            }
        }
    }
}
