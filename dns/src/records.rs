//! The names a task can resolve: an index built from the cluster's endpoints, the lookups on it
//! (scope order, network suffix, owned names), and the view the agent swaps when it changes.
//!
//! Everything here is pure: no sockets, no clocks. The index is rebuilt from scratch by the agent
//! on every change and swapped in whole, so lookups never see a half-applied update.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

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
#[derive(Debug)]
struct Entry {
    /// Distinct addresses in endpoint order.
    ips: Vec<Ipv4Addr>,
    /// dnsrr names and `tasks.` names are shuffled per query so clients spread their load.
    shuffle: bool,
}

/// One network's names, keyed in lowercase.
#[derive(Debug)]
struct NetIndex {
    /// Lowercased network name, compared against a query's suffix.
    name_lower: String,
    /// `<service>`, `tasks.<service>` and task aliases, lowercased, without trailing dot.
    names: HashMap<String, Entry>,
    /// Task IPs and VIPs -> the fully-qualified name a PTR query answers.
    ptr: HashMap<Ipv4Addr, Name>,
}

/// An immutable snapshot of everything the embedded server can answer, per network.
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

/// Per-service accumulator while building one network's index (a service's name or one of
/// its aliases).
#[derive(Default)]
struct ServiceAcc {
    /// The service name as the user spelled it, for its VIP's PTR name; empty when only
    /// aliases have this name.
    name: String,
    vip: Option<Ipv4Addr>,
    ips: Vec<Ipv4Addr>,
    seen: HashSet<Ipv4Addr>,
}

impl Records {
    /// Indexes endpoints by network. Endpoints on networks not listed are ignored (nothing could
    /// name them); duplicate IPs are answered once. When a name is both a service and a task
    /// alias on the same network, the service wins.
    pub fn new(networks: Vec<NetworkInfo>, endpoints: Vec<EndpointRecord>) -> Records {
        let mut index: HashMap<String, NetIndex> = HashMap::with_capacity(networks.len());
        let mut net_names: HashMap<String, String> = HashMap::with_capacity(networks.len());
        for net in networks {
            index.insert(
                net.id.clone(),
                NetIndex {
                    name_lower: net.name.to_ascii_lowercase(),
                    names: HashMap::new(),
                    ptr: HashMap::new(),
                },
            );
            net_names.insert(net.id, net.name);
        }

        // (network id, lowercased service) -> accumulated service.
        let mut services: HashMap<(String, String), ServiceAcc> = HashMap::new();
        // (network id, lowercased alias) -> (addresses, seen).
        let mut aliases: HashMap<(String, String), (Vec<Ipv4Addr>, HashSet<Ipv4Addr>)> =
            HashMap::new();

        for ep in endpoints {
            let (Some(net), Some(net_name)) =
                (index.get_mut(&ep.network_id), net_names.get(&ep.network_id))
            else {
                continue;
            };
            if !ep.service.is_empty() {
                let names = std::iter::once((&ep.service, true))
                    .chain(ep.service_aliases.iter().map(|alias| (alias, false)));
                for (name, own) in names.filter(|(name, _)| !name.is_empty()) {
                    let acc = services
                        .entry((ep.network_id.clone(), name.to_ascii_lowercase()))
                        .or_default();
                    if own && acc.name.is_empty() {
                        acc.name.clone_from(name);
                    }
                    // Mid-update, some endpoints of a vip service may not carry it yet; one is
                    // enough.
                    if acc.vip.is_none() {
                        acc.vip = ep.vip;
                    }
                    if acc.seen.insert(ep.ip) {
                        acc.ips.push(ep.ip);
                    }
                }
            }
            for alias in ep.aliases.iter().filter(|a| !a.is_empty()) {
                let (ips, seen) = aliases
                    .entry((ep.network_id.clone(), alias.to_ascii_lowercase()))
                    .or_default();
                if seen.insert(ep.ip) {
                    ips.push(ep.ip);
                }
            }
            let label = ep
                .aliases
                .first()
                .filter(|a| !a.is_empty())
                .unwrap_or(&ep.task_id);
            if let Some(name) = ptr_name(label, net_name) {
                net.ptr.entry(ep.ip).or_insert(name);
            }
        }

        for ((net_id, service), acc) in services {
            let Some(net) = index.get_mut(&net_id) else {
                continue;
            };
            let answer = match acc.vip {
                Some(vip) => {
                    if let Some(name) = net_names
                        .get(&net_id)
                        .filter(|_| !acc.name.is_empty())
                        .and_then(|n| ptr_name(&acc.name, n))
                    {
                        net.ptr.entry(vip).or_insert(name);
                    }
                    Entry {
                        ips: vec![vip],
                        shuffle: false,
                    }
                }
                None => Entry {
                    ips: acc.ips.clone(),
                    shuffle: true,
                },
            };
            net.names.insert(
                format!("tasks.{service}"),
                Entry {
                    ips: acc.ips,
                    shuffle: true,
                },
            );
            net.names.insert(service, answer);
        }
        for ((net_id, alias), (ips, _)) in aliases {
            if let Some(net) = index.get_mut(&net_id) {
                let shuffle = ips.len() > 1;
                net.names.entry(alias).or_insert(Entry { ips, shuffle });
            }
        }

        Records { networks: index }
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

/// The current [`Records`], swapped whole by the agent and read on every query.
///
/// Readers take the lock only long enough to clone an `Arc`, so a swap never waits on a slow
/// query and a query never sees a half-built index.
#[derive(Debug)]
pub struct RecordsView {
    current: RwLock<Arc<Records>>,
}

impl RecordsView {
    /// A view starting at `initial`.
    pub fn new(initial: Records) -> Arc<RecordsView> {
        Arc::new(RecordsView {
            current: RwLock::new(Arc::new(initial)),
        })
    }

    /// Makes `records` what every following query sees.
    pub fn replace(&self, records: Records) {
        let records = Arc::new(records);
        // A writer cannot panic while holding this lock (it only assigns), so poisoning would
        // only come from a reader's panic, which leaves the value intact.
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = records;
    }

    /// The records as of now.
    pub fn current(&self) -> Arc<Records> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
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

    #[test]
    fn view_replace_is_seen_by_the_next_reader_and_old_snapshots_stay_valid() {
        let view = RecordsView::new(Records::empty());
        let before = view.current();
        view.replace(sample());
        assert_eq!(before.resolve(&scope(&["n1"]), "web"), Resolution::NxDomain);
        assert_eq!(
            ips_of(view.current().resolve(&scope(&["n1"]), "web")).0,
            addrs(&["10.0.1.2"])
        );
    }
}
