//! The replicated endpoint table: records with Lamport clocks, tombstones, reaping, and the
//! "withdrawn" view of endpoints owned by nodes SWIM currently considers down.
//!
//! A node declared down is not taken for gone at once: for [`DOWN_DRAIN`] its endpoints are
//! shown draining (out of DNS and of every round robin, their connections, FDB and ARP entries
//! kept), then hidden. An agent that restarts (an upgrade: its tasks keep running, its
//! kernel objects keep forwarding) is away long enough for SWIM to declare it down; the
//! connections to its tasks must outlive that, as they outlive the managers' Down (their
//! window for an agent that says it is stopping is the same 15 s). A node that really died
//! loses its connections when the drain ends instead of when it is declared down.
//!
//! Ordering: a record replaces another for the same (network, endpoint) when its
//! `(clock, owner)` is greater. Every node keeps one Lamport clock, bumped past anything it has
//! seen on each local change, so a local change always wins over what the node already knows.
//!
//! Owner authority: a node is the only writer of its own records. When it hears a record it owns
//! that differs from what it holds (a stale copy or tombstone from a previous life, e.g. after a
//! restart with a fresh table), it re-asserts its current state with a clock above the stale one.
//! That is what stops a rejoining node from being shadowed by stale tombstones of itself.
//!
//! Signatures (`sign`): a node signs every record it writes; a remote record is installed (or,
//! for networks we are not attached to, its version kept and relayed) only if its owner's
//! public key verifies it. Only records newer than what we hold are checked, so copies that
//! push-pull and retransmits bring again cost a comparison, not a verification. A record of an
//! owner whose key we do not know yet is parked (a few, newest per entry) and checked again
//! when the managers' keys arrive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

pub(crate) use super::record::Record;
pub use super::record::{Change, Endpoint};
use super::sign::{self, PublicKey, SigningKey};
use super::stats::Stats;

/// How many records of owners with no known key are kept for a second look.
const PARKED_MAX: usize = 1024;

/// How long the endpoints of a node SWIM declared down are shown draining before they are
/// hidden, in production (`NetDbConfig::down_drain`).
pub const DOWN_DRAIN: Duration = Duration::from_secs(15);

/// How the entries of an owner SWIM declared down are shown.
#[derive(Clone, Copy, Debug)]
enum Down {
    /// Draining (out of DNS and every round robin, kept otherwise) since it was declared down.
    Draining { since: Instant },
    /// Not at all.
    Hidden,
}

struct Entry {
    rec: Record,
    /// When the tombstone was created locally; reaped `tombstone_ttl` later.
    deleted_at: Option<Instant>,
}

pub(crate) struct Table {
    node_id: String,
    clock: u64,
    /// Keyed by (network, endpoint) so a network's entries are contiguous.
    entries: BTreeMap<(String, String), Entry>,
    joined: HashSet<String>,
    /// Versions (no payload) of records of networks we are not attached to: enough to relay
    /// each change once instead of bouncing it between non-members forever.
    foreign: HashMap<(String, String), (u64, String)>,
    /// Owners SWIM declared down, and how their entries are shown: they are kept until the
    /// owner comes back.
    down: HashMap<String, Down>,
    /// Owners with entries that SWIM has not shown alive here, and since when.
    strangers: HashMap<String, Instant>,
    /// Records this node must (re)broadcast: local changes and owner re-assertions.
    outbox: Vec<Record>,
    events: broadcast::Sender<Change>,
    /// Signs our records; `None` until the agent has the node key (others drop them meanwhile).
    signer: Option<SigningKey>,
    /// Each node's certified public key, from the managers, parsed once.
    peer_keys: HashMap<String, PublicKey>,
    /// Records whose owner had no known key when they came, newest per entry.
    parked: HashMap<(String, String), Record>,
    stats: Arc<Stats>,
}

/// What checking a remote record's signature found.
enum Check {
    Valid,
    UnknownOwner,
    Forged,
}

impl Table {
    pub(crate) fn new(
        node_id: String,
        events: broadcast::Sender<Change>,
        stats: Arc<Stats>,
    ) -> Table {
        Table {
            node_id,
            clock: 0,
            entries: BTreeMap::new(),
            joined: HashSet::new(),
            foreign: HashMap::new(),
            down: HashMap::new(),
            strangers: HashMap::new(),
            outbox: Vec::new(),
            events,
            signer: None,
            peer_keys: HashMap::new(),
            parked: HashMap::new(),
            stats,
        }
    }

