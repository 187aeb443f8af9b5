//! The embedded DNS in every task: a UDP socket and a TCP listener on 127.0.0.11:53 made
//! inside the task's network namespace and served by the node's one [`DnsServer`], each task
//! answered within the networks it is attached to; and the records, built from the network DB
//! (and this node's own endpoints) at start, then changed one endpoint at a time: only the
//! endpoints that differ from what the server was handed last reach it, and each recomputes
//! only its own names.
//!
//! Answers come from the network DB, not the Raft store, so they follow the cluster (a task
//! starting or stopping anywhere, a node dying) as fast as gossip does, and keep working while
//! every manager is down, as Docker's do.

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener, UdpSocket},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use shoal_control::{
    cluster::Task,
    error_chain::Chain,
    netdb::{Change, Endpoint},
};
use shoal_dns::{
    DnsCounters, DnsServer, EndpointRecord, NetworkInfo, Records, RecordsView, ServerConfig,
    TaskDns, resolv_conf::EMBEDDED_DNS,
};
use tokio::sync::broadcast::{
    Receiver,
    error::{RecvError, TryRecvError},
};
use tracing::{debug, warn};

use super::{NodeNetworking, visible::EndpointChange};

/// At most one refresh of the records per this long: the first change of a burst is applied
/// at once, the rest of the burst with one refresh after it.
const COALESCE: Duration = Duration::from_millis(20);

/// The node's embedded DNS: one server, one records view, the tasks it serves.
pub struct EmbeddedDns {
    server: Arc<DnsServer>,
    records: Arc<RecordsView>,
    /// Served tasks by task ID; dropping a [`TaskDns`] stops serving it.
    tasks: Mutex<HashMap<String, TaskDns>>,
    /// What every task's /etc/resolv.conf says.
    task_resolv_conf: String,
    /// What the records were last handed; `None` until the first (full) set.
    handed: Mutex<Option<Handed>>,
}

/// The networks and endpoints the records hold, as the agent handed them.
#[derive(Default)]
struct Handed {
    networks: HashMap<String, NetworkInfo>,
    /// By (network ID, task ID).
    endpoints: HashMap<(String, String), EndpointRecord>,
}

