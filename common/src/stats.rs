//! Packet and byte counters, one slot per hook, per CPU.

/// Map `SHOAL_STATS`: `PERCPU_ARRAY`, key `u32` ([`StatsSlot`] as index) -> [`PacketCounters`].
///
/// Per-CPU so the hot path never contends on a shared cache line; userspace sums the CPUs.
/// Pinned by name under the node's bpffs directory, so counters survive an agent restart.
pub const STATS_MAP: &str = "SHOAL_STATS";

/// Where a packet was counted. The discriminant is the index into [`STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsSlot {
    /// Frames received on the underlay interface (XDP).
    XdpUnderlayRx = 0,
    /// Packets entering the host from an attached interface (tc ingress).
    TcIngress = 1,
    /// Packets leaving the host through an attached interface (tc egress).
    TcEgress = 2,
}

impl StatsSlot {
    /// Every slot, in index order.
    pub const ALL: [StatsSlot; 3] = [Self::XdpUnderlayRx, Self::TcIngress, Self::TcEgress];

    /// The slot's name as shown to operators (`shoal info`, metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::XdpUnderlayRx => "xdp_underlay_rx",
            Self::TcIngress => "tc_ingress",
            Self::TcEgress => "tc_egress",
        }
    }
}

/// Number of entries in [`STATS_MAP`].
pub const STATS_SLOTS: u32 = StatsSlot::ALL.len() as u32;

/// Value of [`STATS_MAP`]: totals for one slot on one CPU. Host byte order (never on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen, counting from the Ethernet header (`skb->len` for tc, frame length for XDP).
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<PacketCounters>() == 16);

impl PacketCounters {
    /// Adds another CPU's (or slot's) totals to these.
    pub fn add(&mut self, other: &PacketCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

// SAFETY: repr(C), two u64 fields, no padding (size asserted above), every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketCounters {}
