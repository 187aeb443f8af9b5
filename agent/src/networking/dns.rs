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
use shoal_control::{cluster::Task, error_chain::Chain, netdb::Change};
use shoal_dns::{
    DnsCounters, DnsServer, EndpointRecord, NetworkInfo, Records, RecordsView, ServerConfig,
    TaskDns, resolv_conf::EMBEDDED_DNS,
};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tracing::{debug, warn};

use super::NodeNetworking;

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

    /// Makes the records hold `networks` and `endpoints` (by network and task ID). The first
    /// call builds them whole (a full reconcile); later ones hand over only the networks and
    /// endpoints that differ from the last call, each recomputing only the names it touches.
    fn set(
        &self,
        networks: HashMap<String, NetworkInfo>,
        mut endpoints: BTreeMap<(String, String), EndpointRecord>,
    ) {
        // The records ignore endpoints on networks they do not have: so must what is handed,
        // or such an endpoint would never be handed once its network comes.
        endpoints.retain(|(network_id, _), _| networks.contains_key(network_id));
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(last) = handed.as_mut() else {
            self.records.replace(Records::new(
                networks.values().cloned().collect(),
                endpoints.values().cloned().collect(),
            ));
            *handed = Some(Handed {
                networks,
                endpoints: endpoints.into_iter().collect(),
            });
            return;
        };
        let new_networks: Vec<&NetworkInfo> = networks
            .iter()
            .filter(|(id, n)| last.networks.get(*id) != Some(*n))
            .map(|(_, n)| n)
            .collect();
        let gone_networks: Vec<&String> = last
            .networks
            .keys()
            .filter(|id| !networks.contains_key(*id))
            .collect();
        let changed: Vec<&EndpointRecord> = endpoints
            .iter()
            .filter(|(key, e)| last.endpoints.get(*key) != Some(*e))
            .map(|(_, e)| e)
            .collect();
        let gone: Vec<&(String, String)> = last
            .endpoints
            .keys()
            .filter(|key| !endpoints.contains_key(*key))
            .collect();
        if new_networks.is_empty()
            && gone_networks.is_empty()
            && changed.is_empty()
            && gone.is_empty()
        {
            return;
        }
        debug!(
            networks = new_networks.len() + gone_networks.len(),
            changed = changed.len(),
            gone = gone.len(),
            "DNS records changed"
        );
        self.records.update(|records| {
            for network in new_networks {
                records.set_network(network.clone());
            }
            for endpoint in changed {
                records.upsert_endpoint(endpoint.clone());
            }
            for (network_id, task_id) in gone {
                records.remove_endpoint(network_id, task_id);
            }
            for network_id in gone_networks {
                records.remove_network(network_id);
            }
        });
        last.networks = networks;
        last.endpoints = endpoints.into_iter().collect();
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
    /// Brings the DNS records up to date with this node's networks: its own endpoints, and
    /// every other node's from the network DB (which already hides those of nodes that are
    /// down). Only what changed since the last call reaches the server.
    pub(super) fn refresh_dns(&self) {
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
        let endpoints = self
            .visible_endpoints()
            .into_iter()
            // Nodes' ingress endpoints have no name to answer; draining tasks are withdrawn.
            .filter(|e| !e.service.is_empty() && !e.draining)
            .map(|e| {
                let record = EndpointRecord {
                    network_id: e.network_id,
                    task_id: e.endpoint_id,
                    ip: e.ip,
                    service: e.service,
                    vip: e.vip,
                    aliases: e.aliases,
                    service_aliases: e.service_aliases,
                };
                ((record.network_id.clone(), record.task_id.clone()), record)
            })
            .collect();
        self.dns.set(networks, endpoints);
    }
}

/// Follows the network DB's changes into the DNS records until it stops; a burst of changes
/// costs one refresh per [`COALESCE`], and a lone change is answered at once.
pub async fn follow(networking: Arc<NodeNetworking>, mut changes: Receiver<Change>) {
    loop {
        match changes.recv().await {
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "network DB changes missed: refreshing the DNS records"
                );
            }
            Err(RecvError::Closed) => return,
        }
        // Whatever queued meanwhile is covered by the refresh below.
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            changes.try_recv()
        {}
        let n = networking.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || n.refresh_services()).await {
            warn!(error = %Chain(&e), "refreshing the DNS records and VIP backends failed");
        }
        tokio::time::sleep(COALESCE).await;
    }
}
