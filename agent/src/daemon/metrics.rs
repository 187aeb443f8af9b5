//! The Prometheus endpoint (`--metrics-addr`, text exposition format): the data path's
//! counters, read from the eBPF maps at scrape time, the node's view of the swarm, and the
//! health of its tasks.
//!
//! Each scrape gathers a snapshot (the swarm summary may ask the leader) and encodes it
//! through a one-off registry, so nothing here caches a value that could go stale.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use shoal_common::{
    lb::{LbCounters, LbEvent},
    mesh::MeshEvent,
};
use shoal_control::{
    api::HookCounters,
    cluster::health::Health,
    error_chain::Chain,
    netdb::NetDbStats,
    swarm::{MeshUpdateCounts, Swarm},
};
use shoal_dataplane::{lb::VipCounters, sock_destroy::Destroyed};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::warn;

use super::{node_dataplane::SharedDataplane, tasks::NodeTasks};
use crate::networking::NodeNetworking;

#[derive(Clone)]
struct Sources {
    dataplane: SharedDataplane,
    swarm: Swarm,
    networking: Arc<NodeNetworking>,
    tasks: Arc<NodeTasks>,
}

/// Binds `addr` and serves `/metrics` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    dataplane: SharedDataplane,
    swarm: Swarm,
    networking: Arc<NodeNetworking>,
    tasks: Arc<NodeTasks>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint --metrics-addr {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Sources {
            dataplane,
            swarm,
            networking,
            tasks,
        });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(cause = %Chain(&e), "metrics endpoint failed");
        }
    });
    Ok((bound, task))
}

