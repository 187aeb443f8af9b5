//! The replicated endpoint table: records with Lamport clocks, tombstones, reaping, and the
//! "withdrawn" view of endpoints owned by nodes SWIM currently considers down.
//!
//! Ordering: a record replaces another for the same (network, endpoint) when its
//! `(clock, owner)` is greater. Every node keeps one Lamport clock, bumped past anything it has
//! seen on each local change, so a local change always wins over what the node already knows.
//!
//! Owner authority: a node is the only writer of its own records. When it hears a record it owns
//! that differs from what it holds (a stale copy or tombstone from a previous life, e.g. after a
//! restart with a fresh table), it re-asserts its current state with a clock above the stale one.
//! That is what stops a rejoining node from being shadowed by stale tombstones of itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// A task's attachment to an overlay network, as replicated between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    /// The task id.
    pub endpoint_id: String,
    pub node_id: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The VTEP (data-path address) of the node running the task.
    pub vtep: Ipv4Addr,
    /// The service's name, and its VIP on this network (vip mode; `None` in dnsrr mode): what
    /// the embedded DNS answers the service name with.
    pub service: String,
    pub vip: Option<Ipv4Addr>,
    /// The task's DNS names: `<service>.<slot>.<task-id>` first, then `<service>.<slot>`.
    pub aliases: Vec<String>,
}

/// What subscribers see: only changes to live entries of joined networks of alive owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upsert(Endpoint),
    Remove(Endpoint),
}

/// One versioned entry as sent on the wire (broadcasts and push-pull).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub endpoint: Endpoint,
    /// The node that wrote this version (the only node allowed to change it).
    pub owner: String,
    pub clock: u64,
    pub deleted: bool,
}

impl Record {
    fn version(&self) -> (u64, &str) {
        (self.clock, &self.owner)
    }
    fn key(&self) -> (String, String) {
        (
            self.endpoint.network_id.clone(),
            self.endpoint.endpoint_id.clone(),
        )
    }
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
    /// Owners SWIM declared down: their entries are kept but hidden until they come back.
    down: HashSet<String>,
    /// Owners with entries that SWIM has not shown alive here, and since when.
    strangers: HashMap<String, Instant>,
    /// Records this node must (re)broadcast: local changes and owner re-assertions.
    outbox: Vec<Record>,
    events: broadcast::Sender<Change>,
}

impl Table {
    pub(crate) fn new(node_id: String, events: broadcast::Sender<Change>) -> Table {
        Table {
            node_id,
            clock: 0,
            entries: BTreeMap::new(),
            joined: HashSet::new(),
            foreign: HashMap::new(),
            down: HashSet::new(),
            strangers: HashMap::new(),
            outbox: Vec::new(),
            events,
        }
    }

    fn visible(&self, rec: &Record) -> bool {
        !rec.deleted
            && self.joined.contains(&rec.endpoint.network_id)
            && !self.down.contains(&rec.owner)
    }

    fn emit(&self, change: Change) {
        // No subscribers is fine: the table itself is the source of truth.
        let _ = self.events.send(change);
    }

