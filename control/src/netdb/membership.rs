//! foca glue: the custom-broadcast handler that feeds the table, and the engine task that owns
//! foca, the UDP socket and the timers.
//!
//! foca is sans-IO: it fills an `AccumulatingRuntime` with packets, timers and notifications
//! which this module turns into encrypted datagrams, tokio sleeps and table changes. Keeping
//! foca in one task means no lock around it; the table is shared because the public API and the
//! push-pull tasks touch it too.
//!
//! How an entry change spreads (the part that decides convergence time):
//! - Every node that learns a record (the writer, or anyone hearing it for the first time)
//!   pushes it at once to 6 random members (`Foca::broadcast`, see [`EAGER_FANOUT`]) instead
//!   of waiting for the next 200 ms gossip round, so a hop costs a datagram, not half a gossip
//!   period.
//! - It then keeps piggybacking it on gossip rounds, probes and acks until it was sent
//!   `max_transmissions` times. That count is scaled with the cluster like memberlist's
//!   `RetransmitMult * ceil(log10(n + 1))` (see [`retransmits`]); with a fixed count tuned for
//!   32 members, each node sends a record ~6 times, and about `n * e^-6` members (0.25 %) are
//!   never reached by gossip and wait for the 30 s push-pull (what made 100 members take up to
//!   30 s and 1,000 never converge).
//! - Membership changes use the same scaled count, and a node learning that a member is down
//!   gossips it at once too, so the withdrawal of its endpoints reaches everyone quickly.
//! - A record only reaches members someone knows, so membership must converge too: push-pull
//!   carries member lists, and a node push-pulls 1, 2, 4... s after joining (see `Resync`).

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use foca::{
    AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, PostcardCodec,
    Timer,
};
use rand_foca::SeedableRng;
use rand_foca::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::error_chain::Chain;

use super::member::Member;
use super::pushpull;
use super::stats::Stats;
use super::table::Record;
use super::wire::OVERHEAD;
use super::{Cmd, Shared, lock};

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
    /// Set when a datagram brought a record we did not have, so the engine relays it at once.
    /// An atomic only because foca owns the handler and the engine cannot reach into it.
    fresh: Arc<AtomicBool>,
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
        let new = lock(&self.shared.table).merge(rec);
        if new {
            self.fresh.store(true, Ordering::Relaxed);
        }
        Ok(new.then_some(key))
    }
}

pub(crate) struct EngineConfig {
    pub identity: Member,
    pub probe_period: Duration,
    pub push_pull_every: Duration,
    pub tombstone_ttl: Duration,
    pub down_drain: Duration,
}

type Swim = Foca<Member, PostcardCodec, SmallRng, Handler>;

/// How many random members a new record is pushed to at once, by its writer and by every node
/// that learns it. With a push fan-out of `f` on first receipt, about `e^-f` of the members
/// are missed by that immediate wave and wait for a gossip round (each one ~70 ms on average at
/// 1,000 members, but the slowest sets convergence): 5 % with 3, 0.25 % with 6, i.e. ~50 vs
/// ~2.5 of 1,000. The pushes come out of the `max_transmissions` budget, so this front-loads
/// the traffic rather than adding to it.
const EAGER_FANOUT: usize = 6;

/// memberlist's `RetransmitMult` (libnetwork's networkdb uses the same 4).
const RETRANSMIT_MULT: u32 = 4;

/// How many probe periods an entry's owner may stay unknown to SWIM here before its entries are
/// withdrawn (see `Table::withdraw_strangers`): detection of a new member takes a probe or two.
const STRANGER_GRACE_PROBES: u32 = 5;

/// How many times each node sends an update or entry broadcast it learned, for a cluster of
/// `cluster_size` members (ourselves included): `4 * ceil(log10(n + 1))`, as memberlist.
///
/// Why log: in push gossip where each informed node sends to `k` random members, the chance a
/// given member is never reached is about `e^-k`, so the expected number missed is
/// `n * e^-k`; keeping that well below one needs `k` to grow with `ln n`. This gives 4 up to 9
/// members, 8 up to 99, 12 up to 999 and 16 up to 9,999.
fn retransmits(cluster_size: usize) -> NonZeroU8 {
    // ceil(log10(n + 1)) in integers: the smallest k with 10^k >= n + 1.
    let m = cluster_size.max(1).saturating_add(1);
    let (mut scale, mut pow) = (0u32, 1usize);
    while pow < m {
        pow = pow.saturating_mul(10);
        scale += 1;
    }
    let tx = RETRANSMIT_MULT
        .saturating_mul(scale)
        .min(u32::from(u8::MAX));
    NonZeroU8::new(u8::try_from(tx).unwrap_or(u8::MAX)).unwrap_or(NonZeroU8::MIN)
}

