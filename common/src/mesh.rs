//! Published ports: the ingress routing mesh and host-mode publishing. The maps the underlay
//! XDP program and the mesh's reply program read, and the agent writes.
//!
//! A connection from outside to `node:P` (any node's address) is balanced by the XDP program
//! on the node's underlay interface, one pick per new flow, with the same round robin as the
//! service's VIP (the service's VIP on the `ingress` network is the [`PublishedPort::frontend`]
//! key into `shoal_common::lb`'s maps, whose backends are the service's tasks on `ingress`):
//!
//! - ingress mode, the client's address kept ([`MODE_INGRESS_CLIENT`], the default): the
//!   packet becomes `client -> task:target` (destination NAT only), is wrapped in VXLAN (VNI
//!   of `ingress`) to the task's node and sent out again (`XDP_TX`), or handed to the node's
//!   own VXLAN socket when the task is local (`XDP_PASS`). Its inner source MAC names the
//!   receiving node ([`mesh_source_mac`] of its ingress address). On the task's node the tc
//!   program of the task's `ingress` veth notes, from that MAC, which node the flow came
//!   through ([`RETURNS_MAP`]); the task answers the client by its default route, the gateway
//!   bridge, whose port runs the reply program: it finds the note and sends the answer into
//!   the node's own ingress interface toward the receiving node's ingress endpoint (its MAC,
//!   [`mac_for_ip`](crate::lb::mac_for_ip) of that address), so the `ingress` overlay carries
//!   it back there.
//!   The receiving node's reply program gets it on its ingress interface, finds the reply
//!   entry (`task:target -> client`), puts `node:P` back as source and redirects it out of the
//!   underlay. The backend sees the client's address and port as its peer (moby#25526).
//! - ingress mode with source NAT ([`MODE_INGRESS`], `--publish ...,source=snat`, Swarm's
//!   behaviour): the packet becomes `node's ingress address:nat port -> task:target`, and
//!   travels as above. The task answers the node's ingress address, which is an endpoint of
//!   `ingress` like a task's; the answer reaches the receiving node's ingress interface,
//!   where the reply program (tc) undoes both NATs and redirects it out of the underlay to
//!   the client. The backend sees the receiving node's ingress address as its peer.
//! - host mode: `node:P -> local task's gateway-bridge address:target`, source kept, passed to
//!   the kernel, which routes it onto the gateway bridge; the task's answer is un-NAT-ed by the
//!   reply program on the task's gateway-bridge port and redirected out of the underlay. The
//!   backend sees the client's address. Host-mode ports are balanced through a `lb` entry
//!   keyed by [`host_frontend`], an address of `0.0.0.0/8` (never a VIP, never routed), whose
//!   backends are the node's own tasks of the service.
//!
//! ```text
//! SHOAL_MESH_CONFIG ARRAY[1]  0                        -> MeshConfig
//! SHOAL_MESH_ADDRS  HASH      node address             -> u32 (1): where ports are published
//! SHOAL_MESH_PORT_INDEX ARRAY PortKey::index()        -> PublishedPort (mode 0: none)
//! SHOAL_MESH_VTEPS  HASH      backend address          -> its node's VTEP (ingress backends)
//! SHOAL_MESH_FLOWS  LRU_HASH  lb::FlowKey              -> MeshFlow (confirmed flows: forward
//!                                                         and reply entries)
//! SHOAL_MESH_UNCONFIRMED LRU_HASH lb::FlowKey         -> MeshFlow (new flows, not confirmed
//!                                                         by their client yet)
//! SHOAL_MESH_EVENTS PERCPU_ARRAY MeshEvent             -> u64
//! SHOAL_MESH_RETURNS LRU_HASH lb::FlowKey (no source) -> ReturnPath (on the task's node:
//!                                                         answers of client-kept flows,
//!                                                         task -> client)
//! SHOAL_MESH_INGRESS_IF ARRAY[1] 0                     -> ifindex of the node's ingress
//!                                                         interface (where answers go back)
//! ```
//!
//! # Two flow tables: a flood of spoofed SYNs cannot push out established connections
//!
//! A new flow's two entries go into [`UNCONFIRMED_MAP`] first. They move to [`FLOWS_MAP`]
//! (the flow is *confirmed*) when the client shows it receives what its task sends: for TCP,
//! the client's first segment after the task's SYN-ACK acknowledging that SYN-ACK (its ACK
//! number within [`CONFIRM_ACK_WINDOW`] of the task's ISN + 1, which a blind spoofer cannot
//! know); for UDP, the client's next datagram after the task's first answer. Not the task's
//! SYN-ACK alone: the task answers spoofed SYNs too (the mesh is a NAT, not the endpoint), so
//! that would let a flood into the confirmed table. Packets of an unconfirmed flow are
//! balanced and NAT-ed exactly like a confirmed one's; only where the entries live differs.
//!
//! So a SYN flood from spoofed sources only churns the unconfirmed table (an LRU of its own,
//! [`MAX_UNCONFIRMED_ENTRIES`]), and the agent forgets what it leaves within seconds (the
//! client quiet for 5 s, TCP; 30 s, UDP). A real client's handshake survives a
//! flood as long as fewer than that many new entries arrive during its round trip. Why not
//! SYN cookies in XDP: the mesh forwards the SYN to a task that picks its own ISN, so
//! answering with a cookie would make the mesh a SYN proxy that translates every later
//! segment's sequence numbers; the second table needs no per-packet work on confirmed flows.
//!
//! Byte order as in `shoal_common::lb`: addresses and ports in network order, the rest host
//! order. Forward entries are keyed by what the client sends (`client -> node:P`, direction
//! `FLOW_FORWARD`), reply entries by what the backend sends (`task:target -> ingress
//! address:nat port` with source NAT, `task:target -> client` otherwise, `FLOW_REPLY`).
//!
//! Forward entries of client-kept flows carry the client as their new source
//! ([`MeshFlow::local_ip`], its port as [`MeshFlow::local_port`]), so their reply entries are
//! keyed `task -> client` as host mode's are. Two receiving nodes cannot both hold the same
//! `client:port -> task:target` flow: the task's own TCP stack could not tell them apart either
//! (a client reaching two nodes from one source port, to one task, at once).
//!
//! The answer's MTU: it leaves the task through the gateway bridge but travels on `ingress`,
//! so a client-kept task's gateway interface takes the `ingress` MTU (its TCP then sizes its
//! segments for the overlay, and its UDP answers are fragmented to fit it).

