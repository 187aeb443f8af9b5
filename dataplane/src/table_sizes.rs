//! [`TableSizes`]: the capacities of the tables an operator chooses (`shoal agent
//! --lb-flows`), applied to the maps when the object is loaded.

use shoal_common::lb;

use crate::error::Error;

/// The capacities an operator may choose; the others are fixed by the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    /// Entries of the VIP flow table (`SHOAL_LB_FLOWS`): two per connection the tc programs
    /// balance (forward and reply). An LRU hash, preallocated: it takes its whole size in
    /// memory, and when full the least recently used entries go (counted), never a new flow.
    pub lb_flows: u32,
}

impl TableSizes {
    /// The fewest entries `lb_flows` may have.
    pub const LB_FLOWS_MIN: u32 = 1024;
    /// The most (about 1.8 GiB of kernel memory at this size: ~112 bytes an entry, 14 MiB for
    /// the default 131,072, as `shoal info` shows).
    pub const LB_FLOWS_MAX: u32 = 16 * 1024 * 1024;

    /// The sizes, checked: one line saying what is out of range.
    pub fn new(lb_flows: u32) -> Result<TableSizes, Error> {
        if !(Self::LB_FLOWS_MIN..=Self::LB_FLOWS_MAX).contains(&lb_flows) {
            return Err(Error::TableSize {
                what: "the VIP flow table (--lb-flows)",
                asked: lb_flows,
                min: Self::LB_FLOWS_MIN,
                max: Self::LB_FLOWS_MAX,
            });
        }
        Ok(TableSizes { lb_flows })
    }

    /// The maps whose capacity differs from the object's, with theirs.
    pub(crate) fn resized(&self) -> [(&'static str, u32); 1] {
        [(lb::FLOWS_MAP, self.lb_flows)]
    }
}

impl Default for TableSizes {
    /// The object's own capacities.
    fn default() -> Self {
        TableSizes {
            lb_flows: lb::MAX_FLOW_ENTRIES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_are_refused_in_one_line() {
        assert_eq!(TableSizes::default().lb_flows, lb::MAX_FLOW_ENTRIES);
        assert!(TableSizes::new(TableSizes::LB_FLOWS_MIN).is_ok());
        assert!(TableSizes::new(TableSizes::LB_FLOWS_MAX).is_ok());
        for asked in [
            0,
            TableSizes::LB_FLOWS_MIN - 1,
            TableSizes::LB_FLOWS_MAX + 1,
        ] {
            let line = TableSizes::new(asked).unwrap_err().to_string();
            assert!(
                line.contains("--lb-flows") && line.contains(&asked.to_string()),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
