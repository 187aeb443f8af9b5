//! Packet counters: every datagram or frame we drop is counted by reason, so an operator can tell
//! a key mismatch (undecryptable) from a broken peer (malformed) or a short read (truncated).

use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::DropReason;

/// A snapshot of the counters, returned by [`super::NetDb::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDbStats {
    /// Datagrams and push-pull frames received (before any check).
    pub received: u64,
    /// Datagrams and push-pull frames sent.
    pub sent: u64,
    /// Shorter than the fixed header plus the GCM tag.
    pub dropped_truncated: u64,
    /// Unknown key id, or the tag did not verify (wrong key or forged).
    pub dropped_undecryptable: u64,
    /// Decrypted fine but not a valid message (bad version, bad encoding, foca refused it).
    pub dropped_malformed: u64,
}

/// The live counters, shared by the UDP loop and the push-pull tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_truncated: AtomicU64,
    pub dropped_undecryptable: AtomicU64,
    pub dropped_malformed: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(counter: &AtomicU64) {
        // Relaxed: these are independent counters, nothing is ordered by them.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of packets dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::Truncated => &self.dropped_truncated,
            DropReason::Undecryptable => &self.dropped_undecryptable,
            DropReason::Malformed => &self.dropped_malformed,
        }
    }

    pub(crate) fn snapshot(&self) -> NetDbStats {
        NetDbStats {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped_truncated: self.dropped_truncated.load(Ordering::Relaxed),
            dropped_undecryptable: self.dropped_undecryptable.load(Ordering::Relaxed),
            dropped_malformed: self.dropped_malformed.load(Ordering::Relaxed),
        }
    }
}