    /// Signs `rec` with our key (unsigned without one).
    fn signed(&self, mut rec: Record) -> Record {
        rec.signature = self
            .signer
            .as_ref()
            .map(|k| k.sign(&rec))
            .unwrap_or_default();
        rec
    }

    fn check(&self, rec: &Record) -> Check {
        let key = if rec.owner == self.node_id {
            self.signer.as_ref().map(SigningKey::verifying_key)
        } else {
            self.peer_keys.get(&rec.owner)
        };
        let Some(key) = key else {
            return Check::UnknownOwner;
        };
        Stats::inc(&self.stats.entries_verified);
        if sign::verify(key, rec) {
            Check::Valid
        } else {
            Check::Forged
        }
    }

    /// Whether `rec` may be taken in; counts and parks the ones that may not. `checked`: its
    /// signature was already verified (`Some(valid)`), outside the table's lock.
    fn admit(&mut self, rec: &Record, checked: Option<bool>) -> bool {
        let check = match checked {
            Some(true) => Check::Valid,
            Some(false) => Check::Forged,
            None => self.check(rec),
        };
        match check {
            Check::Valid => true,
            Check::Forged => {
                Stats::inc(&self.stats.dropped_forged);
                tracing::debug!(owner = %rec.owner, endpoint = %rec.endpoint.endpoint_id,
                    clock = rec.clock, "netdb: dropped a record its owner did not sign");
                false
            }
            Check::UnknownOwner => {
                Stats::inc(&self.stats.dropped_unknown_owner);
                let key = rec.key();
                let newer = self
                    .parked
                    .get(&key)
                    .is_none_or(|p| rec.version() > p.version());
                if newer && (self.parked.len() < PARKED_MAX || self.parked.contains_key(&key)) {
                    self.parked.insert(key, rec.clone());
                }
                false
            }
        }
    }

    /// From now on our records are signed with `key`. If it is a new key (a renewed
    /// certificate), our records are re-published above their current versions, signed with
    /// it: nodes that meet them later check them against the new key.
    pub(crate) fn set_signer(&mut self, key: SigningKey) {
        let same = self
            .signer
            .as_ref()
            .is_some_and(|k| k.public_key() == key.public_key());
        self.signer = Some(key);
        if same {
            return;
        }
        let ours: Vec<Record> = self
            .entries
            .values()
            .filter(|e| e.rec.owner == self.node_id)
            .map(|e| e.rec.clone())
            .collect();
        for rec in ours {
            let clock = self.next_clock();
            let rec = self.signed(Record { clock, ..rec });
            self.outbox.push(rec.clone());
            self.install(rec);
        }
    }

    pub(crate) fn signer_public_key(&self) -> Option<Vec<u8>> {
        self.signer.as_ref().map(|k| k.public_key().to_vec())
    }

    /// The managers' current view of every node's key; parked records are looked at again.
    pub(crate) fn set_peer_keys(&mut self, keys: HashMap<String, Vec<u8>>) {
        let mut old = std::mem::take(&mut self.peer_keys);
        self.peer_keys = keys
            .into_iter()
            .map(|(node, bytes)| {
                // Parsing an Ed25519 key costs a few µs: a new set (every join) reuses the rest.
                let key = match old.remove(&node) {
                    Some(key) if key.as_bytes() == bytes.as_slice() => key,
                    _ => {
                        let key = PublicKey::from_bytes(&bytes);
                        if !key.is_usable() {
                            tracing::warn!(%node, len = bytes.len(),
                                "netdb: a node's certified key is neither Ed25519 nor P-256; \
                                 its records will be dropped");
                        }
                        key
                    }
                };
                (node, key)
            })
            .collect();
        let parked: Vec<Record> = std::mem::take(&mut self.parked).into_values().collect();
        for rec in parked {
            if self.peer_keys.contains_key(&rec.owner) {
                self.merge(rec);
            } else {
                self.parked.insert(rec.key(), rec);
            }
        }
    }

