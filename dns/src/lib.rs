//! shoal's embedded DNS: what a task's resolver at 127.0.0.11 sees and answers.
//!
//! This crate knows nothing of netlink or eBPF; the agent hands it sockets and records.
//!
//! # Layout
//! - [`resolv_conf`]: reading the host's resolv.conf (upstream servers, search, options) and
//!   writing the one each task gets.
//! - `records`: the per-network name index built from endpoints, its lookups (scope order,
//!   network suffix, owned names, PTR), and [`RecordsView`], the snapshot the agent swaps.
//! - `wire`: the numbers every response agrees on (record TTL, UDP size cap, the payload size
//!   our OPT record advertises).
//! - `answer`: one received message -> drop, immediate response, or forward; and the encoding
//!   of every response (size limit, TC).
//! - `fast`: the common UDP query (one question, a name the records answer or own, no EDNS
//!   options) answered straight from its bytes, byte for byte as `answer` would.
//! - `forward`: asking the upstream resolvers (UDP, TCP on truncation, one time budget).
//! - `batch`: UDP datagrams received (`recvmmsg`) and answered (`sendmmsg`) a batch at a time.
//! - `node`: [`ServerConfig`] and what every task served on the node shares (configuration,
//!   records, counters).
//! - `transport`: each task's UDP and TCP loops and their bounds.
//! - `server`: [`DnsServer`] (node-wide: the serving thread) and [`TaskDns`] (one task served).
//! - `stats`: [`DnsCounters`].
#![forbid(unsafe_code)]

mod answer;
mod batch;
mod fast;
mod forward;
mod node;
mod records;
pub mod resolv_conf;
mod server;
mod stats;
mod transport;
mod wire;

pub use node::ServerConfig;
pub use records::{EndpointRecord, NetworkInfo, Records, RecordsView};
pub use server::{DnsServer, TaskDns};
pub use stats::DnsCounters;
