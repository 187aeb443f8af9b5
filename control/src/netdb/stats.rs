//! Packet counters: every datagram or frame we drop is counted by reason, so an operator can tell
//! a key mismatch (undecryptable) from a broken peer (malformed) or a short read (truncated);
//! push-pull connections refused at accept and transfers dropped at a deadline are counted too,
//! and so are entries dropped because their owner did not sign them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::admission::Refusal;
use super::wire::DropReason;

/// A snapshot of the counters, returned by [`super::NetDb::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDbStats {
    /// Datagrams and push-pull frames received (before any check; a frame once its whole
    /// header arrived).
    pub received: u64,
    /// Datagrams and push-pull frames sent.
    pub sent: u64,
    /// Shorter than the fixed header plus the GCM tag.
    pub dropped_truncated: u64,
    /// Unknown key id, or the tag did not verify (wrong key or forged).
    pub dropped_undecryptable: u64,
    /// Decrypted fine but not a valid message (bad version, bad encoding, foca refused it, a
    /// push-pull header announcing more than the largest frame).
    pub dropped_malformed: u64,
    /// Push-pull connections closed at accept: the cap on connections served at once was hit.
    pub pushpull_refused_busy: u64,
    /// ... the source already had its share of connections open.
    pub pushpull_refused_source: u64,
    /// ... the source opened connections faster than its rate.
    pub pushpull_refused_rate: u64,
    /// Push-pull connections dropped because a header, a frame, a send or a connect missed
    /// its deadline (slow senders).
    pub pushpull_timed_out: u64,
    /// Entry signatures checked (each new version once, not each copy of it).
    pub entries_verified: u64,
    /// Entries whose signature is not their owner's: forged by another member (or corrupt).
    pub dropped_forged: u64,
    /// Entries of an owner the managers have given no key for (yet): parked, not installed.
    pub dropped_unknown_owner: u64,
    /// Push-pulls whose peer's whole table was merged here (either side of the exchange).
    pub pushpulls_merged: u64,
}

/// The live counters, shared by the UDP loop and the push-pull tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_truncated: AtomicU64,
    pub dropped_undecryptable: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub pushpull_refused_busy: AtomicU64,
    pub pushpull_refused_source: AtomicU64,
    pub pushpull_refused_rate: AtomicU64,
    pub pushpull_timed_out: AtomicU64,
    pub entries_verified: AtomicU64,
    pub dropped_forged: AtomicU64,
    pub dropped_unknown_owner: AtomicU64,
    pub pushpulls_merged: AtomicU64,
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

    /// The counter of push-pull connections refused for `refusal`.
    pub(crate) fn refused(&self, refusal: Refusal) -> &AtomicU64 {
        match refusal {
            Refusal::Busy => &self.pushpull_refused_busy,
            Refusal::SourceBusy => &self.pushpull_refused_source,
            Refusal::TooFast => &self.pushpull_refused_rate,
        }
    }

    pub(crate) fn snapshot(&self) -> NetDbStats {
        NetDbStats {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped_truncated: self.dropped_truncated.load(Ordering::Relaxed),
            dropped_undecryptable: self.dropped_undecryptable.load(Ordering::Relaxed),
            dropped_malformed: self.dropped_malformed.load(Ordering::Relaxed),
            pushpull_refused_busy: self.pushpull_refused_busy.load(Ordering::Relaxed),
            pushpull_refused_source: self.pushpull_refused_source.load(Ordering::Relaxed),
            pushpull_refused_rate: self.pushpull_refused_rate.load(Ordering::Relaxed),
            pushpull_timed_out: self.pushpull_timed_out.load(Ordering::Relaxed),
            entries_verified: self.entries_verified.load(Ordering::Relaxed),
            dropped_forged: self.dropped_forged.load(Ordering::Relaxed),
            dropped_unknown_owner: self.dropped_unknown_owner.load(Ordering::Relaxed),
            pushpulls_merged: self.pushpulls_merged.load(Ordering::Relaxed),
        }
    }
}
