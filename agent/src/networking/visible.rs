//! The endpoints this node sees, kept change by change: what the DNS records, the VIP
//! backends and the published ports' VTEPs are built from.
//!
//! An endpoint is visible when it is this node's own, or the network DB's on a network this
//! node has a sandbox for (the DB already hides those of nodes that are down). Whatever may
//! have changed one endpoint (a network DB change, a local task attached, ready, withdrawn or
//! detached, a network joined or left) marks its key dirty ([`Dirty`]); a refresh reads only
//! the dirty keys back from their sources and hands on what really changed
//! ([`EndpointChange`]), so one task starting or stopping costs its own endpoints' work
//! however many services there are. Everything is read again (a full reconcile) only when
//! the agent starts the network DB, or has missed some of its changes.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::Ipv4Addr,
};

use shoal_control::netdb::Endpoint;

/// (network ID, task or endpoint ID).
pub type EndpointKey = (String, String);

/// What may have changed since the last refresh.
#[derive(Default)]
pub struct Dirty {
    /// Endpoints to read again.
    pub keys: HashSet<EndpointKey>,
    /// Every endpoint.
    pub all: bool,
    /// Networks this node left: their endpoints are no longer visible.
    pub networks_left: Vec<String>,
    /// VIPs to compute again for other reasons than their endpoints (a host-mode task came
    /// or went: its service's host frontends; the leader's word changed for them).
    pub vips: BTreeSet<Ipv4Addr>,
    /// Every VIP: the leader's first word, a network was joined or left, the network DB
    /// settled.
    pub all_vips: bool,
    /// The published ports' table beyond its VTEPs (the leader's ports, host-mode tasks,
    /// the ingress endpoint).
    pub mesh: bool,
}

impl Dirty {
    pub fn mark(&mut self, network_id: &str, endpoint_id: &str) {
        self.keys
            .insert((network_id.to_string(), endpoint_id.to_string()));
    }

    /// Takes what is dirty, leaving nothing dirty.
    pub fn take(&mut self) -> Dirty {
        std::mem::take(self)
    }
}

/// One endpoint as it was and as it is (at least one of them `Some`, and they differ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointChange {
    pub key: EndpointKey,
    pub old: Option<Endpoint>,
    pub new: Option<Endpoint>,
}

impl EndpointChange {
    /// The VIPs whose backends this change touches.
    pub fn vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let old = self.old.as_ref().and_then(|e| e.vip);
        let new = self.new.as_ref().and_then(|e| e.vip);
        old.into_iter().chain(new.filter(|n| Some(*n) != old))
    }
}

/// The visible endpoints, by key and by VIP.
#[derive(Default)]
pub struct Visible {
    endpoints: BTreeMap<EndpointKey, Endpoint>,
    by_vip: BTreeMap<Ipv4Addr, BTreeSet<EndpointKey>>,
}

impl Visible {
    /// Records what each key now is (`None`: not visible) and returns the changes.
    pub fn update(
        &mut self,
        now: impl IntoIterator<Item = (EndpointKey, Option<Endpoint>)>,
    ) -> Vec<EndpointChange> {
        let mut changes = Vec::new();
        for (key, new) in now {
            let old = match &new {
                Some(e) => self.endpoints.insert(key.clone(), e.clone()),
                None => self.endpoints.remove(&key),
            };
            if old == new {
                continue;
            }
            let change = EndpointChange { key, old, new };
            self.index(&change);
            changes.push(change);
        }
        changes
    }

    /// Makes the endpoints exactly `all` (the full reconcile) and returns the changes.
    pub fn replace(&mut self, all: BTreeMap<EndpointKey, Endpoint>) -> Vec<EndpointChange> {
        let mut now: BTreeMap<EndpointKey, Option<Endpoint>> =
            self.endpoints.keys().map(|k| (k.clone(), None)).collect();
        now.extend(all.into_iter().map(|(key, e)| (key, Some(e))));
        self.update(now)
    }

    fn index(&mut self, change: &EndpointChange) {
        if let Some(vip) = change.old.as_ref().and_then(|e| e.vip)
            && let Some(keys) = self.by_vip.get_mut(&vip)
        {
            keys.remove(&change.key);
            if keys.is_empty() {
                self.by_vip.remove(&vip);
            }
        }
        if let Some(vip) = change.new.as_ref().and_then(|e| e.vip) {
            self.by_vip
                .entry(vip)
                .or_default()
                .insert(change.key.clone());
        }
    }