/// Map `SHOAL_MESH_CONFIG`: `ARRAY` of one [`MeshConfig`].
pub const CONFIG_MAP: &str = "SHOAL_MESH_CONFIG";
/// Map `SHOAL_MESH_ADDRS`: `HASH`, key a node address (`u32`, network order) -> `u32` 1.
pub const ADDRS_MAP: &str = "SHOAL_MESH_ADDRS";
/// Map `SHOAL_MESH_PORT_INDEX`: `ARRAY` of [`PORT_INDEX_LEN`] [`PublishedPort`], indexed by
/// [`PortKey::index`]; an all-zero entry (mode 0) is a port not published. An array, not a
/// hash: every packet to the node is looked up here, and the kernel inlines an array lookup
/// into the program (no hashing, no helper call). 1 MiB, every port of both protocols.
/// (Named apart from the older agents' `SHOAL_MESH_PORTS` hash, whose pin is left unused.)
pub const PORTS_MAP: &str = "SHOAL_MESH_PORT_INDEX";
/// Entries of [`PORTS_MAP`]: every TCP port, then every UDP port.
pub const PORT_INDEX_LEN: u32 = 2 * 65_536;
/// Map `SHOAL_MESH_VTEPS`: `HASH`, key a task's ingress address -> its node's VTEP address.
pub const VTEPS_MAP: &str = "SHOAL_MESH_VTEPS";
/// Map `SHOAL_MESH_FLOWS`: `LRU_HASH`, key `lb::FlowKey` -> [`MeshFlow`]: confirmed flows.
/// Same lifetime rules as the VIP flows: an open TCP connection is never cut for being quiet;
/// the agent forgets closed TCP flows and idle UDP ones.
pub const FLOWS_MAP: &str = "SHOAL_MESH_FLOWS";
/// Map `SHOAL_MESH_UNCONFIRMED`: `LRU_HASH`, key `lb::FlowKey` -> [`MeshFlow`]: new flows
/// not yet confirmed by their client (see the module docs). Same keys and values as
/// [`FLOWS_MAP`]; a key is in one of the two. The agent forgets a flow here whose client has
/// been quiet for seconds.
pub const UNCONFIRMED_MAP: &str = "SHOAL_MESH_UNCONFIRMED";
/// Map `SHOAL_MESH_EVENTS`: `PERCPU_ARRAY`, index [`MeshEvent`] -> `u64` occurrences.
pub const EVENTS_MAP: &str = "SHOAL_MESH_EVENTS";
/// Map `SHOAL_MESH_RETURNS`: `LRU_HASH`, key `lb::FlowKey` of a task's answer with no source
/// address (`0:target -> client:port`, direction `FLOW_REPLY`) -> [`ReturnPath`]. Written on
/// the task's node when the flow's packets reach the task (client-kept flows only); read by
/// the reply program on the task's gateway-bridge port. Without the source address because a
/// UDP socket bound to `0.0.0.0` answers from the address its route picks, the gateway
/// bridge's, not the one the client's datagram reached. Least recently used entries go
/// first; a connection's SYN writes its entry afresh. Two tasks of one node with the same
/// target port, answering the same `client:port` at the same time, would share an entry.
pub const RETURNS_MAP: &str = "SHOAL_MESH_RETURNS";
/// Value of [`RETURNS_MAP`]: where a task's answers go back to, and as whom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnPath {
    /// The ingress address of the node that received the client's flow (network order).
    pub node: u32,
    /// The task's address on `ingress`, the flow's destination (network order): the answer's
    /// source, which a UDP answer from the gateway bridge's address is given back.
    pub task: u32,
}

