//! Names of the programs in shoal's eBPF object, as the kernel-side functions are named.

/// XDP program for the node's underlay interface: the published ports' fast path.
pub const XDP_UNDERLAY: &str = "shoal_xdp";
/// tc (clsact) program for packets a task-facing veth receives (VIP DNAT).
pub const TC_INGRESS: &str = "shoal_tc_ingress";
/// tc (clsact) program for packets a task-facing veth sends (VIP reverse NAT).
pub const TC_EGRESS: &str = "shoal_tc_egress";
/// Minimal XDP program (parse nothing, pass everything): the floor that benchmarks compare
/// every XDP program against.
pub const XDP_FLOOR: &str = "shoal_xdp_floor";
/// XDP program never attached: writes the programs' clock (jiffies) into the frame it is
/// test-run on, so the agent can convert flow entries' stamps (`dataplane::flow_clock`).
pub const FLOW_CLOCK: &str = "shoal_flow_clock";
/// Minimal tc program: the floor for tc programs (skb test runs cost more than XDP ones).
pub const TC_FLOOR: &str = "shoal_tc_floor";
/// Minimal parse-and-pass tc program: reads the Ethernet, IPv4 and port fields the load
/// balancer reads of every packet, the same way, and passes. The floor for the load balancer.
pub const TC_PARSE_FLOOR: &str = "shoal_tc_parse_floor";
/// tc (clsact) ingress program for the answers of published-port flows: on the node's
/// ingress interface (ingress mode) and on host-mode tasks' gateway-bridge ports.
pub const TC_MESH_REPLY: &str = "shoal_tc_mesh_reply";
/// cgroup `connect4` program on the cgroup v2 root: node-local connections to published ports,
/// and the node's tasks' connections to VIPs, go straight to a backend (socket-level
/// balancing).
pub const CONNECT4: &str = "shoal_connect4";
/// Minimal cgroup `connect4` program (allows, does nothing): the floor of the socket-level
/// balancer's cost to a `connect(2)`.
pub const CONNECT4_FLOOR: &str = "shoal_connect4_floor";
/// cgroup `getpeername4` program beside it: a balanced socket's peer is what it asked for.
pub const GETPEERNAME4: &str = "shoal_getpeername4";
/// cgroup `sendmsg4` program beside it: an unconnected UDP socket's datagram to a published
/// port (node-local) or a VIP (a task's) goes straight to a backend.
pub const SENDMSG4: &str = "shoal_sendmsg4";
/// cgroup `recvmsg4` program beside it: datagrams from a backend a socket was balanced to come
/// from the address it sent to.
pub const RECVMSG4: &str = "shoal_recvmsg4";