    /// The endpoint as subscribers see it (draining while its owner's down drain lasts), or
    /// `None`: deleted, of a network we are not attached to, or of an owner down and drained.
    fn shown(&self, rec: &Record) -> Option<Endpoint> {
        if rec.deleted || !self.joined.contains(&rec.endpoint.network_id) {
            return None;
        }
        match self.down.get(&rec.owner) {
            None => Some(rec.endpoint.clone()),
            Some(Down::Draining { .. }) => Some(Endpoint {
                draining: true,
                ..rec.endpoint.clone()
            }),
            Some(Down::Hidden) => None,
        }
    }

    /// Each of `owner`'s entries as shown now, by key.
    fn shown_of(&self, owner: &str) -> BTreeMap<(String, String), Endpoint> {
        self.entries
            .iter()
            .filter(|(_, e)| e.rec.owner == owner)
            .filter_map(|(key, e)| Some((key.clone(), self.shown(&e.rec)?)))
            .collect()
    }

    /// Sets how `owner`'s entries are shown (`None`: as they are) and emits what changed.
    fn show_owner_as(&mut self, owner: &str, down: Option<Down>) {
        let before = self.shown_of(owner);
        match down {
            Some(down) => self.down.insert(owner.to_string(), down),
            None => self.down.remove(owner),
        };
        let after = self.shown_of(owner);
        for (key, old) in &before {
            match after.get(key) {
                None => self.emit(Change::Remove(old.clone())),
                Some(new) if new != old => self.emit(Change::Upsert(new.clone())),
                Some(_) => {}
            }
        }
        for (key, new) in &after {
            if !before.contains_key(key) {
                self.emit(Change::Upsert(new.clone()));
            }
        }
    }

    fn emit(&self, change: Change) {
        // No subscribers is fine: the table itself is the source of truth.
        let _ = self.events.send(change);
    }

    /// Replaces (or inserts) an entry and emits what subscribers need to see.
    fn install(&mut self, rec: Record) {
        let key = rec.key();
        let old = self.entries.get(&key).and_then(|e| self.shown(&e.rec));
        match (old, self.shown(&rec)) {
            (Some(old), None) => self.emit(Change::Remove(old)),
            (Some(old), Some(new)) if old == new => {}
            (_, Some(new)) => self.emit(Change::Upsert(new)),
            (None, None) => {}
        }
        let deleted_at = rec.deleted.then(Instant::now);
        self.entries.insert(key, Entry { rec, deleted_at });
    }

    fn next_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A local put: joins the network implicitly (a node holds the networks its tasks use).
    pub(crate) fn local_put(&mut self, mut endpoint: Endpoint) {
        if !self.joined.contains(&endpoint.network_id) {
            self.join_network(&endpoint.network_id.clone());
        }
        if endpoint.node_id.is_empty() {
            endpoint.node_id = self.node_id.clone();
        }
        let rec = Record {
            endpoint,
            owner: self.node_id.clone(),
            clock: self.next_clock(),
            deleted: false,
            signature: Vec::new(),
        };
        let rec = self.signed(rec);
        self.outbox.push(rec.clone());
        self.install(rec);
    }

    pub(crate) fn local_delete(&mut self, network_id: &str, endpoint_id: &str) {
        let key = (network_id.to_string(), endpoint_id.to_string());
        let Some(endpoint) = self.entries.get(&key).map(|e| e.rec.endpoint.clone()) else {
            return;
        };
        let rec = Record {
            endpoint,
            owner: self.node_id.clone(),
            clock: self.next_clock(),
            deleted: true,
            signature: Vec::new(),
        };
        let rec = self.signed(rec);
        self.outbox.push(rec.clone());
        self.install(rec);
    }

    /// Merges a remote record; returns true when it was new information (worth relaying).
    ///
    /// Only a record that would change something is verified (and counted if it fails): what
    /// we already hold, at that version or above, is discarded unverified.
    pub(crate) fn merge(&mut self, rec: Record) -> bool {
        self.merge_checked(rec, None)
    }

