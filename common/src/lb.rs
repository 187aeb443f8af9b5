//! Service VIP load balancing (east-west): the maps the tc programs on task-facing veths read,
//! and the agent writes.
//!
//! A packet a task sends to `VIP:port` (TCP or UDP) is DNAT-ed to `backend:port` (the port is
//! kept, as Swarm's VIPs do), the backend chosen round robin per new flow among the service's
//! backends on that network. Two flow entries keep the flow on its backend and undo the NAT on
//! the way back, so the client sees the VIP as its peer.
//!
//! ```text
//! LB_VIPS      HASH        VIP                      -> VipService { service_id, backend_count }
//! LB_SLOTS     HASH        SlotKey{service_id,slot} -> backend_id          (slots 0..count)
//! LB_BACKENDS  ARRAY       backend_id               -> Backend { ip, service_id }  (0 = none)
//! LB_CURSORS   ARRAY       service_id               -> u64 round-robin cursor (atomic add)
//! LB_FLOWS     LRU_HASH    FlowKey                  -> FlowState (forward and reply entries)
//! LB_SERVICE_STATS PERCPU_ARRAY service_id          -> LbCounters
//! LB_BACKEND_STATS PERCPU_ARRAY backend_id          -> LbCounters
//! LB_EVENTS    PERCPU_ARRAY LbEvent                 -> u64
//! ```
//!
//! IP addresses are `u32` holding the address in network byte order (the bytes as on the
//! wire, so `u32::from_ne_bytes(ip.octets())` in userspace); ports likewise `u16` in network
//! order. IDs, counts and counters are host order. Subnets never overlap in a swarm, so a VIP
//! alone names a service on a network, cluster-wide.
//!
//! Consistency without locks: the agent writes a service's slots before raising its
//! `backend_count`, and lowers the count before rewriting slots, so a reader sees either the
//! old or the new set (a slot it reads may name a backend just removed; the liveness check
//! below catches that). A flow entry names its backend by ID and address; the flow stays only
//! while `LB_BACKENDS[id]` still holds that address for that service, so a removed backend's
//! flows fail fast (TCP reset; UDP re-balanced) instead of hanging, and flows to backends that
//! stay are never touched.

/// Map `SHOAL_LB_VIPS`: `HASH`, key VIP (`u32`, network order) -> [`VipService`]. Also the
/// set of addresses the ARP responder answers for.
pub const VIPS_MAP: &str = "SHOAL_LB_VIPS";
/// Map `SHOAL_LB_VIP_HINTS`: `ARRAY`, index [`vip_hint`] of an address -> how many VIPs have
/// that index. A packet to an address whose entry is 0 is to no VIP: what the task-facing
/// program learns from one inlined array read, before (and mostly instead of) the hash lookup
/// in [`VIPS_MAP`]. Raised before a VIP is written, lowered after it is removed.
pub const VIP_HINTS_MAP: &str = "SHOAL_LB_VIP_HINTS";
/// Entries of [`VIP_HINTS_MAP`]: one per value of an address's last 16 bits.
pub const VIP_HINTS: u32 = 1 << 16;

/// The [`VIP_HINTS_MAP`] index of an address as loaded (network-order bytes read as a native
/// `u32`, as the map keys are): its last two octets.
#[inline(always)]
pub fn vip_hint(addr: u32) -> u32 {
    let [_, _, c, d] = addr.to_ne_bytes();
    u32::from(u16::from_ne_bytes([c, d]))
}