    /// The visible endpoints behind `vip`.
    pub fn with_vip(&self, vip: Ipv4Addr) -> impl Iterator<Item = &Endpoint> {
        self.by_vip
            .get(&vip)
            .into_iter()
            .flatten()
            .filter_map(|key| self.endpoints.get(key))
    }

    /// The visible endpoints on `network_id`.
    pub fn on_network<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.entries_on(network_id).map(|(_, e)| e)
    }

    /// Their keys.
    pub fn keys_on(&self, network_id: &str) -> Vec<EndpointKey> {
        self.entries_on(network_id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn entries_on<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = (&'a EndpointKey, &'a Endpoint)> {
        self.endpoints
            .range((network_id.to_string(), String::new())..)
            .take_while(move |(k, _)| k.0 == network_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(network: &str, task: &str, last: u8, vip: Option<u8>) -> Endpoint {
        Endpoint {
            network_id: network.into(),
            endpoint_id: task.into(),
            node_id: "n1".into(),
            ip: Ipv4Addr::new(10, 0, 0, last),
            mac: [2, 0, 0, 0, 0, last],
            vtep: Ipv4Addr::new(192, 168, 0, 1),
            service: "web".into(),
            vip: vip.map(|v| Ipv4Addr::new(10, 0, 1, v)),
            aliases: Vec::new(),
            service_aliases: Vec::new(),
            draining: false,
        }
    }

    fn key(network: &str, task: &str) -> EndpointKey {
        (network.into(), task.into())
    }

    fn backends(visible: &Visible, vip: u8) -> Vec<Ipv4Addr> {
        visible
            .with_vip(Ipv4Addr::new(10, 0, 1, vip))
            .map(|e| e.ip)
            .collect()
    }

    #[test]
    fn only_what_differs_is_a_change_and_the_vip_index_follows() {
        let mut visible = Visible::default();
        let a = endpoint("net", "a", 2, Some(1));
        let b = endpoint("net", "b", 3, Some(1));
        let changes = visible.update([
            (key("net", "a"), Some(a.clone())),
            (key("net", "b"), Some(b)),
        ]);
        assert_eq!(changes.len(), 2);
        assert_eq!(backends(&visible, 1).len(), 2);

        // The same again, and a key that was never there: nothing.
        let changes = visible.update([(key("net", "a"), Some(a.clone())), (key("net", "x"), None)]);
        assert!(changes.is_empty(), "{changes:?}");

        // a moves to another VIP: both VIPs are touched, each index follows.
        let moved = endpoint("net", "a", 2, Some(2));
        let changes = visible.update([(key("net", "a"), Some(moved))]);
        assert_eq!(changes.len(), 1);
        let touched: Vec<Ipv4Addr> = changes[0].vips().collect();
        assert_eq!(
            touched,
            [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2)]
        );
        assert_eq!(backends(&visible, 1), [Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(backends(&visible, 2), [Ipv4Addr::new(10, 0, 0, 2)]);

        // Draining is a change of the same VIP, named once.
        let mut drained = endpoint("net", "b", 3, Some(1));
        drained.draining = true;
        let changes = visible.update([(key("net", "b"), Some(drained))]);
        assert_eq!(changes[0].vips().count(), 1);

        // Gone: the VIP's index entry goes with its last endpoint.
        let changes = visible.update([(key("net", "b"), None)]);
        assert_eq!(changes[0].new, None);
        assert!(backends(&visible, 1).is_empty());
        assert!(!visible.by_vip.contains_key(&Ipv4Addr::new(10, 0, 1, 1)));
    }

    #[test]
    fn replace_removes_what_is_not_listed_and_keys_on_ranges_one_network() {
        let mut visible = Visible::default();
        visible.update([
            (key("n1", "a"), Some(endpoint("n1", "a", 2, Some(1)))),
            (key("n2", "b"), Some(endpoint("n2", "b", 3, None))),
            (key("n2", "c"), Some(endpoint("n2", "c", 4, None))),
        ]);
        assert_eq!(visible.keys_on("n2"), [key("n2", "b"), key("n2", "c")]);
        assert!(visible.keys_on("n").is_empty());

        let changes = visible.replace(
            [
                (key("n2", "c"), endpoint("n2", "c", 4, None)),
                (key("n3", "d"), endpoint("n3", "d", 5, None)),
            ]
            .into(),
        );
        let changed: BTreeSet<EndpointKey> = changes.iter().map(|c| c.key.clone()).collect();
        assert_eq!(
            changed,
            [key("n1", "a"), key("n2", "b"), key("n3", "d")]
                .into_iter()
                .collect()
        );
        assert_eq!(visible.all().count(), 2);
        assert!(backends(&visible, 1).is_empty());
    }
}
