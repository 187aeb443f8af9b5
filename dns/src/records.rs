//! The names a task can resolve: an index built from the cluster's endpoints, the lookups on it
//! (scope order, network suffix, owned names), and the view the agent swaps when it changes.
//!
//! Everything here is pure: no sockets, no clocks. The index is built whole by the agent at
//! start, then changed one endpoint at a time (only the names and PTRs that endpoint touches are
//! recomputed), each change applied under the view's lock so lookups never see half of it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

/// The records' hash maps and sets: foldhash (seeded at random per process) instead of the
/// standard SipHash, which took a sixth of a full build's time; a full build at 20,000
/// endpoints went from 480-530 ms to 350-380 ms (bench/README.md, `lb-map-update: DNS
/// records`). The keys are names and addresses from the swarm's own state.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;
use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hickory_proto::rr::Name;

/// A network a task may be attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Cluster-wide network ID; task scopes name networks by it.
    pub id: String,
    /// The user-visible name, usable as a suffix (`web.<name>`) and used in PTR answers.
    pub name: String,
}

/// One task's attachment to one network, as the agent knows it from the endpoint table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The network this attachment is on.
    pub network_id: String,
    /// The task; used in its PTR name when it has no alias.
    pub task_id: String,
    /// The task's address on that network.
    pub ip: Ipv4Addr,
    /// The service the task belongs to.
    pub service: String,
    /// The service's VIP on this network; `None` means dnsrr (the name answers task IPs).
    pub vip: Option<Ipv4Addr>,
    /// Task names (`web.1.<task-id>`, `web.1`); the first is the full one, used for PTR.
    pub aliases: Vec<String>,
    /// The service's aliases on this network: answered as the service name is (its VIP, or the
    /// task IPs in dnsrr mode), with `tasks.<alias>` too, as libnetwork does. Never a PTR name.
    pub service_aliases: Vec<String>,
}

/// What one name answers on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Distinct addresses in endpoint order.
    ips: Vec<Ipv4Addr>,
    /// dnsrr names and `tasks.` names are shuffled per query so clients spread their load.
    shuffle: bool,
}

/// One network's names, keyed in lowercase, and what each is made of, so that one endpoint
/// coming, changing or going recomputes only the names and PTRs it touches.
#[derive(Debug)]
struct NetIndex {
    /// The network name as the user spelled it, for PTR answers.
    name: String,
    /// Lowercased network name, compared against a query's suffix.
    name_lower: String,
    /// `<service>`, `tasks.<service>` and task aliases, lowercased, without trailing dot.
    names: HashMap<String, Entry>,
    /// Task IPs and VIPs -> the fully-qualified name a PTR query answers.
    ptr: HashMap<Ipv4Addr, Name>,
    /// Every endpoint on this network by task ID. Task-ID order is the "endpoint order" of
    /// every answer (the agent hands endpoints sorted by network and task ID).
    endpoints: BTreeMap<String, EndpointRecord>,
    /// Lowercased name -> the endpoints that give it addresses.
    sources: HashMap<String, NameSources>,
    /// Address -> the names a PTR query for it could answer.
    ptr_sources: HashMap<Ipv4Addr, PtrSources>,
}

/// The endpoints behind one lowercased name on one network.
#[derive(Debug, Default)]
struct NameSources {
    /// Endpoints of the service with this name (its own or one of its aliases), by task ID.
    service: BTreeMap<String, Member>,
    /// Endpoints with this task alias, by task ID.
    alias: BTreeMap<String, Ipv4Addr>,
    /// The VIP whose PTR this name's service names, as put in `ptr_sources`.
    vip_ptr: Option<Ipv4Addr>,
}

/// One endpoint of a service name.
#[derive(Debug)]
struct Member {
    ip: Ipv4Addr,
    vip: Option<Ipv4Addr>,
    /// The service name as the endpoint spells it, when this is its service's own name (not
    /// an alias): a VIP's PTR names it.
    own: Option<String>,
}

/// What a PTR query for one address could answer.
#[derive(Debug, Default)]
struct PtrSources {
    /// The names of the endpoints with this address, by task ID; the first wins.
    tasks: BTreeMap<String, Name>,
    /// The names of the services with this VIP, by lowercased name; used when no endpoint
    /// has the address, the first wins.
    vips: BTreeMap<String, Name>,
}

/// The names and addresses an update touched, recomputed once at its end.
#[derive(Default)]
struct Touched {
    names: FastSet<String>,
    ptrs: FastSet<Ipv4Addr>,
}