/// Map `SHOAL_LB_SLOTS`: `HASH`, key [`SlotKey`] -> backend ID (`u32`).
pub const SLOTS_MAP: &str = "SHOAL_LB_SLOTS";
/// Map `SHOAL_LB_BACKENDS`: `ARRAY`, index backend ID -> [`Backend`]. ID 0 is never used, so
/// a zeroed entry means "no backend".
pub const BACKENDS_MAP: &str = "SHOAL_LB_BACKENDS";
/// Map `SHOAL_LB_CURSORS`: `ARRAY`, index service ID -> `u64`, the next round-robin position.
/// Shared by all CPUs (one atomic fetch-add per new flow) so the spread is exact, not per
/// CPU; 64 bits so it never wraps (a wrap would skew one rotation when the backend count does
/// not divide 2^32).
pub const CURSORS_MAP: &str = "SHOAL_LB_CURSORS";
/// Map `SHOAL_LB_FLOWS`: `LRU_HASH`, key [`FlowKey`] -> [`FlowState`]. No idle timeout for an
/// open TCP connection: it keeps its entries however long it is quiet, so a long-lived flow is
/// not cut after 900 s as IPVS does (moby#31208). What the agent removes (every few seconds):
/// TCP flows that have closed (FIN both ways, or a RST) and gone quiet, and UDP flows idle for
/// minutes, so that churn of short connections never makes the LRU evict a quiet live one.
pub const FLOWS_MAP: &str = "SHOAL_LB_FLOWS";
/// Map `SHOAL_LB_SERVICE_STATS`: `PERCPU_ARRAY`, index service ID -> [`LbCounters`].
pub const SERVICE_STATS_MAP: &str = "SHOAL_LB_SERVICE_STATS";
/// Map `SHOAL_LB_BACKEND_STATS`: `PERCPU_ARRAY`, index backend ID -> [`LbCounters`].
pub const BACKEND_STATS_MAP: &str = "SHOAL_LB_BACKEND_STATS";
/// Map `SHOAL_LB_EVENTS`: `PERCPU_ARRAY`, index [`LbEvent`] -> `u64` occurrences.
pub const EVENTS_MAP: &str = "SHOAL_LB_EVENTS";

/// VIPs (service x network) a node can hold; service IDs are `1..MAX_SERVICES`.
pub const MAX_SERVICES: u32 = 16_384;
/// Backends (task x service x network) a node can hold; backend IDs are `1..MAX_BACKENDS`.
pub const MAX_BACKENDS: u32 = 131_072;
/// Slots a node can hold: every backend in one slot.
pub const MAX_SLOTS: u32 = MAX_BACKENDS;
/// Flow entries (two per flow). An LRU map evicts the least recently used entry when full.
pub const MAX_FLOW_ENTRIES: u32 = 131_072;

/// Value of [`VIPS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipService {
    /// Index into the cursor and service-counter arrays, and the service half of [`SlotKey`].
    pub service_id: u32,
    /// Slots `0..backend_count` of [`SLOTS_MAP`] are valid. 0: refused (TCP reset, UDP port
    /// unreachable).
    pub backend_count: u32,
}
const _: () = assert!(core::mem::size_of::<VipService>() == 8);

/// Key of [`SLOTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub service_id: u32,
    /// Position in the service's round robin, `0..backend_count`.
    pub slot: u32,
}
const _: () = assert!(core::mem::size_of::<SlotKey>() == 8);

/// Value of [`BACKENDS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// The task's address on the VIP's network, network order. Its MAC is derived from it
    /// (`02:42:a.b.c.d`), as every task's is.
    pub ip: u32,
    /// The service (VIP) the backend belongs to: a flow is kept only while its backend ID
    /// still belongs to the same service at the same address.
    pub service_id: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 8);

/// Flow entry direction: [`FlowKey::direction`].
pub const FLOW_FORWARD: u8 = 0;
/// Flow entry direction: [`FlowKey::direction`].
pub const FLOW_REPLY: u8 = 1;

/// Key of [`FLOWS_MAP`]: the packet's 5-tuple as it appears on the task-facing veth.
///
/// Forward entries (`direction` [`FLOW_FORWARD`]) are keyed by what the client sends
/// (`client -> VIP`); reply entries ([`FLOW_REPLY`]) by what the backend sends back
/// (`backend -> client`). The direction keeps a client's direct connection to a backend apart
/// from a reply to it. Two bytes of explicit padding keep the size a multiple of 4 with no
/// implicit padding (the kernel hashes every byte, so every byte must be written).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Network order.
    pub src_ip: u32,
    /// Network order.
    pub dst_ip: u32,
    /// Network order.
    pub src_port: u16,
    /// Network order.
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub direction: u8,
    pub pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// Value of [`FLOWS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Forward: the backend's address (new destination). Reply: the VIP (new source).
    /// Network order.
    pub nat_ip: u32,
    /// The backend the flow is on (liveness check, per-backend counters).
    pub backend_id: u32,
    /// The service (per-service counters, liveness check).
    pub service_id: u32,
    /// TCP: the client's initial sequence number (as on the wire). A SYN with another ISN on the
    /// same 5-tuple is a new connection (port reuse) and is balanced again; a retransmitted
    /// SYN keeps its backend. 0 for UDP.
    pub tcp_isn: u32,
    /// When the last packet in this entry's direction was seen, in jiffies (`bpf_jiffies64()`;
    /// the agent converts it to CLOCK_MONOTONIC, see `dataplane::flow_clock`): the agent
    /// removes closed TCP flows and idle UDP flows by it.
    pub last_seen: u64,
    /// [`FLOW_FIN`] and [`FLOW_RST`]: what this entry's direction has sent.
    pub flags: u32,
    /// Explicit, so every byte of the value is written.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowState>() == 32);

