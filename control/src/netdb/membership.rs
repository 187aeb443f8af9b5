//! foca glue: our SWIM identity, the custom-broadcast handler that feeds the table, and the
//! engine task that owns foca, the UDP socket and the timers.
//!
//! foca is sans-IO: it fills an `AccumulatingRuntime` with packets, timers and notifications
//! which this module turns into encrypted datagrams, tokio sleeps and table changes. Keeping
//! foca in one task means no lock around it; the table is shared because the public API and the
//! push-pull tasks touch it too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, BroadcastHandler, Foca, Identity, Invalidates, OwnedNotification,
    PostcardCodec, Timer,
};
use rand_foca::SeedableRng;
use rand_foca::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::pushpull;
use super::stats::Stats;
use super::table::Record;
use super::wire::{Drop, OVERHEAD};
use super::{Shared, lock};

/// A SWIM member: the node id plus where it listens. `generation` lets a restarted node (same id,
/// maybe same address) win over its previous, declared-down incarnation, and lets foca renew the
/// identity to rejoin automatically after a false "down".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Member {
    pub node_id: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Identifies a broadcast so foca drops older versions of the same entry from its backlog.
pub(crate) struct BroadcastKey {
    network_id: String,
    endpoint_id: String,
    clock: u64,
    owner: String,
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.network_id == other.network_id
            && self.endpoint_id == other.endpoint_id
            && (self.clock, &self.owner) >= (other.clock, &other.owner)
    }
}

/// Decodes entry broadcasts and merges them; only new information is relayed further.
pub(crate) struct Handler {
    shared: Arc<Shared>,
}

impl BroadcastHandler<Member> for Handler {
    type Key = BroadcastKey;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Member>,
    ) -> Result<Option<BroadcastKey>, postcard::Error> {
        let rec: Record = postcard::from_bytes(data)?;
        let key = BroadcastKey {
            network_id: rec.endpoint.network_id.clone(),
            endpoint_id: rec.endpoint.endpoint_id.clone(),
            clock: rec.clock,
            owner: rec.owner.clone(),
        };
        // `None` sender: our own change, already in the table; always disseminate it.
        if sender.is_none() {
            return Ok(Some(key));
        }
        Ok(lock(&self.shared.table).merge(rec).then_some(key))
    }
}

/// Requests from the API and push-pull tasks to the engine.
pub(crate) enum Cmd {
    /// The table's outbox has records to broadcast.
    Flush,
    /// Announce ourselves to a member learned from a push-pull with a seed.
    Announce(Member),
}

pub(crate) struct EngineConfig {
    pub identity: Member,
    pub probe_period: Duration,
    pub push_pull_every: Duration,
    pub tombstone_ttl: Duration,
}

type Swim = Foca<Member, PostcardCodec, SmallRng, Handler>;

fn swim_config(probe_period: Duration) -> foca::Config {
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::MIN.saturating_add(31));
    c.probe_period = probe_period;
    c.probe_rtt = probe_period / 2;
    c.suspect_to_down_after = probe_period * 3;
    // Forget down members after a while, so a restarted node on the same address can come back.
    c.remove_down_after = Some(Duration::from_secs(15));
    c.max_packet_size = std::num::NonZeroUsize::MIN.saturating_add(1400 - OVERHEAD - 1);
    c
}

struct Engine {
    swim: Swim,
    rt: AccumulatingRuntime<Member>,
    udp: Arc<UdpSocket>,
    shared: Arc<Shared>,
    timers: mpsc::UnboundedSender<Timer<Member>>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    udp: Arc<UdpSocket>,
    cfg: EngineConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (timers, mut timer_rx) = mpsc::unbounded_channel();
    let swim = Foca::with_custom_broadcast(
        cfg.identity,
        swim_config(cfg.probe_period),
        SmallRng::seed_from_u64(rand::random()),
        PostcardCodec,
        Handler {
            shared: shared.clone(),
        },
    );
    let mut e = Engine {
        swim,
        rt: AccumulatingRuntime::new(),
        udp: udp.clone(),
        shared,
        timers,
    };
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_push_pull = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                // Leaving gracefully tells the others at once instead of waiting for suspicion.
                if let Err(err) = e.swim.leave_cluster(&mut e.rt) {
                    tracing::debug!(%err, "netdb: leave_cluster");
                }
                e.drain();
                break;
            }
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, _from)) => e.datagram(&buf[..n]),
                Err(err) => tracing::debug!(%err, "netdb: udp recv"),
            },
            Some(cmd) = cmds.recv() => {
                match cmd {
                    Cmd::Flush => {}
                    Cmd::Announce(m) => {
                        if let Err(err) = e.swim.announce(m, &mut e.rt) {
                            tracing::debug!(%err, "netdb: announce");
                        }
                    }
                }
                e.drain();
            }
            Some(t) = timer_rx.recv() => {
                if let Err(err) = e.swim.handle_timer(t, &mut e.rt) {
                    tracing::debug!(%err, "netdb: timer");
                }
                e.drain();
            }
            _ = tick.tick() => {
                lock(&e.shared.table).reap(cfg.tombstone_ttl);
                if last_push_pull.elapsed() >= cfg.push_pull_every {
                    last_push_pull = tokio::time::Instant::now();
                    e.push_pull_random();
                }
            }
        }
    }
}