fn swim_config(probe_period: Duration) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::MIN);
    c.probe_period = probe_period;
    c.probe_rtt = probe_period / 2;
    c.suspect_to_down_after = probe_period * 3;
    // Forget down members after a while, so a restarted node on the same address can come back.
    c.remove_down_after = Some(Duration::from_secs(15));
    c.max_packet_size = NonZeroUsize::MIN.saturating_add(1400 - OVERHEAD - 1);
    // Rescaled by `Engine::rescale` as members come and go.
    c.max_transmissions = retransmits(1);
    c
}

struct Engine {
    swim: Swim,
    rt: AccumulatingRuntime<Member>,
    udp: Arc<UdpSocket>,
    shared: Arc<Shared>,
    timers: mpsc::UnboundedSender<Timer<Member>>,
    /// foca has no getter for its config; we keep what we gave it to rescale retransmits.
    config: foca::Config,
    /// Shared with the broadcast handler: a datagram brought new records to relay at once.
    fresh: Arc<AtomicBool>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    udp: Arc<UdpSocket>,
    cfg: EngineConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (timers, mut timer_rx) = mpsc::unbounded_channel();
    let config = swim_config(cfg.probe_period);
    let fresh = Arc::new(AtomicBool::new(false));
    let swim = Foca::with_custom_broadcast(
        cfg.identity,
        config.clone(),
        SmallRng::seed_from_u64(rand::random()),
        PostcardCodec,
        Handler {
            shared: shared.clone(),
            fresh: fresh.clone(),
        },
    );
    let mut e = Engine {
        swim,
        rt: AccumulatingRuntime::new(),
        udp: udp.clone(),
        shared,
        timers,
        config,
        fresh,
    };
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut resync = Resync::new(cfg.push_pull_every, tokio::time::Instant::now());
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
                        resync.joined(tokio::time::Instant::now());
                    }
                    Cmd::Learn(members) => e.learn(members),
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
                let alive: std::collections::HashSet<String> = lock(&e.shared.members)
                    .iter()
                    .filter(|(_, alive)| **alive)
                    .map(|(m, _)| m.node_id.clone())
                    .collect();
                let grace = cfg.probe_period * STRANGER_GRACE_PROBES;
                let mut table = lock(&e.shared.table);
                table.withdraw_strangers(&alive, Instant::now(), grace);
                table.end_down_drains(Instant::now(), cfg.down_drain);
                table.reap(cfg.tombstone_ttl);
                drop(table);
                if resync.due(tokio::time::Instant::now()) {
                    e.push_pull_random();
                }
            }
        }
    }
}

/// When to push-pull with a random member: every `every` (30 s), but right after a join at 1,
/// 2, 4, 8... s until that period is reached.
///
/// Why: when many nodes join at once (a cluster booting), a join is gossiped while most of the
/// members that need it are not there yet or do not know each other, and the members that hear
/// of a joiner from the seed's list (push-pull, not re-gossiped) never relay it. Members that
/// joined early are left missing some of the others until SWIM probing or the next push-pull
/// introduces them. A few early push-pulls with random members, whose lists are complete up to
/// their own join, close those gaps in seconds; after that the normal period applies.
struct Resync {
    every: Duration,
    next: tokio::time::Instant,
    backoff: Duration,
}

impl Resync {
    const FIRST: Duration = Duration::from_secs(1);

    fn new(every: Duration, now: tokio::time::Instant) -> Resync {
        Resync {
            every,
            next: now + every,
            backoff: every,
        }
    }

    fn joined(&mut self, now: tokio::time::Instant) {
        self.backoff = Resync::FIRST.min(self.every);
        self.next = now + self.backoff;
    }

    fn due(&mut self, now: tokio::time::Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.backoff = (self.backoff * 2).min(self.every);
        self.next = now + self.backoff;
        true
    }
}

impl Engine {
    fn datagram(&mut self, packet: &[u8]) {
        let stats = &self.shared.stats;
        Stats::inc(&stats.received);
        let plain = match lock_keys(&self.shared).open(packet) {
            Ok(p) => p,
            Err(reason) => return Stats::inc(stats.dropped(reason)),
        };
        if let Err(err) = self.swim.handle_data(&plain, &mut self.rt) {
            tracing::debug!(%err, "netdb: foca refused a datagram");
            Stats::inc(&stats.dropped_malformed);
        }
        self.drain();
    }

    /// Adds members a push-pull peer sees alive. Not re-gossiped: the peer's own joins were
    /// gossiped when they happened, and re-sending ~n updates per push-pull would crowd entry
    /// broadcasts out of the packets. Alive at incarnation 0 never overrides what foca knows
    /// (a suspect or down member stays so); it only introduces members we never heard of.
    fn learn(&mut self, members: Vec<Member>) {
        let ours = &self.swim.identity().node_id;
        let news: Vec<_> = members
            .into_iter()
            .filter(|m| &m.node_id != ours)
            .map(foca::Member::alive)
            .collect();
        if let Err(err) = self.swim.apply_many(news.into_iter(), false, &mut self.rt) {
            tracing::debug!(%err, "netdb: applying push-pull members");
        }
    }