/// Everything the embedded server can answer, per network.
///
/// Built whole ([`Records::new`], at start) or changed one endpoint at a time
/// ([`Records::upsert_endpoint`], [`Records::remove_endpoint`]): a change recomputes only the
/// names and PTRs of that endpoint (its service's, its aliases', its address's), whatever
/// else the records hold. Either way the answers are the same function of the networks and
/// endpoints.
#[derive(Debug, Default)]
pub struct Records {
    /// Network ID -> that network's names.
    networks: HashMap<String, NetIndex>,
}

/// The outcome of a name lookup in a task's scope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolution<'a> {
    /// The name is ours and has addresses.
    Found {
        /// The addresses, in index order.
        ips: &'a [Ipv4Addr],
        /// Whether the answer order should be shuffled per query.
        shuffle: bool,
    },
    /// The name is in shoal's namespace but nothing has it: NXDOMAIN, never forwarded.
    NxDomain,
    /// Not ours: the upstream resolvers decide.
    Forward,
}

impl NetIndex {
    fn new(name: String) -> NetIndex {
        NetIndex {
            name_lower: name.to_ascii_lowercase(),
            name,
            names: HashMap::default(),
            ptr: HashMap::default(),
            endpoints: BTreeMap::new(),
            sources: HashMap::default(),
            ptr_sources: HashMap::default(),
        }
    }

    /// Adds or replaces the endpoint of `ep.task_id`; the names it touches are recomputed by
    /// [`NetIndex::refresh`].
    fn upsert(&mut self, ep: EndpointRecord, touched: &mut Touched) {
        if let Some(old) = self.endpoints.get(&ep.task_id) {
            if *old == ep {
                return;
            }
            let old = old.clone();
            self.unlink(&old, touched);
        }
        self.link(&ep, touched);
        self.endpoints.insert(ep.task_id.clone(), ep);
    }

    fn remove(&mut self, task_id: &str, touched: &mut Touched) {
        if let Some(old) = self.endpoints.remove(task_id) {
            self.unlink(&old, touched);
        }
    }

