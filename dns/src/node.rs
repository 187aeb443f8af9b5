//! What every task served on this node shares: the [`ServerConfig`], the records the agent
//! swaps and the counters; [`crate::DnsServer`] owns it and each task's loops read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::records::RecordsView;
use crate::stats::Counters;

/// How the server forwards and what it bounds.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Resolvers for names that are not shoal's, tried in order (the host's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
    /// Budget for one forwarded query across all upstreams, from its arrival; then SERVFAIL.
    pub upstream_timeout: Duration,
    /// Forwards in flight per task; beyond it queries to forward get REFUSED, so a flood costs
    /// bounded memory and sockets.
    pub max_pending_forwards: usize,
    /// Open TCP connections per task; extra connections are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete message for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            max_pending_forwards: 128,
            max_tcp_connections: 16,
            tcp_idle_timeout: Duration::from_secs(5),
        }
    }
}

/// Node-wide: every task's sockets are served against the same records and counters, each
/// with that task's own scope.
#[derive(Debug)]
pub(crate) struct NodeShared {
    pub(crate) config: ServerConfig,
    /// Swapped by the agent; read on every query.
    pub(crate) records: Arc<RecordsView>,
    pub(crate) counters: Counters,
}