impl Engine {
    fn datagram(&mut self, packet: &[u8]) {
        let stats = &self.shared.stats;
        Stats::inc(&stats.received);
        let plain = match lock_keys(&self.shared).open(packet) {
            Ok(p) => p,
            Err(Drop::Truncated) => return Stats::inc(&stats.dropped_truncated),
            Err(Drop::Undecryptable) => return Stats::inc(&stats.dropped_undecryptable),
            Err(Drop::Malformed) => return Stats::inc(&stats.dropped_malformed),
        };
        if let Err(err) = self.swim.handle_data(&plain, &mut self.rt) {
            tracing::debug!(%err, "netdb: foca refused a datagram");
            Stats::inc(&stats.dropped_malformed);
        }
        self.drain();
    }

    /// Moves everything foca queued into the world, until nothing is left.
    fn drain(&mut self) {
        loop {
            let outbox = lock(&self.shared.table).take_outbox();
            let had_outbox = !outbox.is_empty();
            for rec in outbox {
                match postcard::to_allocvec(&rec) {
                    Ok(bytes) => {
                        if let Err(err) = self.swim.add_broadcast(&bytes) {
                            tracing::warn!(%err, "netdb: entry too large to broadcast");
                        }
                    }
                    Err(err) => tracing::warn!(%err, "netdb: encode entry"),
                }
            }
            if had_outbox {
                // Send now rather than waiting for the next gossip round.
                if let Err(err) = self.swim.broadcast(&mut self.rt) {
                    tracing::debug!(%err, "netdb: broadcast");
                }
            }
            if self.rt.backlog() == 0 {
                break;
            }
            while let Some((to, data)) = self.rt.to_send() {
                let Some(packet) = lock_keys(&self.shared).seal(&data) else {
                    continue;
                };
                // try_send: the engine never blocks on a full socket buffer; SWIM tolerates loss.
                if self.udp.try_send_to(&packet, to.addr).is_ok() {
                    Stats::inc(&self.shared.stats.sent);
                }
            }
            while let Some((after, timer)) = self.rt.to_schedule() {
                let tx = self.timers.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(timer);
                });
            }
            while let Some(n) = self.rt.to_notify() {
                self.notification(n);
            }
        }
        *lock(&self.shared.identity) = self.swim.identity().clone();
    }

    fn notification(&mut self, n: OwnedNotification<Member>) {
        match n {
            OwnedNotification::MemberUp(m) => {
                tracing::debug!(node = %m.node_id, addr = %m.addr, "netdb: member up");
                lock(&self.shared.members).insert(m.clone(), true);
                if lock(&self.shared.table).restore_node(&m.node_id) {
                    // It was withdrawn: resync with it rather than trusting what we kept.
                    self.spawn_push_pull(m.addr);
                }
            }
            OwnedNotification::MemberDown(m) => {
                tracing::debug!(node = %m.node_id, addr = %m.addr, "netdb: member down");
                let mut members = lock(&self.shared.members);
                members.insert(m.clone(), false);
                let other_alive = members
                    .iter()
                    .any(|(o, alive)| *alive && o.node_id == m.node_id);
                drop(members);
                if !other_alive {
                    lock(&self.shared.table).withdraw_node(&m.node_id);
                }
            }
            other => tracing::debug!(?other, "netdb: swim notification"),
        }
    }

    fn push_pull_random(&self) {
        let alive: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
        if alive.is_empty() {
            return;
        }
        let pick = alive[rand::random_range(0..alive.len())];
        self.spawn_push_pull(pick);
    }

    fn spawn_push_pull(&self, addr: SocketAddr) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(err) = pushpull::exchange(&shared, addr).await {
                tracing::debug!(%err, "netdb: periodic push-pull");
            }
        });
    }
}

fn lock_keys(shared: &Shared) -> std::sync::RwLockReadGuard<'_, super::wire::Keyring> {
    shared.keys.read().unwrap_or_else(|p| p.into_inner())
}

/// Members as the API reports them, without ourselves.
pub(crate) fn members(m: &HashMap<Member, bool>) -> Vec<(String, SocketAddr, bool)> {
    let mut out: Vec<_> = m
        .iter()
        .map(|(id, alive)| (id.node_id.clone(), id.addr, *alive))
        .collect();
    out.sort();
    out
}