    /// The lowercased service names (its own, then its aliases) of `ep`, with whether each is
    /// the own one, and its lowercased task aliases.
    fn names_of(ep: &EndpointRecord) -> (Vec<(String, Option<&str>)>, Vec<String>) {
        let service = if ep.service.is_empty() {
            Vec::new()
        } else {
            std::iter::once((&ep.service, true))
                .chain(ep.service_aliases.iter().map(|alias| (alias, false)))
                .filter(|(name, _)| !name.is_empty())
                .map(|(name, own)| (name.to_ascii_lowercase(), own.then_some(name.as_str())))
                .collect()
        };
        let aliases = ep
            .aliases
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.to_ascii_lowercase())
            .collect();
        (service, aliases)
    }

    fn link(&mut self, ep: &EndpointRecord, touched: &mut Touched) {
        let (service, aliases) = Self::names_of(ep);
        for (key, own) in service {
            let member = self
                .sources
                .entry(key.clone())
                .or_default()
                .service
                .entry(ep.task_id.clone())
                .or_insert(Member {
                    ip: ep.ip,
                    vip: ep.vip,
                    own: None,
                });
            if member.own.is_none() {
                member.own = own.map(str::to_string);
            }
            touched.names.insert(key);
        }
        for key in aliases {
            self.sources
                .entry(key.clone())
                .or_default()
                .alias
                .insert(ep.task_id.clone(), ep.ip);
            touched.names.insert(key);
        }
        let label = ep
            .aliases
            .first()
            .filter(|a| !a.is_empty())
            .unwrap_or(&ep.task_id);
        if let Some(name) = ptr_name(label, &self.name) {
            self.ptr_sources
                .entry(ep.ip)
                .or_default()
                .tasks
                .insert(ep.task_id.clone(), name);
            touched.ptrs.insert(ep.ip);
        }
    }

    fn unlink(&mut self, ep: &EndpointRecord, touched: &mut Touched) {
        let (service, aliases) = Self::names_of(ep);
        for (key, _) in service {
            if let Some(sources) = self.sources.get_mut(&key) {
                sources.service.remove(&ep.task_id);
            }
            touched.names.insert(key);
        }
        for key in aliases {
            if let Some(sources) = self.sources.get_mut(&key) {
                sources.alias.remove(&ep.task_id);
            }
            touched.names.insert(key);
        }
        if let Some(sources) = self.ptr_sources.get_mut(&ep.ip) {
            sources.tasks.remove(&ep.task_id);
        }
        touched.ptrs.insert(ep.ip);
    }

    /// Recomputes the names and PTRs `touched` lists from their sources.
    fn refresh(&mut self, touched: Touched) {
        let Touched {
            names,
            ptrs: mut touched_ptrs,
        } = touched;
        // The VIP PTRs of the touched service names first: they feed the PTRs below.
        for key in &names {
            let Some(sources) = self.sources.get_mut(key) else {
                continue;
            };
            let vip = sources.service.values().find_map(|m| m.vip);
            let own = sources.service.values().find_map(|m| m.own.as_deref());
            let wanted = vip.zip(own.and_then(|own| ptr_name(own, &self.name)));
            let old = sources.vip_ptr.take();
            sources.vip_ptr = wanted.as_ref().map(|(vip, _)| *vip);
            if let Some(old) = old
                && let Some(ptr) = self.ptr_sources.get_mut(&old)
            {
                ptr.vips.remove(key);
                touched_ptrs.insert(old);
            }
            if let Some((vip, name)) = wanted {
                self.ptr_sources
                    .entry(vip)
                    .or_default()
                    .vips
                    .insert(key.clone(), name);
                touched_ptrs.insert(vip);
            }
        }
        for key in &names {
            self.refresh_name(key);
            self.refresh_name(&format!("tasks.{key}"));
        }
        for key in names {
            if self
                .sources
                .get(&key)
                .is_some_and(|s| s.service.is_empty() && s.alias.is_empty() && s.vip_ptr.is_none())
            {
                self.sources.remove(&key);
            }
        }
        for ip in touched_ptrs {
            let name = self.ptr_sources.get(&ip).and_then(|s| {
                s.tasks
                    .values()
                    .next()
                    .or_else(|| s.vips.values().next())
                    .cloned()
            });
            match name {
                Some(name) => {
                    self.ptr.insert(ip, name);
                }
                None => {
                    self.ptr.remove(&ip);
                    self.ptr_sources.remove(&ip);
                }
            }
        }
    }

    /// What `key` answers: a service's name (its VIP, or its task IPs in dnsrr mode), else
    /// `tasks.<service>` (the task IPs), else a task alias. When a name is both a service and
    /// a task alias, the service wins.
    fn refresh_name(&mut self, key: &str) {
        let service = |key: &str| {
            self.sources
                .get(key)
                .filter(|s| !s.service.is_empty())
                .map(|s| {
                    let ips = distinct(s.service.values().map(|m| m.ip));
                    (s.service.values().find_map(|m| m.vip), ips)
                })
        };
        let entry = if let Some((vip, ips)) = service(key) {
            Some(match vip {
                Some(vip) => Entry {
                    ips: vec![vip],
                    shuffle: false,
                },
                None => Entry { ips, shuffle: true },
            })
        } else if let Some((_, ips)) = key.strip_prefix("tasks.").and_then(service) {
            Some(Entry { ips, shuffle: true })
        } else {
            self.sources
                .get(key)
                .filter(|s| !s.alias.is_empty())
                .map(|s| {
                    let ips = distinct(s.alias.values().copied());
                    let shuffle = ips.len() > 1;
                    Entry { ips, shuffle }
                })
        };
        match entry {
            Some(entry) => {
                if self.names.get(key) != Some(&entry) {
                    self.names.insert(key.to_string(), entry);
                }
            }
            None => {
                self.names.remove(key);
            }
        }
    }
}

/// `ips` without repeats, in order.
fn distinct(ips: impl Iterator<Item = Ipv4Addr>) -> Vec<Ipv4Addr> {
    let mut seen = HashSet::new();
    ips.filter(|ip| seen.insert(*ip)).collect()
}

impl Records {
    /// Indexes endpoints by network. Endpoints on networks not listed are ignored (nothing could
    /// name them); duplicate IPs are answered once; an endpoint listed twice (same network and
    /// task) counts once, the later one. When a name is both a service and a task alias on the
    /// same network, the service wins. Answers list addresses in task-ID order.
    pub fn new(networks: Vec<NetworkInfo>, endpoints: Vec<EndpointRecord>) -> Records {
        let mut records = Records::default();
        for net in networks {
            records.networks.insert(net.id, NetIndex::new(net.name));
        }
        let mut touched: HashMap<String, Touched> = HashMap::default();
        for ep in endpoints {
            if let Some(net) = records.networks.get_mut(&ep.network_id) {
                let touched = touched.entry(ep.network_id.clone()).or_default();
                net.upsert(ep, touched);
            }
        }
        for (id, touched) in touched {
            if let Some(net) = records.networks.get_mut(&id) {
                net.refresh(touched);
            }
        }
        records
    }