/// [`FlowState::flags`]: this direction sent a FIN.
pub const FLOW_FIN: u32 = 1;
/// [`FlowState::flags`]: this direction sent a RST.
pub const FLOW_RST: u32 = 2;

/// Value of the per-service and per-backend counter maps, per CPU. Host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCounters {
    /// Packets of the service's (backend's) flows, both directions.
    pub packets: u64,
    /// Their bytes (`skb->len`).
    pub bytes: u64,
    /// New flows balanced onto it.
    pub flows: u64,
}
const _: () = assert!(core::mem::size_of::<LbCounters>() == 24);

impl LbCounters {
    /// Adds another CPU's totals to these.
    pub fn add(&mut self, other: &LbCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.flows = self.flows.wrapping_add(other.flows);
    }
}

/// What the LB programs count besides traffic. The discriminant indexes [`EVENTS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbEvent {
    /// ARP requests for a VIP answered.
    ArpReplied = 0,
    /// Connections to a VIP with no backend, refused: TCP reset, UDP ICMP port unreachable.
    NoBackend = 1,
    /// Packets of a flow whose backend was removed: TCP reset, UDP re-balanced.
    BackendGone = 2,
    /// Fragments addressed to a VIP (no ports to balance on): dropped.
    Fragment = 3,
    /// Packets to a VIP too short for their headers, or with a protocol other than TCP/UDP:
    /// dropped (nothing answers on a VIP but its backends).
    Malformed = 4,
    /// Reply packets reverse-NAT-ed back to the VIP.
    ReplyNat = 5,
    /// Flow entries the programs removed themselves: a gone backend's flow, a stale reply
    /// entry in the way of a new connection.
    Forgotten = 6,
    // The agent counts the next two, in this same map (see `mesh::MeshEvent::Expired`).
    /// Flow entries the agent's expiry removed: closed TCP, idle UDP, lone replies.
    Expired = 7,
    /// Flow entries the LRU took when the table was full: they vanished between two expiry
    /// rounds without the programs or the agent removing them (an estimate: an entry made and
    /// evicted between two rounds is not seen). The least recently used go first, quiet flows
    /// before busy ones; a new flow is never refused for want of room.
    Evicted = 8,
}

impl LbEvent {
    /// Every event, in index order.
    pub const ALL: [LbEvent; 9] = [
        Self::ArpReplied,
        Self::NoBackend,
        Self::BackendGone,
        Self::Fragment,
        Self::Malformed,
        Self::ReplyNat,
        Self::Forgotten,
        Self::Expired,
        Self::Evicted,
    ];

    /// The event's name as shown to operators (metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ArpReplied => "arp_replied",
            Self::NoBackend => "no_backend",
            Self::BackendGone => "backend_gone",
            Self::Fragment => "fragment",
            Self::Malformed => "malformed",
            Self::ReplyNat => "reply_nat",
            Self::Forgotten => "forgotten",
            Self::Expired => "expired",
            Self::Evicted => "evicted",
        }
    }
}

/// Number of entries in [`EVENTS_MAP`].
pub const LB_EVENTS: u32 = LbEvent::ALL.len() as u32;

/// The MAC shoal gives an address (`02:42:a.b.c.d`, as Docker does): tasks' MACs, and the MAC
/// the ARP responder answers a VIP with.
pub const fn mac_for_ip(octets: [u8; 4]) -> [u8; 6] {
    [0x02, 0x42, octets[0], octets[1], octets[2], octets[3]]
}

// SAFETY (all below): repr(C), integer fields only, no implicit padding (sizes asserted above),
// every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for VipService {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SlotKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for LbCounters {}