    /// The public key to verify `rec` with, if merging it would change something: push-pull
    /// verifies a whole table's worth of records with this, without holding the table (which
    /// the engine needs for every datagram), then merges them with [`Table::merge_checked`].
    /// `None` leaves the check to the merge (nothing to do, an unknown owner, or our own).
    pub(crate) fn key_to_check(&self, rec: &Record) -> Option<PublicKey> {
        if rec.owner == self.node_id {
            return None;
        }
        let key = rec.key();
        let newer = if self.joined.contains(&key.0) {
            self.entries
                .get(&key)
                .is_none_or(|e| rec.version() > e.rec.version())
        } else {
            self.foreign
                .get(&key)
                .is_none_or(|(c, o)| (rec.clock, rec.owner.as_str()) > (*c, o.as_str()))
        };
        newer.then(|| self.peer_keys.get(&rec.owner).cloned())?
    }

    /// [`Table::merge`], with the signature already verified when `checked` is `Some`.
    pub(crate) fn merge_checked(&mut self, rec: Record, checked: Option<bool>) -> bool {
        let key = rec.key();
        if !self.joined.contains(&key.0) && rec.owner != self.node_id {
            // Not attached: keep only the version, so each change is relayed once.
            let newer = self
                .foreign
                .get(&key)
                .is_none_or(|(c, o)| (rec.clock, rec.owner.as_str()) > (*c, o.as_str()));
            // Verified too: a forged high version kept here would stop us relaying the real
            // owner's next changes.
            if !newer || !self.admit(&rec, checked) {
                return false;
            }
            self.clock = self.clock.max(rec.clock);
            self.foreign.insert(key, (rec.clock, rec.owner));
            return true;
        }
        let current = self.entries.get(&key);
        if rec.owner == self.node_id {
            // Owner authority: anything about our own entries that is not exactly what we hold
            // is stale, from a previous life of this node.
            let same = current
                .is_some_and(|e| e.rec.deleted == rec.deleted && e.rec.endpoint == rec.endpoint);
            let stale = !same && current.is_none_or(|e| rec.version() >= e.rec.version());
            // Checked before its clock counts: a forged record must not move our clock.
            if stale && self.admit(&rec, checked) {
                self.clock = self.clock.max(rec.clock);
                self.reassert(key, rec);
            }
            return false;
        }
        if current.is_some_and(|e| rec.version() <= e.rec.version()) {
            return false;
        }
        if !self.admit(&rec, checked) {
            return false;
        }
        self.clock = self.clock.max(rec.clock);
        self.install(rec);
        true
    }

    /// Publishes our current state of `key` (or a tombstone) above a stale copy of it.
    fn reassert(&mut self, key: (String, String), stale: Record) {
        let clock = self.next_clock();
        let rec = match self.entries.get(&key) {
            Some(e) if !e.rec.deleted && self.joined.contains(&key.0) => Record {
                clock,
                ..e.rec.clone()
            },
            _ => Record {
                endpoint: stale.endpoint,
                owner: self.node_id.clone(),
                clock,
                deleted: true,
                signature: Vec::new(),
            },
        };
        let rec = self.signed(rec);
        self.outbox.push(rec.clone());
        if self.joined.contains(&key.0) {
            self.install(rec);
        }
    }

    /// Queues `rec` for broadcast as is: how a test plays a member forging others' records.
    #[cfg(test)]
    pub(crate) fn push_raw(&mut self, rec: Record) {
        self.outbox.push(rec);
    }