    /// Adds a network (with no endpoints), or renames one (its names are rebuilt). Costs
    /// nothing when the network is there already under that name.
    pub fn set_network(&mut self, network: NetworkInfo) {
        let endpoints = match self.networks.get(&network.id) {
            Some(net) if net.name == network.name => return,
            Some(_) => self
                .networks
                .remove(&network.id)
                .map(|net| net.endpoints)
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let mut net = NetIndex::new(network.name);
        let mut touched = Touched::default();
        for ep in endpoints.into_values() {
            net.upsert(ep, &mut touched);
        }
        net.refresh(touched);
        self.networks.insert(network.id, net);
    }

    /// Removes a network and every endpoint on it.
    pub fn remove_network(&mut self, network_id: &str) {
        self.networks.remove(network_id);
    }

    /// Adds `endpoint`, or replaces the one of its task on its network; ignored when that
    /// network is not in the records. Recomputes only the names and PTRs it had or has.
    pub fn upsert_endpoint(&mut self, endpoint: EndpointRecord) {
        if let Some(net) = self.networks.get_mut(&endpoint.network_id) {
            let mut touched = Touched::default();
            net.upsert(endpoint, &mut touched);
            net.refresh(touched);
        }
    }

    /// Removes the endpoint of `task_id` on `network_id`, if there is one. Recomputes only the
    /// names and PTRs it had.
    pub fn remove_endpoint(&mut self, network_id: &str, task_id: &str) {
        if let Some(net) = self.networks.get_mut(network_id) {
            let mut touched = Touched::default();
            net.remove(task_id, &mut touched);
            net.refresh(touched);
        }
    }

    /// How many endpoints the records hold, over all networks.
    pub fn endpoint_count(&self) -> usize {
        self.networks.values().map(|n| n.endpoints.len()).sum()
    }

    /// No networks, no names: every owned name is NXDOMAIN, the rest is forwarded.
    pub fn empty() -> Records {
        Records::default()
    }

    /// Resolves `qname` (presentation form, any case, trailing dot optional) for a task attached
    /// to the networks in `scope`, in attachment order.
    ///
    /// The full name is tried on each scope network first, then each split
    /// `<name>.<network>` from the longest name down, on that network only, as Docker does.
    pub(crate) fn resolve(&self, scope: &[String], qname: &str) -> Resolution<'_> {
        let name = qname.strip_suffix('.').unwrap_or(qname);
        // The root, and names with escaped bytes (a dot or a non-printable byte inside a
        // label), cannot be any record's name: the upstreams decide.
        if name.is_empty() || name.contains('\\') {
            return Resolution::Forward;
        }
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        let name = name.as_ref();
        let nets = || scope.iter().filter_map(|id| self.networks.get(id));

        for net in nets() {
            if let Some(entry) = net.names.get(name) {
                return found(entry);
            }
        }
        for (dot, _) in name.rmatch_indices('.') {
            let (prefix, suffix) = (&name[..dot], &name[dot + 1..]);
            for net in nets().filter(|net| net.name_lower == suffix) {
                if let Some(entry) = net.names.get(prefix) {
                    return found(entry);
                }
            }
        }

        let owned = !name.contains('.')
            || name
                .strip_prefix("tasks.")
                .is_some_and(|service| !service.contains('.'))
            || nets().any(|net| {
                name.strip_suffix(net.name_lower.as_str())
                    .and_then(|rest| rest.strip_suffix('.'))
                    .is_some_and(|rest| !rest.is_empty())
            });
        if owned {
            Resolution::NxDomain
        } else {
            Resolution::Forward
        }
    }

    /// The PTR target for a `d.c.b.a.in-addr.arpa` name, if the address is a task IP or VIP on
    /// one of the scope networks (first in scope order wins). `None` means not ours: forward.
    pub(crate) fn resolve_ptr(&self, scope: &[String], qname: &str) -> Option<&Name> {
        let ip = parse_reverse_v4(qname)?;
        scope
            .iter()
            .filter_map(|id| self.networks.get(id))
            .find_map(|net| net.ptr.get(&ip))
    }
}

fn found(entry: &Entry) -> Resolution<'_> {
    Resolution::Found {
        ips: &entry.ips,
        shuffle: entry.shuffle,
    }
}

/// `<label>.<network>.`, or `None` if that is not a valid DNS name (a label over 63 bytes...).
fn ptr_name(label: &str, network: &str) -> Option<Name> {
    Name::from_ascii(format!("{label}.{network}.")).ok()
}