const _: () = assert!(core::mem::size_of::<ReturnPath>() == 8);

/// Map `SHOAL_MESH_INGRESS_IF`: `ARRAY` of one `u32`, the ifindex of the node's ingress
/// interface (`shoal_ingress`, in the node's network namespace); 0: answers of client-kept
/// flows are not steered back (they pass).
pub const INGRESS_IF_MAP: &str = "SHOAL_MESH_INGRESS_IF";

/// Node addresses a node can publish on.
pub const MAX_ADDRS: u32 = 64;
/// Ingress backends a node can know the VTEP of.
pub const MAX_VTEPS: u32 = 131_072;
/// Confirmed flow entries (two per flow).
pub const MAX_FLOW_ENTRIES: u32 = 131_072;
/// Answers a task's node can steer back to their receiving nodes (one per client-kept flow
/// to this node's tasks).
pub const MAX_RETURN_ENTRIES: u32 = 65_536;
/// Unconfirmed flow entries (two per flow): what a flood churns. A client's handshake is lost
/// to a flood only if this many new entries arrive within its round trip.
pub const MAX_UNCONFIRMED_ENTRIES: u32 = 65_536;
/// How far past the task's ISN + 1 the ACK number of the segment that confirms a TCP flow may
/// be: the handshake's ACK carries ISN + 1 exactly, but a task using TCP Fast Open may send
/// data with or right after its SYN-ACK, which the client's first ACK then covers too. A
/// blind spoofer guesses it once in 65,536 tries.
pub const CONFIRM_ACK_WINDOW: u32 = 65_535;