    pub(crate) fn take_outbox(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.outbox)
    }

    pub(crate) fn join_network(&mut self, network_id: &str) {
        // Forget the versions-only view so push-pull brings the full records in.
        self.foreign.retain(|k, _| k.0 != network_id);
        self.joined.insert(network_id.to_string());
    }

    /// Tombstones our own endpoints on the network (they cannot stay attached), then drops the
    /// network's table: a node only holds tables of networks it is attached to.
    pub(crate) fn leave_network(&mut self, network_id: &str) {
        let keys: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, e)| k.0 == network_id && e.rec.owner == self.node_id && !e.rec.deleted)
            .map(|(k, _)| k.1.clone())
            .collect();
        for endpoint_id in keys {
            self.local_delete(network_id, &endpoint_id);
        }
        let gone: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, _)| k.0 == network_id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(e) = self.entries.remove(&key)
                && let Some(shown) = self.shown(&e.rec)
            {
                self.emit(Change::Remove(shown));
            }
        }
        self.joined.remove(network_id);
    }

    pub(crate) fn is_joined(&self, network_id: &str) -> bool {
        self.joined.contains(network_id)
    }

    /// SWIM declared `node` down at `now`: its entries drain, then are hidden
    /// ([`Self::end_down_drains`]).
    pub(crate) fn withdraw_node(&mut self, node: &str, now: Instant) {
        if node == self.node_id || self.down.contains_key(node) {
            return;
        }
        self.show_owner_as(node, Some(Down::Draining { since: now }));
    }

    /// Hides the entries of the nodes down for `drain` or longer at `now`.
    pub(crate) fn end_down_drains(&mut self, now: Instant, drain: Duration) {
        let over: Vec<String> = self
            .down
            .iter()
            .filter(|(_, down)| {
                matches!(down, Down::Draining { since } if now.duration_since(*since) >= drain)
            })
            .map(|(owner, _)| owner.clone())
            .collect();
        for owner in over {
            self.show_owner_as(&owner, Some(Down::Hidden));
        }
    }

    /// Withdraws the entries of owners that SWIM has not shown alive here for `grace`.
    ///
    /// A node that (re)starts while another is already cut off learns that one's entries by
    /// push-pull from a third node, but never hears it declared down: it was never up here, so
    /// SWIM has nothing to notify. Without this its entries would stay forever, the stale
    /// records of moby#53141. `grace` covers how long SWIM takes to show a live member.
    pub(crate) fn withdraw_strangers(
        &mut self,
        alive: &HashSet<String>,
        now: Instant,
        grace: Duration,
    ) {
        let owners: HashSet<String> = self
            .entries
            .values()
            .filter(|e| !e.rec.deleted)
            .map(|e| e.rec.owner.clone())
            .collect();
        self.strangers
            .retain(|owner, _| owners.contains(owner) && !alive.contains(owner));
        for owner in owners {
            if owner == self.node_id || alive.contains(&owner) || self.down.contains_key(&owner) {
                continue;
            }
            let since = *self.strangers.entry(owner.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                // Never seen alive: nothing of it is served here to drain.
                tracing::debug!(%owner, "netdb: withdrawing entries of a node never seen alive");
                self.show_owner_as(&owner, Some(Down::Hidden));
            }
        }
    }

    /// `node` is alive again: show its entries; fresher state arrives by push-pull/broadcast.
    /// Returns whether the node was withdrawn (so the caller can resync with it).
    pub(crate) fn restore_node(&mut self, node: &str) -> bool {
        if !self.down.contains_key(node) {
            return false;
        }
        self.show_owner_as(node, None);
        true
    }

    pub(crate) fn live(&self, network_id: &str) -> Vec<Endpoint> {
        self.entries
            .range((network_id.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == network_id)
            .filter_map(|(_, e)| self.shown(&e.rec))
            .collect()
    }

    /// One live entry, as [`Self::live`] would list it.
    pub(crate) fn live_one(&self, network_id: &str, endpoint_id: &str) -> Option<Endpoint> {
        let key = (network_id.to_string(), endpoint_id.to_string());
        let entry = self.entries.get(&key)?;
        self.shown(&entry.rec)
    }

    /// Everything we hold (joined networks only, tombstones included) for push-pull.
    pub(crate) fn snapshot(&self) -> Vec<Record> {
        self.entries.values().map(|e| e.rec.clone()).collect()
    }

    pub(crate) fn reap(&mut self, ttl: Duration) {
        let now = Instant::now();
        self.entries
            .retain(|_, e| e.deleted_at.is_none_or(|t| now.duration_since(t) < ttl));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use std::net::Ipv4Addr;

    use super::*;

    pub(crate) fn ep(net: &str, id: &str, node: &str) -> Endpoint {
        Endpoint {
            network_id: net.into(),
            endpoint_id: id.into(),
            node_id: node.into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: [2, 0, 0, 0, 0, 2],
            vtep: Ipv4Addr::LOCALHOST,
            service: "web".into(),
            vip: None,
            aliases: vec![],
            service_aliases: vec![],
            draining: false,
        }
    }

    /// A key per node name, the same for every table of one test.
    fn keys(names: &[&str]) -> HashMap<String, SigningKey> {
        names
            .iter()
            .map(|n| (n.to_string(), SigningKey::generate().expect("key")))
            .collect()
    }

    /// A table for `node` that signs with its key and knows everyone's.
    fn table(
        node: &str,
        tx: broadcast::Sender<Change>,
        keys: &HashMap<String, SigningKey>,
    ) -> Table {
        let mut t = Table::new(node.into(), tx, Arc::default());
        t.set_signer(keys[node].clone());
        t.set_peer_keys(
            keys.iter()
                .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
                .collect(),
        );
        t
    }

    fn signed_by(key: &SigningKey, rec: Record) -> Record {
        let signature = key.sign(&rec);
        Record { signature, ..rec }
    }

    #[test]
    fn owners_never_seen_alive_are_withdrawn_after_the_grace() {
        let (tx, mut rx) = broadcast::channel(16);
        let k = keys(&["me", "ghost"]);
        let mut t = table("me", tx, &k);
        t.join_network("n");
        t.merge(signed_by(
            &k["ghost"],
            Record {
                endpoint: ep("n", "e1", "ghost"),
                owner: "ghost".into(),
                clock: 1,
                deleted: false,
                signature: Vec::new(),
            },
        ));
        assert!(matches!(rx.try_recv(), Ok(Change::Upsert(_))));
        let grace = Duration::from_secs(5);
        let start = Instant::now();
        let none = HashSet::new();
        t.withdraw_strangers(&none, start, grace);
        t.withdraw_strangers(&none, start + Duration::from_secs(4), grace);
        assert_eq!(t.live("n").len(), 1, "still within the grace");
        t.withdraw_strangers(&none, start + grace, grace);
        assert!(t.live("n").is_empty());
        assert!(matches!(rx.try_recv(), Ok(Change::Remove(_))));
        // Seen alive later: back.
        assert!(t.restore_node("ghost"));
        assert_eq!(t.live("n").len(), 1);
        // An owner SWIM shows alive is never a stranger.
        let alive: HashSet<String> = ["ghost".to_string()].into();
        t.withdraw_strangers(&alive, start + grace * 10, grace);
        assert_eq!(t.live("n").len(), 1);
    }

    #[test]
    fn lamport_resolution_tombstones_and_authority() {
        let (tx, _rx) = broadcast::channel(64);
        let k = keys(&["a", "b"]);
        let mut a = table("a", tx.clone(), &k);
        let mut b = table("b", tx, &k);
        b.join_network("n");
        a.local_put(ep("n", "t1", "a"));
        for r in a.take_outbox() {
            assert!(b.merge(r));
        }
        assert_eq!(b.live("n").len(), 1);
        a.local_delete("n", "t1");
        let del = a.take_outbox();
        for r in del.clone() {
            assert!(b.merge(r));
        }
        assert!(b.live("n").is_empty());
        // Stale replay is ignored.
        assert!(!b.merge(del[0].clone()));
        // Withdraw/restore.
        a.local_put(ep("n", "t2", "a"));
        for r in a.take_outbox() {
            b.merge(r);
        }
        let down = Instant::now();
        b.withdraw_node("a", down);
        assert!(
            b.live("n").iter().all(|e| e.draining),
            "a node declared down drains first"
        );
        b.end_down_drains(down + DOWN_DRAIN - Duration::from_millis(1), DOWN_DRAIN);
        assert!(!b.live("n").is_empty(), "still draining");
        b.end_down_drains(down + DOWN_DRAIN, DOWN_DRAIN);
        assert!(b.live("n").is_empty());
        b.restore_node("a");
        assert_eq!(b.live("n").len(), 1);
        // A restarted "a" with a fresh table puts t1 again at clock 1; b's tombstone (clock 2)
        // comes back to it and it re-asserts above it.
        let (tx2, _r2) = broadcast::channel(64);
        let mut a2 = table("a", tx2, &k);
        a2.local_put(ep("n", "t1", "a"));
        a2.take_outbox();
        for r in b.snapshot() {
            a2.merge(r);
        }
        let out = a2.take_outbox();
        for r in out {
            b.merge(r);
        }
        let live: Vec<_> = b.live("n").into_iter().map(|e| e.endpoint_id).collect();
        assert_eq!(
            live,
            vec!["t1".to_string()],
            "t2 from the old life is tombstoned"
        );
        b.reap(Duration::ZERO);
        assert_eq!(b.snapshot().len(), 1);
    }

    #[test]
    fn records_are_verified_once_and_forgeries_dropped() {
        let (tx, _rx) = broadcast::channel(64);
        let k = keys(&["a", "b", "m"]);
        let mut a = table("a", tx.clone(), &k);
        let mut b = table("b", tx, &k);
        b.join_network("n");
        a.local_put(ep("n", "t1", "a"));
        let put = a.take_outbox();
        assert!(b.merge(put[0].clone()));
        let verified = b.stats.entries_verified.load(Ordering::Relaxed);
        // Copies of a version we hold are not verified again.
        for _ in 0..5 {
            assert!(!b.merge(put[0].clone()));
        }
        assert_eq!(b.stats.entries_verified.load(Ordering::Relaxed), verified);

        // m rewrites a's entry above its version, signed with m's own key or not at all.
        let mut moved = ep("n", "t1", "a");
        moved.ip = Ipv4Addr::new(10, 0, 0, 66);
        let forged = Record {
            endpoint: moved,
            owner: "a".into(),
            clock: 99,
            deleted: false,
            signature: Vec::new(),
        };
        assert!(!b.merge(forged.clone()));
        assert!(!b.merge(signed_by(&k["m"], forged.clone())));
        assert_eq!(b.stats.dropped_forged.load(Ordering::Relaxed), 2);
        assert_eq!(b.live("n")[0].ip, Ipv4Addr::new(10, 0, 0, 2));
        // ... and its clock did not count.
        b.local_put(ep("n", "t2", "b"));
        assert!(b.take_outbox()[0].clock < 99);
        // A forged tombstone does not delete it either.
        let tomb = Record {
            deleted: true,
            ..put[0].clone()
        };
        assert!(!b.merge(signed_by(&k["m"], Record { clock: 50, ..tomb })));
        assert_eq!(b.live("n").len(), 2);

        // An owner with no known key: parked, taken once its key arrives.
        let mut c = Table::new("c".into(), broadcast::channel(8).0, Arc::default());
        c.join_network("n");
        assert!(!c.merge(put[0].clone()));
        assert_eq!(c.stats.dropped_unknown_owner.load(Ordering::Relaxed), 1);
        assert!(c.live("n").is_empty());
        c.set_peer_keys(HashMap::from([(
            "a".to_string(),
            k["a"].public_key().to_vec(),
        )]));
        assert_eq!(c.live("n").len(), 1);
    }

    #[test]
    fn push_pull_checks_only_new_versions_outside_the_lock() {
        let (tx, _rx) = broadcast::channel(64);
        let k = keys(&["a", "b"]);
        let mut a = table("a", tx.clone(), &k);
        let mut b = table("b", tx, &k);
        b.join_network("n");
        a.local_put(ep("n", "t1", "a"));
        let rec = a.take_outbox().remove(0);
        let key = b.key_to_check(&rec).expect("a new version is checked");
        assert_eq!(key.as_bytes(), k["a"].public_key());
        // A forged copy, found out before the lock: dropped and counted.
        assert!(!b.merge_checked(rec.clone(), Some(false)));
        assert_eq!(b.stats.dropped_forged.load(Ordering::Relaxed), 1);
        assert!(b.live("n").is_empty());
        assert!(b.merge_checked(rec.clone(), Some(sign::verify(&key, &rec))));
        // Held now: nothing to check, and our own records are left to the merge.
        assert!(b.key_to_check(&rec).is_none());
        b.local_put(ep("n", "t2", "b"));
        let ours = b.take_outbox().remove(0);
        assert!(b.key_to_check(&ours).is_none());
    }

    #[test]
    fn a_new_key_republishes_our_records_under_it() {
        let (tx, _rx) = broadcast::channel(64);
        let k = keys(&["a", "b"]);
        let mut a = table("a", tx.clone(), &k);
        a.local_put(ep("n", "t1", "a"));
        a.take_outbox();
        let renewed = SigningKey::generate().expect("key");
        a.set_signer(renewed.clone());
        let out = a.take_outbox();
        assert_eq!(out.len(), 1);
        // b, told the new key, takes the re-signed record.
        let mut b = table("b", tx, &k);
        let mut peers: HashMap<String, Vec<u8>> = HashMap::new();
        peers.insert("a".into(), renewed.public_key().to_vec());
        b.set_peer_keys(peers);
        b.join_network("n");
        assert!(b.merge(out[0].clone()));
        // The same key again changes nothing.
        a.set_signer(renewed);
        assert!(a.take_outbox().is_empty());
    }
}
