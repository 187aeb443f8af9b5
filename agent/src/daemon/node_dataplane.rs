//! The eBPF data path as this node runs it: maps pinned under the node's bpffs directory, the
//! XDP program on the underlay interface.

use std::path::Path;

use anyhow::Context as _;
use shoal_control::{
    api::{DataplaneInfo, HookCounters},
    identity::NodeId,
};
use shoal_dataplane::{Dataplane, bpffs};
use tracing::warn;

pub struct NodeDataplane {
    dataplane: Dataplane,
    /// The interface carrying the data-path address, when there is one.
    underlay_interface: Option<String>,
}

impl NodeDataplane {
    /// Loads the programs (re-adopting this node's pinned maps) and attaches XDP to the
    /// underlay interface, if the node has a data-path address.
    pub fn start(node_id: &NodeId, underlay_interface: Option<&str>) -> anyhow::Result<Self> {
        let root = Path::new(bpffs::DEFAULT_ROOT);
        bpffs::ensure_mounted(root)?;
        let pin_dir = bpffs::node_pin_dir(root, node_id.as_str());
        let mut dataplane = Dataplane::load(Some(&pin_dir)).context("starting the data path")?;
        match underlay_interface {
            Some(interface) => dataplane.attach_underlay_xdp(interface)?,
            None => warn!("no data-path address: the underlay XDP program is not attached"),
        }
        Ok(NodeDataplane {
            dataplane,
            underlay_interface: underlay_interface.map(str::to_string),
        })
    }

    /// The API's view of the data path, counters read now.
    pub fn info(&self) -> DataplaneInfo {
        let (counters, error) = match self.dataplane.counters() {
            Ok(counters) => (
                counters
                    .iter()
                    .map(|(slot, c)| HookCounters {
                        hook: slot.name().to_string(),
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                    .collect(),
                String::new(),
            ),
            Err(e) => (Vec::new(), format!("reading counters: {e}")),
        };
        DataplaneInfo {
            underlay_interface: self.underlay_interface.clone().unwrap_or_default(),
            xdp_attached: self.underlay_interface.is_some(),
            pin_dir: self
                .dataplane
                .pin_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            counters,
            error,
        }
    }
}