/// The `ingress` overlay's MTU when [`MeshConfig::ingress_mtu`] is 0 (maps written by an
/// agent that did not set it): the overlay MTU over a 1500-byte underlay.
pub const DEFAULT_INGRESS_MTU: u16 = 1450;
/// Bytes VXLAN adds in front of the inner Ethernet frame: outer Ethernet, IPv4, UDP, VXLAN.
pub const VXLAN_OVERHEAD: usize = 14 + 20 + 8 + 8;

/// Value of [`CONFIG_MAP`]. All zero (the agent has not configured the mesh): every packet
/// passes untouched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// The node's address on `ingress` (the source of forwarded connections), network order.
    pub ingress_ip: u32,
    /// VXLAN outer source (the data-path address), network order.
    pub vtep_ip: u32,
    /// The underlay interface: where answers to clients leave.
    pub underlay_ifindex: u32,
    /// `ingress`'s VNI, host order.
    pub vni: u32,
    /// VXLAN UDP port, network order.
    pub vxlan_port: u16,
    /// The `ingress` network's MTU on this node (its `com.docker.network.driver.mtu`, else the
    /// underlay's minus [`VXLAN_OVERHEAD`]), host order; 0: [`DEFAULT_INGRESS_MTU`]. The
    /// largest IPv4 packet an ingress-mode port forwards: larger ones are answered with an ICMP
    /// fragmentation needed naming it, and counted ([`MeshEvent::TooBig`]). Takes what
    /// was padding (the struct's size and the pinned map stay the same).
    pub ingress_mtu: u16,
}
const _: () = assert!(core::mem::size_of::<MeshConfig>() == 20);

/// A published port and its protocol; its place in [`PORTS_MAP`] is [`PortKey::index`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// The published port, network order.
    pub port: u16,
    /// 6 TCP, 17 UDP.
    pub proto: u8,
    pub pad: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey>() == 4);

impl PortKey {
    /// The key of `port` (host order) for protocol `proto`.
    pub const fn new(port: u16, proto: u8) -> PortKey {
        PortKey {
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }

    /// Its index in [`PORTS_MAP`]: TCP ports first, then UDP ports; `None` for another
    /// protocol.
    pub const fn index(&self) -> Option<u32> {
        port_index(self.port, self.proto)
    }
}

/// [`PublishedPort::mode`] and [`MeshFlow::mode`]: balanced over the cluster, source NAT-ed to
/// the receiving node's ingress address (Swarm's routing mesh; `source=snat`).
pub const MODE_INGRESS: u8 = 1;
/// [`PublishedPort::mode`] and [`MeshFlow::mode`]: this node's tasks only, source kept.
pub const MODE_HOST: u8 = 2;
/// [`PublishedPort::mode`] and [`MeshFlow::mode`]: balanced over the cluster, the client's
/// address kept; answers return through the receiving node (see the module docs).
pub const MODE_INGRESS_CLIENT: u8 = 3;

/// Is `mode` one of the routing mesh's (balanced over the cluster, carried on `ingress`)?
pub const fn is_ingress_mode(mode: u8) -> bool {
    mode == MODE_INGRESS || mode == MODE_INGRESS_CLIENT
}

/// Value of [`PORTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishedPort {
    /// The `lb` VIPS key whose backends serve the port: the service's VIP on `ingress`, or
    /// [`host_frontend`] in host mode. Network order.
    pub frontend: u32,
    /// The task's port, network order.
    pub target_port: u16,
    /// [`MODE_INGRESS_CLIENT`], [`MODE_INGRESS`] or [`MODE_HOST`].
    pub mode: u8,
    pub pad: u8,
}
const _: () = assert!(core::mem::size_of::<PublishedPort>() == 8);