/// `4.3.2.10.in-addr.arpa[.]` -> 10.2.3.4; anything else (fewer octets, non-digits) -> `None`.
fn parse_reverse_v4(qname: &str) -> Option<Ipv4Addr> {
    let name = qname.strip_suffix('.').unwrap_or(qname);
    let split = name.len().checked_sub(".in-addr.arpa".len())?;
    if !name.is_char_boundary(split) || !name[split..].eq_ignore_ascii_case(".in-addr.arpa") {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = name[..split].split('.');
    for slot in octets.iter_mut().rev() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// The current [`Records`]: replaced whole by the agent at start, changed in place one
/// endpoint at a time afterwards, and read on every query.
///
/// A change is applied under the write lock, so a query never sees half of it; queries hold
/// the read lock only while they look names up and encode the answer (never across a forward
/// to an upstream), and a change holds the write lock only for its own names, so neither
/// waits on the other for long.
#[derive(Debug)]
pub struct RecordsView {
    current: RwLock<Records>,
}

impl RecordsView {
    /// A view starting at `initial`.
    pub fn new(initial: Records) -> Arc<RecordsView> {
        Arc::new(RecordsView {
            current: RwLock::new(initial),
        })
    }

    /// Makes `records` what every following query sees (a full reconcile: built beforehand,
    /// swapped in under the lock).
    pub fn replace(&self, records: Records) {
        let old = std::mem::replace(&mut *self.write(), records);
        // Freed after the lock is released.
        drop(old);
    }

    /// Applies `change` to the records in place, at once for every following query.
    pub fn update<T>(&self, change: impl FnOnce(&mut Records) -> T) -> T {
        change(&mut self.write())
    }

    /// The records as of now; hold it only while answering.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Records> {
        // A panic mid-change leaves at most that change half applied (each map stays valid);
        // answering from that beats answering nothing, so poisoning is ignored.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Records> {
        self.current.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ep(net: &str, task: &str, addr: &str, service: &str, vip: Option<&str>) -> EndpointRecord {
        let slot = task.trim_start_matches('t');
        EndpointRecord {
            network_id: net.to_string(),
            task_id: task.to_string(),
            ip: ip(addr),
            service: service.to_string(),
            vip: vip.map(ip),
            aliases: vec![
                format!("{service}.{slot}.{task}"),
                format!("{service}.{slot}"),
            ],
            service_aliases: Vec::new(),
        }
    }

    /// Two networks: `front` (n1) with vip service `web` and dnsrr `db`; `back` (n2) with
    /// `web` too (other VIP) and `api` (dnsrr); n3 `other` with `secret`.
    fn sample() -> Records {
        Records::new(
            vec![
                NetworkInfo {
                    id: "n1".into(),
                    name: "front".into(),
                },
                NetworkInfo {
                    id: "n2".into(),
                    name: "Back".into(),
                },
                NetworkInfo {
                    id: "n3".into(),
                    name: "other".into(),
                },
            ],
            vec![
                ep("n1", "t1", "10.0.1.3", "web", Some("10.0.1.2")),
                ep("n1", "t2", "10.0.1.4", "web", Some("10.0.1.2")),
                ep("n1", "t3", "10.0.1.5", "db", None),
                ep("n1", "t4", "10.0.1.6", "db", None),
                ep("n2", "t1", "10.0.2.3", "web", Some("10.0.2.2")),
                ep("n2", "t5", "10.0.2.5", "api", None),
                ep("n3", "t9", "10.0.3.9", "secret", None),
                // Unknown network: ignored.
                ep("n4", "t7", "10.0.4.7", "ghost", None),
            ],
        )
    }

    fn scope(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn addrs(ips: &[&str]) -> Vec<Ipv4Addr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    fn ips_of(res: Resolution<'_>) -> (Vec<Ipv4Addr>, bool) {
        match res {
            Resolution::Found { ips, shuffle } => (ips.to_vec(), shuffle),
            other => panic!("expected addresses, got {other:?}"),
        }
    }

    #[test]
    fn vip_service_answers_its_vip_and_tasks_answers_task_ips() {
        let r = sample();
        let s = scope(&["n1"]);
        assert_eq!(ips_of(r.resolve(&s, "web")), (addrs(&["10.0.1.2"]), false));
        let (ips, shuffle) = ips_of(r.resolve(&s, "tasks.web"));
        assert_eq!(ips, addrs(&["10.0.1.3", "10.0.1.4"]));
        assert!(shuffle, "tasks. answers are shuffled");
    }

    #[test]
    fn dnsrr_service_answers_task_ips_shuffled() {
        let r = sample();
        let (ips, shuffle) = ips_of(r.resolve(&scope(&["n1"]), "db"));
        assert_eq!(ips, addrs(&["10.0.1.5", "10.0.1.6"]));
        assert!(shuffle);
    }

    #[test]
    fn aliases_answer_the_task_ip() {
        let r = sample();
        let s = scope(&["n1"]);
        assert_eq!(ips_of(r.resolve(&s, "web.1.t1")).0, addrs(&["10.0.1.3"]));
        assert_eq!(ips_of(r.resolve(&s, "web.2")).0, addrs(&["10.0.1.4"]));
    }

    #[test]
    fn first_network_in_scope_order_answers() {
        let r = sample();
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1", "n2"]), "web")).0,
            addrs(&["10.0.1.2"])
        );
        assert_eq!(
            ips_of(r.resolve(&scope(&["n2", "n1"]), "web")).0,
            addrs(&["10.0.2.2"])
        );
        // A name only the second network has is still found.
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1", "n2"]), "api")).0,
            addrs(&["10.0.2.5"])
        );
    }

    #[test]
    fn network_suffix_restricts_to_that_network() {
        let r = sample();
        let s = scope(&["n1", "n2"]);
        assert_eq!(ips_of(r.resolve(&s, "web.back")).0, addrs(&["10.0.2.2"]));
        assert_eq!(
            ips_of(r.resolve(&s, "tasks.web.back")).0,
            addrs(&["10.0.2.3"])
        );
        assert_eq!(ips_of(r.resolve(&s, "web.1.back")).0, addrs(&["10.0.2.3"]));
        assert_eq!(
            ips_of(r.resolve(&s, "web.1.t1.front")).0,
            addrs(&["10.0.1.3"])
        );
        // db lives on front only: with the back suffix it is ours but absent.
        assert_eq!(r.resolve(&s, "db.back"), Resolution::NxDomain);
    }

    #[test]
    fn names_are_case_insensitive_and_ignore_the_trailing_dot() {
        let r = sample();
        let s = scope(&["n1", "n2"]);
        assert_eq!(ips_of(r.resolve(&s, "WEB.")).0, addrs(&["10.0.1.2"]));
        assert_eq!(ips_of(r.resolve(&s, "Web.BACK.")).0, addrs(&["10.0.2.2"]));
        assert_eq!(
            ips_of(r.resolve(&s, "Tasks.DB")).0,
            addrs(&["10.0.1.5", "10.0.1.6"])
        );
    }

    #[test]
    fn owned_names_are_nxdomain_others_are_forwarded() {
        let r = sample();
        let s = scope(&["n1", "n2"]);
        assert_eq!(r.resolve(&s, "nosuch"), Resolution::NxDomain);
        assert_eq!(r.resolve(&s, "tasks.nosuch"), Resolution::NxDomain);
        assert_eq!(r.resolve(&s, "nosuch.front"), Resolution::NxDomain);
        assert_eq!(r.resolve(&s, "a.b.back."), Resolution::NxDomain);
        // A service on a network the task is not on is single-label: NXDOMAIN, not leaked.
        assert_eq!(r.resolve(&s, "secret"), Resolution::NxDomain);
        // ... and the other network's suffix is not ours for this task: forwarded.
        assert_eq!(r.resolve(&s, "secret.other"), Resolution::Forward);
        assert_eq!(r.resolve(&s, "example.com"), Resolution::Forward);
        assert_eq!(r.resolve(&s, "tasks.a.b"), Resolution::Forward);
        assert_eq!(r.resolve(&s, "web.7"), Resolution::Forward);
        assert_eq!(r.resolve(&s, "."), Resolution::Forward);
        assert_eq!(r.resolve(&s, "a\\.b"), Resolution::Forward);
    }

    #[test]
    fn empty_scope_and_empty_records_own_only_single_labels() {
        assert_eq!(sample().resolve(&[], "web"), Resolution::NxDomain);
        assert_eq!(
            Records::empty().resolve(&scope(&["n1"]), "web"),
            Resolution::NxDomain
        );
        assert_eq!(
            Records::empty().resolve(&scope(&["n1"]), "web.front"),
            Resolution::Forward
        );
    }

    #[test]
    fn unknown_scope_network_ids_are_skipped() {
        let r = sample();
        assert_eq!(
            ips_of(r.resolve(&scope(&["nope", "n2"]), "web")).0,
            addrs(&["10.0.2.2"])
        );
    }

    #[test]
    fn service_aliases_answer_like_the_service_on_their_network_only() {
        let aliased = |net: &str, task: &str, addr: &str, service: &str, vip: Option<&str>| {
            let mut e = ep(net, task, addr, service, vip);
            e.service_aliases = vec!["api".into()];
            e
        };
        let r = Records::new(
            vec![
                NetworkInfo {
                    id: "n1".into(),
                    name: "front".into(),
                },
                NetworkInfo {
                    id: "n2".into(),
                    name: "back".into(),
                },
            ],
            vec![
                aliased("n1", "t1", "10.0.1.3", "web_api", Some("10.0.1.2")),
                aliased("n1", "t2", "10.0.1.4", "web_api", Some("10.0.1.2")),
                // On n2 the service has no alias.
                ep("n2", "t1", "10.0.2.3", "web_api", Some("10.0.2.2")),
                ep("n1", "t5", "10.0.1.5", "web_db", None),
            ],
        );
        let n1 = scope(&["n1"]);
        // vip mode: the alias answers the VIP, tasks.<alias> the task IPs.
        assert_eq!(ips_of(r.resolve(&n1, "API")).0, addrs(&["10.0.1.2"]));
        assert_eq!(
            ips_of(r.resolve(&n1, "tasks.api")).0,
            addrs(&["10.0.1.3", "10.0.1.4"])
        );
        assert_eq!(ips_of(r.resolve(&n1, "api.front")).0, addrs(&["10.0.1.2"]));
        // Not on a network where the service has no alias.
        let n2 = scope(&["n2"]);
        assert_eq!(r.resolve(&n2, "api"), Resolution::NxDomain);
        assert_eq!(r.resolve(&n2, "tasks.api"), Resolution::NxDomain);
        assert_eq!(ips_of(r.resolve(&n2, "web_api")).0, addrs(&["10.0.2.2"]));
        // The VIP's PTR is the service's name, never the alias's.
        assert_eq!(
            r.resolve_ptr(&n1, "2.1.0.10.in-addr.arpa")
                .map(|n| n.to_ascii()),
            Some("web_api.front.".into())
        );
    }

    #[test]
    fn dnsrr_service_alias_answers_task_ips() {
        let mut e = ep("n1", "t3", "10.0.1.6", "db", None);
        e.service_aliases = vec!["store".into()];
        let r = Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            vec![e, ep("n1", "t4", "10.0.1.7", "db", None)],
        );
        let (ips, shuffle) = ips_of(r.resolve(&scope(&["n1"]), "store"));
        assert_eq!(ips, addrs(&["10.0.1.6"]));
        assert!(shuffle);
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1"]), "db")).0,
            addrs(&["10.0.1.6", "10.0.1.7"])
        );
    }

    #[test]
    fn service_name_wins_over_an_alias_of_the_same_name() {
        let mut clash = ep("n1", "t8", "10.0.1.8", "other", None);
        clash.aliases = vec!["web".into()];
        let r = Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            vec![ep("n1", "t1", "10.0.1.3", "web", Some("10.0.1.2")), clash],
        );
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1"]), "web")).0,
            addrs(&["10.0.1.2"])
        );
    }

    #[test]
    fn duplicate_endpoints_answer_each_ip_once() {
        let r = Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            vec![
                ep("n1", "t1", "10.0.1.3", "db", None),
                ep("n1", "t1", "10.0.1.3", "db", None),
            ],
        );
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1"]), "db")).0,
            addrs(&["10.0.1.3"])
        );
    }

    #[test]
    fn ptr_answers_task_alias_and_service_for_vips_in_scope_only() {
        let r = sample();
        let s = scope(&["n1", "n2"]);
        let name = |q: &str| r.resolve_ptr(&s, q).map(|n| n.to_ascii());
        assert_eq!(
            name("3.1.0.10.in-addr.arpa."),
            Some("web.1.t1.front.".into())
        );
        assert_eq!(name("2.1.0.10.IN-ADDR.ARPA"), Some("web.front.".into()));
        assert_eq!(name("2.2.0.10.in-addr.arpa"), Some("web.Back.".into()));
        // On a network outside the scope, or unknown: not ours.
        assert_eq!(name("9.3.0.10.in-addr.arpa"), None);
        assert_eq!(name("1.1.1.1.in-addr.arpa"), None);
        assert_eq!(name("1.0.10.in-addr.arpa"), None);
    }

    #[test]
    fn ptr_without_alias_uses_the_task_id() {
        let mut bare = ep("n1", "t1", "10.0.1.3", "web", None);
        bare.aliases.clear();
        let r = Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            vec![bare],
        );
        assert_eq!(
            r.resolve_ptr(&scope(&["n1"]), "3.1.0.10.in-addr.arpa")
                .map(|n| n.to_ascii()),
            Some("t1.front.".into())
        );
    }

    #[test]
    fn reverse_names_parse_strictly() {
        assert_eq!(
            parse_reverse_v4("4.3.2.1.in-addr.arpa"),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(
            parse_reverse_v4("4.3.2.1.in-addr.arpa."),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(parse_reverse_v4("256.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("+4.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("4..2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("é.in-addr.arpa"), None);
        assert_eq!(parse_reverse_v4("4.3.2.1.ip6.arpa"), None);
    }

    /// One network's ID, names and PTRs.
    type NetDump = (String, Vec<(String, Entry)>, Vec<(Ipv4Addr, String)>);

    /// The names and PTRs of every network, to compare two records.
    fn index_of(r: &Records) -> Vec<NetDump> {
        let mut nets: Vec<_> = r
            .networks
            .iter()
            .map(|(id, net)| {
                let mut names: Vec<_> = net
                    .names
                    .iter()
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                names.sort_by(|a, b| a.0.cmp(&b.0));
                let mut ptr: Vec<_> = net.ptr.iter().map(|(ip, n)| (*ip, n.to_ascii())).collect();
                ptr.sort();
                (id.clone(), names, ptr)
            })
            .collect();
        nets.sort_by(|a, b| a.0.cmp(&b.0));
        nets
    }

    #[test]
    fn changes_one_endpoint_at_a_time_answer_as_a_full_build() {
        // Few names and addresses, so services, aliases, VIPs and PTRs collide often.
        let networks = || {
            vec![
                NetworkInfo {
                    id: "n1".into(),
                    name: "front".into(),
                },
                NetworkInfo {
                    id: "n2".into(),
                    name: "Back".into(),
                },
            ]
        };
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut records = Records::new(networks(), Vec::new());
        let mut handed: BTreeMap<(String, String), EndpointRecord> = BTreeMap::new();
        for step in 0..3000 {
            let net = ["n1", "n2", "n9"][next(3) as usize];
            let task = format!("t{}", next(12));
            if next(4) == 0 {
                records.remove_endpoint(net, &task);
                handed.remove(&(net.to_string(), task));
            } else {
                let service = ["web", "db", "Web", "api", ""][next(5) as usize];
                let vip = match next(3) {
                    0 => None,
                    v => Some(format!("10.0.9.{v}")),
                };
                let mut e = ep(
                    net,
                    &task,
                    &format!("10.0.1.{}", next(8)),
                    service,
                    vip.as_deref(),
                );
                e.service_aliases = match next(4) {
                    0 => vec!["api".into()],
                    1 => vec!["web".into(), "".into()],
                    _ => Vec::new(),
                };
                if next(5) == 0 {
                    e.aliases = vec!["db".into()];
                }
                if next(7) == 0 {
                    e.aliases.clear();
                }
                if net != "n9" {
                    handed.insert((net.to_string(), task), e.clone());
                }
                records.upsert_endpoint(e);
            }
            if step % 7 == 0 {
                let full = Records::new(networks(), handed.values().cloned().collect());
                assert_eq!(index_of(&records), index_of(&full), "after step {step}");
                assert_eq!(records.endpoint_count(), handed.len());
            }
        }
        // A rename rebuilds that network's names; removing it drops its endpoints.
        records.set_network(NetworkInfo {
            id: "n1".into(),
            name: "Edge".into(),
        });
        let mut renamed = networks();
        renamed[0].name = "Edge".into();
        let full = Records::new(renamed, handed.values().cloned().collect());
        assert_eq!(index_of(&records), index_of(&full));
        records.remove_network("n1");
        handed.retain(|(net, _), _| net != "n1");
        assert_eq!(records.endpoint_count(), handed.len());
    }

    #[test]
    fn view_replace_and_update_are_seen_by_the_next_reader() {
        let view = RecordsView::new(Records::empty());
        assert_eq!(
            view.read().resolve(&scope(&["n1"]), "web"),
            Resolution::NxDomain
        );
        view.replace(sample());
        assert_eq!(
            ips_of(view.read().resolve(&scope(&["n1"]), "web")).0,
            addrs(&["10.0.1.2"])
        );
        view.update(|r| {
            r.upsert_endpoint(ep("n1", "t6", "10.0.1.7", "cache", None));
            r.remove_endpoint("n1", "t1");
        });
        let r = view.read();
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1"]), "cache")).0,
            addrs(&["10.0.1.7"])
        );
        assert_eq!(
            ips_of(r.resolve(&scope(&["n1"]), "tasks.web")).0,
            addrs(&["10.0.1.4"])
        );
    }
}