    /// Keeps `max_transmissions` in line with the cluster size (see [`retransmits`]). foca
    /// applies it to updates and broadcasts queued from now on, which is what matters: the
    /// count only needs to be right for the change being spread.
    fn rescale(&mut self) {
        let tx = retransmits(self.swim.num_members() + 1);
        if tx == self.config.max_transmissions {
            return;
        }
        let mut config = self.config.clone();
        config.max_transmissions = tx;
        match self.swim.set_config(config.clone()) {
            Ok(()) => {
                tracing::debug!(
                    members = self.swim.num_members(),
                    max_transmissions = tx,
                    "netdb: retransmits rescaled"
                );
                self.config = config;
            }
            Err(err) => tracing::warn!(%err, "netdb: rescaling retransmits"),
        }
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
            // Our own changes and records we just learned are pushed now rather than on the
            // next gossip round: this is what makes a hop cost a datagram instead of ~100 ms.
            // It spends the same transmission budget the rounds would, so it adds no traffic.
            let fresh = self.fresh.swap(false, Ordering::Relaxed);
            if had_outbox || fresh {
                // Each `broadcast` goes to `num_indirect_probes` (3) random members; a small
                // cluster gets one call, so nobody receives the same push twice.
                let per_call = self.config.num_indirect_probes.get();
                let pushes = EAGER_FANOUT.min(self.swim.num_members()).div_ceil(per_call);
                for _ in 0..pushes {
                    if let Err(err) = self.swim.broadcast(&mut self.rt) {
                        tracing::debug!(%err, "netdb: broadcast");
                    }
                }
            }
            if self.rt.backlog() == 0 {
                break;
            }
            // Notifications first, so the member list is current before anything is sent: a
            // joiner whose announce we answer is listed by us by the time it reads the answer.
            while let Some(n) = self.rt.to_notify() {
                self.notification(n);
            }
            self.rescale();
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
        }
        *lock(&self.shared.identity) = self.swim.identity().clone();
    }

    fn notification(&mut self, n: OwnedNotification<Member>) {
        match n {
            OwnedNotification::MemberUp(m) => {
                tracing::debug!(node = %m.node_id, addr = %m.addr, "netdb: member up");
                lock(&self.shared.members).insert(m.clone(), true);
                self.shared.member_up.notify_waiters();
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
                    lock(&self.shared.table).withdraw_node(&m.node_id, Instant::now());
                }
                // Pass the news on at once (3 random members) instead of on the next gossip
                // round: every node withdraws the endpoints when it hears, so this is what
                // bounds the time from detection to "withdrawn everywhere".
                if let Err(err) = self.swim.gossip(&mut self.rt) {
                    tracing::debug!(%err, "netdb: gossip member down");
                }
            }
            OwnedNotification::Rename(old, new) => {
                // The same node under a new identity (restart, or renewal after a false down):
                // keep one entry, so `members` and push-pull lists do not carry the old one.
                // Up/Down for the new identity, if its state changed, follows this.
                tracing::debug!(node = %new.node_id, addr = %new.addr, "netdb: member renamed");
                let mut members = lock(&self.shared.members);
                let alive = members.remove(&old).unwrap_or(false);
                members.insert(new, alive);
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
                tracing::debug!(error = %Chain(&err), "netdb: periodic push-pull");
            }
        });
    }
}

fn lock_keys(shared: &Shared) -> std::sync::RwLockReadGuard<'_, super::wire::Keyring> {
    shared.keys.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_scale_like_memberlist() {
        let tx = |n| retransmits(n).get();
        // 4 * ceil(log10(n + 1)).
        assert_eq!((tx(0), tx(1), tx(3), tx(9)), (4, 4, 4, 4));
        assert_eq!((tx(10), tx(32), tx(99)), (8, 8, 8));
        assert_eq!((tx(100), tx(999)), (12, 12));
        assert_eq!((tx(1000), tx(9999)), (16, 16));
        // 10^19 < 2^64 - 1 < 10^20.
        assert_eq!(tx(usize::MAX), 80);
    }

    #[test]
    fn resync_backs_off_after_join_then_settles() {
        let every = Duration::from_secs(30);
        let t0 = tokio::time::Instant::now();
        let mut r = Resync::new(every, t0);
        assert!(
            !r.due(t0 + Duration::from_secs(29)),
            "not before the period"
        );
        assert!(r.due(t0 + every));

        let j = t0 + Duration::from_secs(40);
        r.joined(j);
        // Push-pulls 1, 2, 4, 8, 16 s apart, then every 30 s.
        let mut at = j;
        for gap in [1, 2, 4, 8, 16, 30, 30] {
            let next = at + Duration::from_secs(gap);
            assert!(
                !r.due(next - Duration::from_millis(1)),
                "early before the {gap} s gap"
            );
            assert!(r.due(next), "due after the {gap} s gap");
            at = next;
        }
    }
}