impl PublishedPort {
    /// A port served by `frontend`'s backends on `target_port` (host order), in `mode`.
    pub const fn new(frontend: [u8; 4], target_port: u16, mode: u8) -> PublishedPort {
        PublishedPort {
            frontend: u32::from_ne_bytes(frontend),
            target_port: target_port.to_be(),
            mode,
            pad: 0,
        }
    }
}

/// The [`PORTS_MAP`] index of `port` (network order, as loaded) for protocol `proto`.
#[inline(always)]
pub const fn port_index(port: u16, proto: u8) -> Option<u32> {
    let port = u16::from_be(port) as u32;
    match proto {
        6 => Some(port),
        17 => Some(65_536 + port),
        _ => None,
    }
}

/// The `lb` key of a host-mode port: `0.<proto>.<port>` (network order when used as a key).
pub const fn host_frontend(port: u16, proto: u8) -> [u8; 4] {
    let p = port.to_be_bytes();
    [0, proto, p[0], p[1]]
}

/// Value of [`FLOWS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshFlow {
    /// When the last packet in this entry's direction was seen, in jiffies (as
    /// `lb::FlowState::last_seen`).
    pub last_seen: u64,
    /// Forward: the task (new destination). Reply: the client (new destination).
    pub peer_ip: u32,
    /// Forward: the new source (the node's ingress address with source NAT; else the client).
    /// Reply: the node address the client connected to (new source).
    pub local_ip: u32,
    /// Forward: the target port. Reply: the client's port.
    pub peer_port: u16,
    /// Forward: the new source port (NAT port with source NAT; else the client's). Reply: the
    /// published port.
    pub local_port: u16,
    /// Forward, ingress mode: the task's node (VXLAN destination). 0 otherwise.
    pub vtep: u32,
    /// `lb` backend the flow is on (liveness check and counters).
    pub backend_id: u32,
    /// `lb` service (the frontend's).
    pub service_id: u32,
    /// TCP, forward: the client's ISN (a SYN with another one is a new connection). TCP,
    /// reply: the task's ISN, from its SYN-ACK (0 until then), which the client's ACK must
    /// acknowledge to confirm the flow. As on the wire (network order). 0 for UDP.
    pub tcp_isn: u32,
    /// `lb::FLOW_FIN` / `lb::FLOW_RST` seen in this direction, and [`FLOW_UNREPLIED`].
    pub flags: u32,
    /// [`MODE_INGRESS_CLIENT`], [`MODE_INGRESS`] or [`MODE_HOST`].
    pub mode: u8,
    pub pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<MeshFlow>() == 48);

/// [`MeshFlow::flags`] of a reply entry (beside `lb::FLOW_FIN` and `lb::FLOW_RST`): the task
/// has not answered yet. Set when the flow is opened, cleared by the task's first answer (for
/// TCP its SYN-ACK). Entries written before the flag existed never carry it, so they count as
/// answered, as they were treated then.
pub const FLOW_UNREPLIED: u32 = 4;