    /// Replaces (or inserts) an entry and emits what subscribers need to see.
    fn install(&mut self, rec: Record) {
        let key = rec.key();
        let old_visible = self
            .entries
            .get(&key)
            .filter(|e| self.visible(&e.rec))
            .map(|e| e.rec.endpoint.clone());
        let new_visible = self.visible(&rec);
        match (old_visible, new_visible) {
            (Some(old), false) => self.emit(Change::Remove(old)),
            (Some(old), true) if old == rec.endpoint => {}
            (_, true) => self.emit(Change::Upsert(rec.endpoint.clone())),
            (None, false) => {}
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
        };
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
        };
        self.outbox.push(rec.clone());
        self.install(rec);
    }

    /// Merges a remote record; returns true when it was new information (worth relaying).
    pub(crate) fn merge(&mut self, rec: Record) -> bool {
        self.clock = self.clock.max(rec.clock);
        let key = rec.key();
        if !self.joined.contains(&key.0) && rec.owner != self.node_id {
            // Not attached: keep only the version, so each change is relayed once.
            let newer = self
                .foreign
                .get(&key)
                .is_none_or(|(c, o)| (rec.clock, rec.owner.as_str()) > (*c, o.as_str()));
            if newer {
                self.foreign.insert(key, (rec.clock, rec.owner));
            }
            return newer;
        }
        let current = self.entries.get(&key);
        let newer = current.is_none_or(|e| rec.version() > e.rec.version());
        if rec.owner == self.node_id {
            // Owner authority: anything about our own entries that is not exactly what we hold
            // is stale, from a previous life of this node.
            let same = current
                .is_some_and(|e| e.rec.deleted == rec.deleted && e.rec.endpoint == rec.endpoint);
            if !same && current.is_none_or(|e| rec.version() >= e.rec.version()) {
                self.reassert(key, rec);
            }
            return false;
        }
        if !newer {
            return false;
        }
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
            },
        };
        self.outbox.push(rec.clone());
        if self.joined.contains(&key.0) {
            self.install(rec);
        }
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
                && self.visible(&e.rec)
            {
                self.emit(Change::Remove(e.rec.endpoint));
            }
        }
        self.joined.remove(network_id);
    }

    pub(crate) fn is_joined(&self, network_id: &str) -> bool {
        self.joined.contains(network_id)
    }

    /// SWIM declared `node` down: hide its entries at once.
    pub(crate) fn withdraw_node(&mut self, node: &str) {
        if node == self.node_id || self.down.contains(node) {
            return;
        }
        let gone: Vec<Endpoint> = self
            .entries
            .values()
            .filter(|e| e.rec.owner == node && self.visible(&e.rec))
            .map(|e| e.rec.endpoint.clone())
            .collect();
        self.down.insert(node.to_string());
        for endpoint in gone {
            self.emit(Change::Remove(endpoint));
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
            if owner == self.node_id || alive.contains(&owner) || self.down.contains(&owner) {
                continue;
            }
            let since = *self.strangers.entry(owner.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                tracing::debug!(%owner, "netdb: withdrawing entries of a node never seen alive");
                self.withdraw_node(&owner);
            }
        }
    }

    /// `node` is alive again: show its entries; fresher state arrives by push-pull/broadcast.
    /// Returns whether the node was withdrawn (so the caller can resync with it).
    pub(crate) fn restore_node(&mut self, node: &str) -> bool {
        if !self.down.remove(node) {
            return false;
        }
        let back: Vec<Endpoint> = self
            .entries
            .values()
            .filter(|e| e.rec.owner == node && self.visible(&e.rec))
            .map(|e| e.rec.endpoint.clone())
            .collect();
        for endpoint in back {
            self.emit(Change::Upsert(endpoint));
        }
        true
    }

    pub(crate) fn live(&self, network_id: &str) -> Vec<Endpoint> {
        self.entries
            .range((network_id.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == network_id)
            .filter(|(_, e)| self.visible(&e.rec))
            .map(|(_, e)| e.rec.endpoint.clone())
            .collect()
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
        }
    }

    #[test]
    fn owners_never_seen_alive_are_withdrawn_after_the_grace() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut t = Table::new("me".into(), tx);
        t.join_network("n");
        t.merge(Record {
            endpoint: ep("n", "e1", "ghost"),
            owner: "ghost".into(),
            clock: 1,
            deleted: false,
        });
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
        let mut a = Table::new("a".into(), tx.clone());
        let mut b = Table::new("b".into(), tx);
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
        b.withdraw_node("a");
        assert!(b.live("n").is_empty());
        b.restore_node("a");
        assert_eq!(b.live("n").len(), 1);
        // A restarted "a" with a fresh table puts t1 again at clock 1; b's tombstone (clock 2)
        // comes back to it and it re-asserts above it.
        let (tx2, _r2) = broadcast::channel(64);
        let mut a2 = Table::new("a".into(), tx2);
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
}