impl EmbeddedDns {
    /// `upstreams`: where names that are not the cluster's are forwarded (from the agent's
    /// netns, so the host's loopback resolvers work too). `task_resolv_conf`: the text of each
    /// task's resolv.conf.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        task_resolv_conf: String,
    ) -> std::io::Result<EmbeddedDns> {
        let config = ServerConfig {
            upstreams,
            ..ServerConfig::default()
        };
        let records = RecordsView::new(Records::empty());
        Ok(EmbeddedDns {
            server: DnsServer::new(config, records.clone())?,
            records,
            tasks: Mutex::default(),
            task_resolv_conf,
            handed: Mutex::default(),
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, TaskDns>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn task_resolv_conf(&self) -> String {
        self.task_resolv_conf.clone()
    }

    pub fn counters(&self) -> DnsCounters {
        self.server.counters()
    }

    /// Starts answering inside `task`'s namespace, unless that is already done (attach is
    /// called again for tasks re-adopted after an agent restart, whose sockets died with the
    /// old agent).
    pub fn serve(&self, task: &Task, netns: &Path) -> anyhow::Result<()> {
        let mut tasks = self.tasks();
        if tasks.contains_key(&task.id) {
            return Ok(());
        }
        let (udp, tcp) = bind_in(netns).context("embedded DNS")?;
        // Like Docker, names are not served on the routing mesh's network.
        let scope = task
            .networks
            .iter()
            .filter(|a| !a.network.ingress)
            .map(|a| a.network.id.clone())
            .collect();
        let served = self
            .server
            .serve_task(udp, tcp, scope)
            .context("embedded DNS")?;
        tasks.insert(task.id.clone(), served);
        debug!(task = %task.id, "embedded DNS serving");
        Ok(())
    }

    /// Makes the records hold `networks` and `endpoints` (by network and task ID): the full
    /// reconcile. The first call builds them whole; a later one hands over only the networks
    /// and endpoints that differ from what the records hold.
    fn set(
        &self,
        networks: HashMap<String, NetworkInfo>,
        endpoints: BTreeMap<(String, String), EndpointRecord>,
    ) {
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(last) = handed.as_mut() else {
            let endpoints: HashMap<_, _> = endpoints
                .into_iter()
                .filter(|((network_id, _), _)| networks.contains_key(network_id))
                .collect();
            self.records.replace(Records::new(
                networks.values().cloned().collect(),
                endpoints.values().cloned().collect(),
            ));
            *handed = Some(Handed {
                networks,
                endpoints,
            });
            return;
        };
        let mut changed: Vec<((String, String), Option<EndpointRecord>)> = last
            .endpoints
            .keys()
            .filter(|key| !endpoints.contains_key(*key))
            .map(|key| (key.clone(), None))
            .collect();
        changed.extend(endpoints.into_iter().map(|(key, e)| (key, Some(e))));
        self.hand_over(last, networks, changed);
    }

    /// Makes the records hold `networks`, and each of `changed` (by network and task ID; `None`:
    /// gone), leaving every other endpoint as it is: each recomputes only the names it
    /// touches. Nothing before the first [`Self::set`].
    fn update(
        &self,
        networks: HashMap<String, NetworkInfo>,
        changed: Vec<((String, String), Option<EndpointRecord>)>,
    ) {
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = handed.as_mut() {
            self.hand_over(last, networks, changed);
        }
    }

    fn hand_over(
        &self,
        last: &mut Handed,
        networks: HashMap<String, NetworkInfo>,
        changed: Vec<((String, String), Option<EndpointRecord>)>,
    ) {
        let new_networks: Vec<NetworkInfo> = networks
            .iter()
            .filter(|(id, n)| last.networks.get(*id) != Some(*n))
            .map(|(_, n)| n.clone())
            .collect();
        let gone_networks: Vec<String> = last
            .networks
            .keys()
            .filter(|id| !networks.contains_key(*id))
            .cloned()
            .collect();
        let mut upserts = Vec::new();
        let mut gone = Vec::new();
        for (key, record) in changed {
            // The records ignore endpoints on networks they do not have: so must what is
            // handed, or such an endpoint would never be handed once its network comes.
            let record = record.filter(|_| networks.contains_key(&key.0));
            if last.endpoints.get(&key) == record.as_ref() {
                continue;
            }
            match record {
                Some(record) => {
                    last.endpoints.insert(key, record.clone());
                    upserts.push(record);
                }
                None => {
                    last.endpoints.remove(&key);
                    gone.push(key);
                }
            }
        }
        // Endpoints of a network that goes go with it (a scan only then: this runs on every
        // refresh).
        if !gone_networks.is_empty() {
            last.endpoints
                .retain(|(network_id, _), _| networks.contains_key(network_id));
        }
        if new_networks.is_empty()
            && gone_networks.is_empty()
            && upserts.is_empty()
            && gone.is_empty()
        {
            return;
        }
        debug!(
            networks = new_networks.len() + gone_networks.len(),
            changed = upserts.len(),
            gone = gone.len(),
            "DNS records changed"
        );
        self.records.update(|records| {
            for network in new_networks {
                records.set_network(network);
            }
            for endpoint in upserts {
                records.upsert_endpoint(endpoint);
            }
            for (network_id, task_id) in &gone {
                records.remove_endpoint(network_id, task_id);
            }
            for network_id in &gone_networks {
                records.remove_network(network_id);
            }
        });
        last.networks = networks;
    }

    /// Stops answering for `task_id` (its sockets close; the namespace goes next).
    pub fn stop(&self, task_id: &str) {
        if let Some(served) = self.tasks().remove(task_id) {
            served.stop();
        }
    }
}

/// UDP and TCP sockets on 127.0.0.11:53 inside `netns`: made on a thread that entered it (a
/// socket belongs to the namespace it was created in, whichever thread serves it later).
fn bind_in(netns: &Path) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let addr = SocketAddr::new(EMBEDDED_DNS, 53);
    shoal_dataplane::netns::run_in(netns, move || {
        let udp = UdpSocket::bind(addr).with_context(|| format!("binding udp {addr}"))?;
        let tcp = TcpListener::bind(addr).with_context(|| format!("binding tcp {addr}"))?;
        anyhow::Ok((udp, tcp))
    })?
}

impl NodeNetworking {
    /// Brings the DNS records up to date with this node's networks and the endpoints that
    /// `changed` (all the visible ones when `full`): its own, and every other node's from the
    /// network DB (which already hides those of nodes that are down).
    pub(super) fn refresh_dns(&self, changed: &[EndpointChange], full: bool) {
        let networks: HashMap<String, NetworkInfo> = self
            .local()
            .networks
            .values()
            .map(|n| {
                let info = NetworkInfo {
                    id: n.network.id.clone(),
                    name: n.network.name.clone(),
                };
                (info.id.clone(), info)
            })
            .collect();
        if full {
            let endpoints = self
                .visible()
                .all()
                .filter_map(record)
                .map(|r| ((r.network_id.clone(), r.task_id.clone()), r))
                .collect();
            self.dns.set(networks, endpoints);
        } else {
            let changed = changed
                .iter()
                .map(|c| (c.key.clone(), c.new.as_ref().and_then(record)))
                .collect();
            self.dns.update(networks, changed);
        }
    }
}

/// What the records hold of `e`: nodes' ingress endpoints have no name to answer, draining
/// tasks are withdrawn.
fn record(e: &Endpoint) -> Option<EndpointRecord> {
    (!e.service.is_empty() && !e.draining).then(|| EndpointRecord {
        network_id: e.network_id.clone(),
        task_id: e.endpoint_id.clone(),
        ip: e.ip,
        service: e.service.clone(),
        vip: e.vip,
        aliases: e.aliases.clone(),
        service_aliases: e.service_aliases.clone(),
    })
}

/// Follows the network DB's changes into the DNS records, the VIP backends and the published
/// ports until it stops: each change marks its endpoint dirty, and a burst of changes costs one
/// refresh per [`COALESCE`] (a lone change is applied at once). Changes missed (the channel
/// lagged) make the refresh read every endpoint again.
pub async fn follow(networking: Arc<NodeNetworking>, mut changes: Receiver<Change>) {
    loop {
        let first = changes.recv().await;
        let mut missed = match first {
            Ok(change) => {
                mark(&networking, &change);
                0
            }
            Err(RecvError::Lagged(missed)) => missed,
            Err(RecvError::Closed) => return,
        };
        // Whatever queued meanwhile is covered by the refresh below.
        loop {
            match changes.try_recv() {
                Ok(change) => mark(&networking, &change),
                Err(TryRecvError::Lagged(n)) => missed += n,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if missed > 0 {
            warn!(
                missed,
                "network DB changes missed: reading every endpoint again"
            );
            networking.mark_dirty(|d| d.all = true);
        }
        let n = networking.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || n.refresh_services()).await {
            warn!(error = %Chain(&e), "refreshing the DNS records and VIP backends failed");
        }
        tokio::time::sleep(COALESCE).await;
    }
}

fn mark(networking: &NodeNetworking, change: &Change) {
    let e = match change {
        Change::Upsert(e) | Change::Remove(e) => e,
    };
    networking.mark_dirty(|d| d.mark(&e.network_id, &e.endpoint_id));
}