/// What the mesh programs count besides traffic. The discriminant indexes [`EVENTS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshEvent {
    /// New connections balanced onto a task.
    Forwarded = 0,
    /// Answers un-NAT-ed and sent to the client.
    Replied = 1,
    /// Connections to a published port with no task to take them, refused: TCP reset, UDP
    /// ICMP port unreachable.
    NoBackend = 2,
    /// Packets of a flow whose task went away (or a mid-stream TCP segment with no flow):
    /// TCP reset; UDP flows move to a live task instead.
    BackendGone = 3,
    /// Fragments, truncated headers, or other protocols to a published port: dropped.
    Malformed = 4,
    /// Packets larger than the `ingress` MTU: answered with ICMP fragmentation needed.
    TooBig = 5,
    /// No route or neighbour toward a task's node: dropped.
    NoRoute = 6,
    /// No free NAT port for a new connection: dropped.
    NatPortsExhausted = 7,
    /// New flows confirmed by their client (see the module docs): moved to the confirmed
    /// table.
    Confirmed = 8,
    /// Confirmed flow entries the programs removed themselves: their task went away, or their
    /// client's port began a new connection.
    Forgotten = 9,
    // The agent counts the rest, in this same map so that they outlive it as the programs'
    // counters do: flow entries (two per flow) removed by its expiry every few seconds, and
    // those that went without it (an LRU takes its least recently used entry when full).
    /// Confirmed flow entries the agent's expiry removed: closed TCP, idle UDP, lone replies.
    Expired = 10,
    /// Confirmed flow entries the LRU took: they vanished between two expiry rounds without
    /// the programs or the agent removing them. Established flows lost to a full table (an
    /// estimate: an entry made and evicted between two rounds is not seen).
    Evicted = 11,
    /// Unconfirmed flow entries the agent's expiry removed: the client never confirmed (a
    /// spoofed SYN, a client that went away), or a one-off UDP exchange ended.
    UnconfirmedExpired = 12,
    /// Unconfirmed flow entries the LRU took before they were confirmed or expired: a flood
    /// fills the unconfirmed table faster than the agent's expiry empties it.
    UnconfirmedEvicted = 13,
    /// On a task's node: answers of client-kept flows sent back on `ingress` toward the node
    /// that received the flow (its reply program then counts them [`MeshEvent::Replied`]).
    Returned = 14,
    /// ICMP errors about a flow's answers (fragmentation needed, unreachable, time exceeded,
    /// from a router on the client's side or the client) translated and sent on to its task.
    IcmpError = 15,
}

impl MeshEvent {
    /// Every event, in index order.
    pub const ALL: [MeshEvent; 16] = [
        Self::Forwarded,
        Self::Replied,
        Self::NoBackend,
        Self::BackendGone,
        Self::Malformed,
        Self::TooBig,
        Self::NoRoute,
        Self::NatPortsExhausted,
        Self::Confirmed,
        Self::Forgotten,
        Self::Expired,
        Self::Evicted,
        Self::UnconfirmedExpired,
        Self::UnconfirmedEvicted,
        Self::Returned,
        Self::IcmpError,
    ];

    /// The event's name as shown to operators (metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Replied => "replied",
            Self::NoBackend => "no_backend",
            Self::BackendGone => "backend_gone",
            Self::Malformed => "malformed",
            Self::TooBig => "too_big",
            Self::NoRoute => "no_route",
            Self::NatPortsExhausted => "nat_ports_exhausted",
            Self::Confirmed => "confirmed",
            Self::Forgotten => "forgotten",
            Self::Expired => "expired",
            Self::Evicted => "evicted",
            Self::UnconfirmedExpired => "unconfirmed_expired",
            Self::UnconfirmedEvicted => "unconfirmed_evicted",
            Self::Returned => "returned",
            Self::IcmpError => "icmp_error",
        }
    }
}

/// Number of entries in [`EVENTS_MAP`].
pub const MESH_EVENTS: u32 = MeshEvent::ALL.len() as u32;

/// The inner source MAC of the frames the mesh sends into `ingress`: `02:43:<ingress
/// address>`, an address no interface has. Not the ingress endpoint's own (`02:42:...`): the
/// `ingress` bridge of the receiving node learns source MACs, and would then send the
/// task's answers back into `vxlan0` instead of to the endpoint. Tasks answer by ARP, not by
/// this MAC.
pub const fn mesh_source_mac(ingress_ip: [u8; 4]) -> [u8; 6] {
    [
        0x02,
        0x43,
        ingress_ip[0],
        ingress_ip[1],
        ingress_ip[2],
        ingress_ip[3],
    ]
}

// SAFETY (all below): repr(C), integer fields only, no implicit padding (sizes asserted above),
// every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MeshConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PortKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PublishedPort {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for MeshFlow {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ReturnPath {}