async fn scrape(State(sources): State<Sources>) -> impl IntoResponse {
    let swarm = sources.swarm.summary().await;
    let (hooks, (lb, lb_events), mesh_events, lb_repairs, sockets_destroyed) = sources
        .dataplane
        .lock()
        .as_ref()
        .map(|dp| {
            (
                dp.info().counters,
                dp.lb_counters(),
                dp.mesh_events(),
                dp.lb_repairs(),
                dp.sockets_destroyed(),
            )
        })
        .unwrap_or_default();
    let snapshot = Snapshot {
        hooks,
        lb,
        lb_events,
        lb_repairs,
        sockets_destroyed,
        mesh_events,
        swarm_active: swarm.active,
        is_manager: swarm.is_manager,
        managers: swarm.managers,
        nodes: swarm.nodes,
        gossip: sources.networking.gossip_stats().unwrap_or_default(),
        gossip_keys: sources.networking.gossip_key_count() as i64,
        remote_repairs: sources.networking.remote_endpoint_repairs(),
        mesh_updates: sources.swarm.mesh_updates(),
        dns: sources.networking.dns_counters(),
        task_health: sources.tasks.executor.health_counts(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut body = String::new();
    if let Err(e) = encode(&mut body, &registry) {
        warn!(cause = %Chain(&e), "encoding metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// One scrape's values.
#[derive(Debug)]
struct Snapshot {
    hooks: Vec<HookCounters>,
    /// Per VIP (`backend: None`) and per backend.
    lb: Vec<VipCounters>,
    lb_events: Vec<(LbEvent, u64)>,
    /// VIPs whose map entries the background check found differing, and rewrote.
    lb_repairs: u64,
    /// Sockets balanced at the socket to a backend that was then removed, destroyed.
    sockets_destroyed: Destroyed,
    mesh_events: Vec<(MeshEvent, u64)>,
    swarm_active: bool,
    is_manager: bool,
    managers: u32,
    nodes: u32,
    gossip: NetDbStats,
    gossip_keys: i64,
    /// Remote endpoints the sandboxes' background check found (stale, missing), and repaired.
    remote_repairs: (u64, u64),
    /// How the routing meshes from the leader came (whole, as a change, refused).
    mesh_updates: MeshUpdateCounts,
    dns: shoal_dns::DnsCounters,
    /// This node's running tasks with a health check, per service and health.
    task_health: BTreeMap<(String, Health), u64>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "shoal_dataplane_packets",
                "Packets seen by each eBPF hook of this node.",
                (|h: &HookCounters| h.packets) as fn(&HookCounters) -> u64,
            ),
            (
                "shoal_dataplane_bytes",
                "Bytes seen by each eBPF hook of this node.",
                |h: &HookCounters| h.bytes,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for hook in &self.hooks {
                let labels = vec![("hook", hook.hook.as_str())];
                ConstCounter::new(value(hook)).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_lb(&mut encoder)?;
        let g = &self.gossip;
        for (name, help, value) in [
            (
                "shoal_gossip_received_packets",
                "Network-DB packets received and accepted.",
                g.received,
            ),
            (
                "shoal_gossip_sent_packets",
                "Network-DB packets sent.",
                g.sent,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut dropped = encoder.encode_descriptor(
            "shoal_gossip_dropped_packets",
            "Network-DB packets dropped, by reason.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (reason, value) in [
            ("truncated", g.dropped_truncated),
            ("undecryptable", g.dropped_undecryptable),
            ("malformed", g.dropped_malformed),
        ] {
            ConstCounter::new(value).encode(dropped.encode_family(&vec![("reason", reason)])?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "shoal_gossip_pushpull_refused_connections",
            "Gossip push-pull connections closed at accept, by reason: busy (the cap on \
             connections served at once), source (its share open), rate (too fast).",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (reason, value) in [
            ("busy", g.pushpull_refused_busy),
            ("source", g.pushpull_refused_source),
            ("rate", g.pushpull_refused_rate),
        ] {
            ConstCounter::new(value).encode(refused.encode_family(&vec![("reason", reason)])?)?;
        }
        ConstCounter::new(g.pushpull_timed_out).encode(encoder.encode_descriptor(
            "shoal_gossip_pushpull_timeouts",
            "Gossip push-pull connections dropped for missing a deadline (slow senders).",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?)?;
        let d = &self.dns;
        let mut queries = encoder.encode_descriptor(
            "shoal_dns_queries",
            "Queries to the embedded DNS servers of this node's tasks, by transport.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (transport, value) in [("udp", d.queries_udp), ("tcp", d.queries_tcp)] {
            ConstCounter::new(value)
                .encode(queries.encode_family(&vec![("transport", transport)])?)?;
        }
        let mut outcomes = encoder.encode_descriptor(
            "shoal_dns_responses",
            "Embedded DNS outcomes: answered from the cluster's records, NXDOMAIN, forwarded, \
             SERVFAIL after upstream failure, refused, malformed input, truncated over UDP.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (outcome, value) in [
            ("local", d.answered_local),
            ("nxdomain", d.nxdomain),
            ("forwarded", d.forwarded),
            ("upstream_failure", d.upstream_failures),
            ("refused", d.refused),
            ("malformed", d.malformed),
            ("truncated", d.truncated),
        ] {
            ConstCounter::new(value)
                .encode(outcomes.encode_family(&vec![("outcome", outcome)])?)?;
        }
        self.encode_task_health(&mut encoder)?;
        for (name, help, value) in [
            (
                "shoal_swarm_active",
                "1 when this node is in a swarm.",
                i64::from(self.swarm_active),
            ),
            (
                "shoal_swarm_manager",
                "1 when this node is a manager.",
                i64::from(self.is_manager),
            ),
            (
                "shoal_swarm_managers",
                "Managers in the swarm.",
                i64::from(self.managers),
            ),
            (
                "shoal_swarm_nodes",
                "Nodes in the swarm.",
                i64::from(self.nodes),
            ),
            (
                "shoal_gossip_keys",
                "Gossip encryption keys this node holds.",
                self.gossip_keys,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Every service with a health check that has a task here gets all three states (0 too),
    /// so an alert on `unhealthy > 0` or `healthy == 0` needs no `absent()`.
    fn encode_task_health(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "shoal_task_health",
            "This node's running tasks with a health check, per service and health \
             (starting, healthy, unhealthy).",
            None,
            gauge.metric_type(),
        )?;
        let services: BTreeSet<&String> = self.task_health.keys().map(|(s, _)| s).collect();
        for service in services {
            for health in Health::ALL {
                let count = self
                    .task_health
                    .get(&(service.clone(), health))
                    .copied()
                    .unwrap_or(0);
                let labels = vec![("service", service.as_str()), ("state", health.as_str())];
                ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// The VIP load balancer: traffic per VIP and per backend, and what it dropped or answered.
    fn encode_lb(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (what, help, value) in [
            (
                "packets",
                "Packets of balanced flows (both directions)",
                (|c: &LbCounters| c.packets) as fn(&LbCounters) -> u64,
            ),
            (
                "bytes",
                "Bytes of balanced flows (both directions)",
                |c: &LbCounters| c.bytes,
            ),
            ("flows", "New flows balanced", |c: &LbCounters| c.flows),
        ] {
            for per_backend in [false, true] {
                let (name, help) = if per_backend {
                    (
                        format!("shoal_lb_backend_{what}"),
                        format!("{help}, per VIP and backend, on this node."),
                    )
                } else {
                    (
                        format!("shoal_lb_vip_{what}"),
                        format!("{help}, per VIP, on this node."),
                    )
                };
                let mut family = encoder.encode_descriptor(
                    &name,
                    &help,
                    None,
                    ConstCounter::new(0u64).metric_type(),
                )?;
                for c in self
                    .lb
                    .iter()
                    .filter(|c| c.backend.is_some() == per_backend)
                {
                    let vip = c.vip.to_string();
                    let mut labels = vec![("vip", vip)];
                    if let Some(backend) = c.backend {
                        labels.push(("backend", backend.to_string()));
                    }
                    ConstCounter::new(value(&c.counters)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut events = encoder.encode_descriptor(
            "shoal_lb_events",
            "Load balancer events: ARP replies for VIPs, connections refused for lack of a \
             backend, flows reset or moved because their backend went, fragments and malformed \
             packets to a VIP dropped, replies reverse-NAT-ed.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (event, value) in &self.lb_events {
            ConstCounter::new(*value)
                .encode(events.encode_family(&vec![("event", event.name())])?)?;
        }
        ConstCounter::new(self.lb_repairs).encode(encoder.encode_descriptor(
            "shoal_lb_repairs",
            "VIPs whose load balancer map entries the background check found differing from \
             what the agent programmed (written behind its back), and rewrote.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?)?;
        let mut overlay = encoder.encode_descriptor(
            "shoal_overlay_endpoint_repairs",
            "Remote endpoints (an FDB entry on vxlan0 and neighbour entries on vxlan0 and br0 \
             in an overlay sandbox) the background check found differing from the network DB, \
             and repaired: stale ones (no such endpoint) removed, missing or half-programmed \
             ones added.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        let (stale, missing) = self.remote_repairs;
        for (kind, value) in [("stale", stale), ("missing", missing)] {
            ConstCounter::new(value).encode(overlay.encode_family(&vec![("kind", kind)])?)?;
        }
        let mut meshes = encoder.encode_descriptor(
            "shoal_routing_mesh_updates",
            "Routing meshes this node followed from the leader's heartbeat answers: sent whole, \
             or as the change from the one it had; refused: undecodable, or a change that did \
             not give the mesh the leader named (the next one then came whole).",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        let m = self.mesh_updates;
        for (how, value) in [
            ("whole", m.whole),
            ("change", m.changes),
            ("refused", m.refused),
        ] {
            ConstCounter::new(value).encode(meshes.encode_family(&vec![("how", how)])?)?;
        }
        let mut destroyed = encoder.encode_descriptor(
            "shoal_lb_sockets_destroyed",
            "Sockets the socket-level balancer had sent to a backend that was then removed \
             from the load balancer (not draining), destroyed by the agent (SOCK_DESTROY), \
             per protocol: TCP connections and connected UDP sockets of this node's tasks \
             and node-local clients.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (protocol, value) in [
            ("tcp", self.sockets_destroyed.tcp),
            ("udp", self.sockets_destroyed.udp),
        ] {
            ConstCounter::new(value)
                .encode(destroyed.encode_family(&vec![("protocol", protocol)])?)?;
        }
        let mut mesh = encoder.encode_descriptor(
            "shoal_mesh_events",
            "Published ports (routing mesh and host mode): connections forwarded to a task, \
             answers sent back to clients, and packets dropped for lack of a task, a task gone, \
             a malformed or oversized packet, no route to the task's node, or no free NAT port; \
             flows confirmed by their client, and flow entries forgotten by the programs, \
             expired by the agent or evicted by the LRU, confirmed and unconfirmed (a SYN \
             flood's).",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (event, value) in &self.mesh_events {
            ConstCounter::new(*value)
                .encode(mesh.encode_family(&vec![("event", event.name())])?)?;
        }
        Ok(())
    }
}
