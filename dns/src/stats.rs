//! Node-wide DNS counters: relaxed atomics bumped on the query path, read as a snapshot.
//!
//! Each field documents exactly what it counts, so the agent can export them as Prometheus
//! counters without reinterpreting them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of the node-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Datagrams received on task UDP sockets, well-formed or not.
    pub queries_udp: u64,
    /// Length-prefixed messages received on task TCP connections, well-formed or not.
    pub queries_tcp: u64,
    /// NOERROR answers built from the records (with records, or empty for AAAA/MX/...).
    pub answered_local: u64,
    /// NXDOMAIN answers for names shoal owns but does not have.
    pub nxdomain: u64,
    /// Queries handed to the upstream resolvers (admitted past the pending-forward limit).
    pub forwarded: u64,
    /// SERVFAIL sent because no upstream answered in time (or none is configured).
    pub upstream_failures: u64,
    /// Messages that could not be served as queries: shorter than a header (dropped), a
    /// response (QR set, dropped), a body that does not parse or does not carry exactly one
    /// question (FORMERR), an opcode other than QUERY (NOTIMP), an EDNS version other than 0
    /// (BADVERS).
    pub malformed: u64,
    /// REFUSED sent (pending-forward limit reached, class other than IN) plus TCP connections
    /// closed at once because the task's connection limit was reached.
    pub refused: u64,
    /// UDP responses sent with TC set because they did not fit the client's payload size.
    pub truncated: u64,
}

/// The live counters; one per [`crate::DnsServer`], shared by all its tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queries_udp: AtomicU64,
    pub(crate) queries_tcp: AtomicU64,
    pub(crate) answered_local: AtomicU64,
    pub(crate) nxdomain: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) truncated: AtomicU64,
}

/// Adds one; relaxed because the counters are independent statistics, not synchronisation.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DnsCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCounters {
            queries_udp: get(&self.queries_udp),
            queries_tcp: get(&self.queries_tcp),
            answered_local: get(&self.answered_local),
            nxdomain: get(&self.nxdomain),
            forwarded: get(&self.forwarded),
            upstream_failures: get(&self.upstream_failures),
            malformed: get(&self.malformed),
            refused: get(&self.refused),
            truncated: get(&self.truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_each_counter_separately() {
        let counters = Counters::default();
        bump(&counters.queries_udp);
        bump(&counters.queries_udp);
        bump(&counters.nxdomain);
        bump(&counters.truncated);
        let snap = counters.snapshot();
        assert_eq!(
            snap,
            DnsCounters {
                queries_udp: 2,
                nxdomain: 1,
                truncated: 1,
                ..DnsCounters::default()
            }
        );
    }
}
