//! Socket-level balancing (Cilium's socket LB): the cgroup `connect4`, `sendmsg4`,
//! `recvmsg4` and `getpeername4` programs on the cgroup v2 root, and the maps they keep.
//!
//! ```text
//! SOCK_CONFIG   ARRAY     SOCK_CONFIG_*                  -> u64 (netns cookie, task cgroup id)
//! SOCK_ORIGINS  LRU_HASH  SockPeer{cookie, backend}      -> SockOrigin (what the socket asked)
//! SOCK_UDP      LRU_HASH  SockPeer{cookie, asked-for}    -> SockBackend (the datagrams' backend)
//! ```
//!
//! Addresses and ports are in network order as `bpf_sock_addr` holds them (a port in the low 16
//! bits of `user_port`); cookies and IDs in host order. Socket cookies are never reused while
//! the host runs, so an entry of a closed socket is only ever found by no one, and goes when
//! the LRU needs its room.

/// Map `SHOAL_SOCK_CONFIG`: `ARRAY`, index `SOCK_CONFIG_*` -> `u64`, written by the agent.
pub const CONFIG_MAP: &str = "SHOAL_SOCK_CONFIG";
/// Map `SHOAL_SOCK_ORIGINS`: `LRU_HASH`, [`SockPeer`] (the socket's cookie and the backend it
/// was sent to) -> [`SockOrigin`] (the address it asked for). `getpeername(2)` and
/// `recvfrom(2)` on a balanced socket show the origin in place of the backend.
pub const ORIGINS_MAP: &str = "SHOAL_SOCK_ORIGINS";
/// Map `SHOAL_SOCK_UDP`: `LRU_HASH`, [`SockPeer`] (the socket's cookie and the address it
/// sends to) -> [`SockBackend`]: an unconnected UDP socket's datagrams to one service address
/// stay on one backend while it lives, as a UDP flow does on the tc path.
pub const UDP_MAP: &str = "SHOAL_SOCK_UDP";

/// [`CONFIG_MAP`] index: the cookie of the node's own network namespace; 0: node-local
/// clients are not served.
pub const SOCK_CONFIG_NETNS: u32 = 0;
/// [`CONFIG_MAP`] index: the cgroup v2 ID of the node's task subtree
/// (`shoal-tasks/<node-id>`); 0: tasks' sockets are left to the tc path.
pub const SOCK_CONFIG_TASK_CGROUP: u32 = 1;
/// Entries of [`CONFIG_MAP`].
pub const SOCK_CONFIG_LEN: u32 = 2;

/// Entries of [`ORIGINS_MAP`]: one per balanced TCP connection or connected UDP socket, one
/// per (unconnected UDP socket, backend).
pub const MAX_SOCK_ORIGINS: u32 = 65_536;
/// Entries of [`UDP_MAP`]: one per (unconnected UDP socket, service address).
pub const MAX_SOCK_UDP: u32 = 65_536;
/// How deep in the cgroup v2 tree the programs look for the node's task subtree above the
/// calling process's cgroup (the root is level 0).
pub const MAX_CGROUP_DEPTH: i32 = 32;

/// Key of [`ORIGINS_MAP`] and [`UDP_MAP`]: a socket and an address it talks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockPeer {
    /// `bpf_get_socket_cookie`.
    pub cookie: u64,
    /// Network order.
    pub ip: u32,
    /// Network order.
    pub port: u16,
    /// Explicit, so every byte of the key is written.
    pub pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockPeer>() == 16);

/// Value of [`ORIGINS_MAP`]: the address the socket asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOrigin {
    /// Network order.
    pub ip: u32,
    /// Network order.
    pub port: u16,
    pub pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockOrigin>() == 8);

/// Value of [`UDP_MAP`]: the backend an unconnected UDP socket's datagrams to an address go
/// to, kept while `LB_BACKENDS[backend_id]` still holds it for the service (the tc path's
/// liveness rule); else the next datagram is balanced again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockBackend {
    /// Network order.
    pub ip: u32,
    /// Network order.
    pub port: u16,
    pub pad: u16,
    pub backend_id: u32,
    pub service_id: u32,
}
const _: () = assert!(core::mem::size_of::<SockBackend>() == 16);

// SAFETY (all below): repr(C), integer fields only, no implicit padding (sizes asserted above),
// every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockPeer {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockOrigin {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockBackend {}
