//! Network DB: each node's endpoint table per overlay network, replicated by gossip on 7946 like
//! libnetwork's networkdb. SWIM membership (foca) and entry broadcasts go over UDP, full-state
//! push-pull over TCP on the same port; everything is AES-256-GCM encrypted with rotatable keys.
//! The data path keeps working while managers are down because this needs no Raft.
//!
//! Beyond Swarm: a node SWIM declares down has its endpoints withdrawn at once (subscribers get
//! `Change::Remove`), so DNS/LB drop its backends within seconds; they come back when it does.
//! And every entry is signed by its owner with its CA-certified node key, so a member, though it
//! holds the gossip key, cannot forge another node's endpoints (`sign`).
//!
//! # Layout
//! - `wire`: packet framing and AES-256-GCM with a key ring (rotation without a gap).
//! - `record`: the wire types (an endpoint, one signed versioned record of it, a change).
//! - `table`: entries, Lamport clocks, tombstones and reaping, down-node withdrawal; checks each
//!   new version's signature once.
//! - `sign`: signing records with the node key and verifying them with the owner's public key.
//! - `member`: a SWIM member's identity, shared by the engine, push-pull and the API.
//! - `membership`: the custom-broadcast handler and the UDP/timer engine task around foca.
//! - `pushpull`: TCP full-state exchange (join and periodic anti-entropy).
//! - `frame`: the push-pull frame (a sealed fixed-size header, then the body) and its deadlines.
//! - `admission`: caps on push-pull connections (in total, per source, per-source rate).
//! - `stats`: received/sent/dropped/refused counters.
//! - `tests`: three in-process members on loopback.
//!
//! Here: the public API ([`NetDb`]), its errors, and the state the engine and push-pull tasks
//! share (`Shared`, and `Cmd`, the engine's inbox). `membership` starts push-pulls; push-pull
//! only talks to the engine through `Cmd`, so the two do not import each other.

mod admission;
mod frame;
mod member;
mod membership;
mod pushpull;
mod record;
mod sign;
mod stats;
mod table;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::error_chain::Chain;
pub use admission::PushPullLimits;
use member::Member;
use membership::EngineConfig;
pub use sign::{
    EntrySignature, PublicKey, SigningKey, SigningKeyError, verify_entries, verify_entry,
};
pub use stats::NetDbStats;
use stats::Stats;
use table::Table;
pub use table::{Change, Endpoint};
pub use wire::DropReason;
use wire::Keyring;

/// Errors from the network DB, with the address or step that failed. The cause is the
/// `source()`, never part of the message: log them with [`crate::error_chain::Chain`].
#[derive(Debug, thiserror::Error)]
pub enum NetDbError {
    #[error("binding gossip UDP on {0}")]
    BindUdp(SocketAddr, #[source] std::io::Error),
    #[error("binding gossip TCP on {0}")]
    BindTcp(SocketAddr, #[source] std::io::Error),
    #[error("no gossip keys configured")]
    NoKeys,
    #[error("push-pull: connecting to {0}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("push-pull I/O with {0}")]
    PushPullIo(SocketAddr, #[source] std::io::Error),
    /// A slow peer: `step` took longer than `limit`.
    #[error("push-pull with {peer}: {step} not done within {limit:?}")]
    Deadline {
        peer: SocketAddr,
        step: &'static str,
        limit: Duration,
    },
    #[error("push-pull frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    /// `part` ("header" or "body") did not open or was not valid.
    #[error("push-pull {part} from {peer} dropped")]
    Rejected {
        peer: SocketAddr,
        part: &'static str,
        #[source]
        reason: DropReason,
    },
    #[error("encoding gossip message")]
    Encode(#[source] postcard::Error),
    #[error("decoding gossip message")]
    Decode(#[source] postcard::Error),
    /// The source is the last seed's error.
    #[error("could not join through any seed ({0} tried)")]
    Join(usize, #[source] Box<NetDbError>),
}

/// How a node gossips.
#[derive(Debug, Clone)]
pub struct NetDbConfig {
    pub node_id: String,
    /// UDP and TCP both bind here (7946 in production; port 0 in tests).
    pub bind: SocketAddr,
    /// What others use to reach us; an unspecified IP or port 0 is replaced by the bound one.
    pub advertise: SocketAddr,
    /// Accepted keys (distributed through Raft); must not be empty.
    pub keys: Vec<[u8; 32]>,
    /// Index into `keys` used to send.
    pub primary_key: usize,
    /// Periodic anti-entropy (30 s in production).
    pub push_pull_every: Duration,
    /// How long deletes are remembered so late copies do not resurrect entries.
    pub tombstone_ttl: Duration,
    /// SWIM probe period (1 s in production); suspicion lasts three periods.
    pub probe_period: Duration,
    /// How long the endpoints of a node declared down are shown draining before they are
    /// hidden ([`table::DOWN_DRAIN`] in production).
    pub down_drain: Duration,
    /// Caps on incoming push-pull connections.
    pub push_pull_limits: PushPullLimits,
    /// The node key records are signed with (the TLS key its certificate certifies). Without
    /// one, our records go out unsigned and every other node drops them.
    pub signing_key: Option<SigningKey>,
    /// Each node's certified public key (node ID -> key), as the managers distribute them:
    /// records are taken only if their owner's key verifies them.
    pub peer_keys: HashMap<String, Vec<u8>>,
}

impl NetDbConfig {
    /// Production defaults around a node id, address and key.
    pub fn new(node_id: impl Into<String>, bind: SocketAddr, key: [u8; 32]) -> NetDbConfig {
        NetDbConfig {
            node_id: node_id.into(),
            bind,
            advertise: bind,
            keys: vec![key],
            primary_key: 0,
            push_pull_every: Duration::from_secs(30),
            tombstone_ttl: Duration::from_secs(30 * 60),
            probe_period: Duration::from_secs(1),
            down_drain: table::DOWN_DRAIN,
            push_pull_limits: PushPullLimits::default(),
            signing_key: None,
            peer_keys: HashMap::new(),
        }
    }
}

/// State shared by the API, the engine task and push-pull tasks.
pub(crate) struct Shared {
    table: Mutex<Table>,
    keys: RwLock<Keyring>,
    /// Shared with the table, which counts signature checks.
    stats: Arc<Stats>,
    members: Mutex<HashMap<Member, bool>>,
    /// Woken on every SWIM "member up", so `join` can wait for the seed to accept us.
    member_up: Notify,
    /// Our current SWIM identity (foca renews it after a false "down").
    identity: Mutex<Member>,
    cmd: mpsc::UnboundedSender<Cmd>,
}

/// Requests from the API and push-pull tasks to the engine.
pub(crate) enum Cmd {
    /// The table's outbox has records to broadcast.
    Flush,
    /// Announce ourselves to a member learned from a push-pull with a seed.
    Announce(Member),
    /// Members a push-pull peer sees alive: SWIM alone would take minutes to introduce every
    /// member to a late joiner of a large cluster (a feed holds ~20, and unknown members are
    /// only met when they happen to probe us), so push-pull carries the member list like
    /// memberlist's does.
    Learn(Vec<Member>),
}

/// A poisoned lock only means another task panicked mid-update; the data is still usable and
/// gossip must keep going, so we take it rather than propagate the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running network DB; cheap to share behind an `Arc`. Stops when the `shutdown` future given
/// to [`NetDb::start`] completes.
pub struct NetDb {
    shared: Arc<Shared>,
    events: broadcast::Sender<Change>,
    bound: SocketAddr,
}

impl NetDb {
    /// Binds UDP and TCP on `config.bind` (the same port for both, as Docker does) and starts
    /// the engine; it runs until `shutdown` completes, then leaves the cluster gracefully.
    pub async fn start(
        config: NetDbConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<NetDb, NetDbError> {
        if config.keys.is_empty() {
            return Err(NetDbError::NoKeys);
        }
        let (udp, tcp) = bind_both(config.bind).await?;
        let bound = udp
            .local_addr()
            .map_err(|e| NetDbError::BindUdp(config.bind, e))?;
        let mut advertise = config.advertise;
        if advertise.ip().is_unspecified() {
            advertise.set_ip(bound.ip());
        }
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        tracing::info!(node = %config.node_id, %bound, %advertise, "netdb: gossip bound (udp+tcp)");
        let (events, _) = broadcast::channel(4096);
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let identity = Member {
            node_id: config.node_id.clone(),
            addr: advertise,
            // Nanoseconds since the epoch: a restarted node outranks its previous incarnation.
            generation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let stats = Arc::new(Stats::default());
        let mut table = Table::new(config.node_id.clone(), events.clone(), stats.clone());
        if let Some(key) = config.signing_key {
            table.set_signer(key);
        }
        table.set_peer_keys(config.peer_keys);
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            keys: RwLock::new(Keyring::new(&config.keys, config.primary_key)),
            stats,
            members: Mutex::new(HashMap::new()),
            member_up: Notify::new(),
            identity: Mutex::new(identity.clone()),
            cmd,
        });
        let server = tokio::spawn(pushpull::serve(
            shared.clone(),
            tcp,
            config.push_pull_limits,
        ));
        let engine = membership::run(
            shared.clone(),
            Arc::new(udp),
            EngineConfig {
                identity,
                probe_period: config.probe_period,
                push_pull_every: config.push_pull_every,
                tombstone_ttl: config.tombstone_ttl,
                down_drain: config.down_drain,
            },
            cmd_rx,
            shutdown,
        );
        tokio::spawn(async move {
            engine.await;
            server.abort();
        });
        Ok(NetDb {
            shared,
            events,
            bound,
        })
    }

    /// The UDP/TCP address actually bound (useful with port 0).
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Full-state push-pull with each seed (the late joiner gets the whole table and member list
    /// at once), then a SWIM announce to it, waiting (up to 2 s) until the seed has
    /// answered it. Succeeds if at least one seed answered the push-pull.
    ///
    /// Why wait: the seed's member list is what the next joiner gets. If nodes join back to back
    /// and `join` returned before the seed processed our announce, the next joiner would not
    /// learn about us from the seed, and SWIM alone takes minutes to introduce two members in a
    /// large cluster (until one happens to probe the other, or the next periodic push-pull).
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<(), NetDbError> {
        // All seeds at once: one that is unreachable (a node cut off while we restarted)
        // must not hold the others back for its whole timeout.
        let attempts = seeds.iter().map(|seed| async move {
            match pushpull::exchange(&self.shared, *seed).await {
                Ok(member) => {
                    let _ = self.shared.cmd.send(Cmd::Announce(member.clone()));
                    self.wait_alive(&member).await;
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(%seed, error = %Chain(&e), "netdb: join through seed failed");
                    Err(e)
                }
            }
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results.iter().any(Result::is_ok);
        let last = results.into_iter().filter_map(Result::err).last();
        match (ok, last) {
            (true, _) | (false, None) => Ok(()),
            (false, Some(e)) => Err(NetDbError::Join(seeds.len(), Box::new(e))),
        }
    }

    /// Waits until SWIM reports `member` alive (the seed answered our announce with its feed).
    /// Only logs on timeout: the push-pull worked, so SWIM will get there, just later.
    async fn wait_alive(&self, member: &Member) {
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        loop {
            let up = self.shared.member_up.notified();
            tokio::pin!(up);
            // Registered before checking, so a wake-up between the check and the wait is kept.
            up.as_mut().enable();
            let alive = lock(&self.shared.members)
                .iter()
                .any(|(m, alive)| *alive && m.node_id == member.node_id && m.addr == member.addr);
            if alive {
                return;
            }
            if tokio::time::timeout_at(deadline, up).await.is_err() {
                tracing::warn!(node = %member.node_id, addr = %member.addr,
                    "netdb: seed did not answer the SWIM announce in time");
                return;
            }
        }
    }

    /// Attach to a network: from now on its entries are kept and reported. Pulls the current
    /// table from a peer so the node does not wait for the next periodic push-pull.
    pub fn join_network(&self, network_id: &str) {
        let mut table = lock(&self.shared.table);
        if table.is_joined(network_id) {
            return;
        }
        table.join_network(network_id);
        drop(table);
        let peers: Vec<SocketAddr> = lock(&self.shared.members)
            .iter()
            .filter(|(_, alive)| **alive)
            .map(|(m, _)| m.addr)
            .take(1)
            .collect();
        for peer in peers {
            let shared = self.shared.clone();
            tokio::spawn(async move { pushpull::exchange(&shared, peer).await });
        }
    }

    /// Detach: our own endpoints there are deleted and the network's table is dropped.
    pub fn leave_network(&self, network_id: &str) {
        lock(&self.shared.table).leave_network(network_id);
        let _ = self.shared.cmd.send(Cmd::Flush);
    }

    /// Adds or updates one of this node's endpoints (joins its network if needed).
    pub fn put_endpoint(&self, e: Endpoint) {
        lock(&self.shared.table).local_put(e);
        let _ = self.shared.cmd.send(Cmd::Flush);
    }

    /// Deletes an endpoint, leaving a tombstone for `tombstone_ttl`.
    pub fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) {
        lock(&self.shared.table).local_delete(network_id, endpoint_id);
        let _ = self.shared.cmd.send(Cmd::Flush);
    }

    /// Live entries of a joined network, without those of nodes currently down.
    pub fn endpoints(&self, network_id: &str) -> Vec<Endpoint> {
        lock(&self.shared.table).live(network_id)
    }

    /// One live entry of a joined network (`None` if deleted, unknown, or its node is down):
    /// what a follower of [`Self::subscribe`] reads back for a key a change named.
    pub fn endpoint(&self, network_id: &str, endpoint_id: &str) -> Option<Endpoint> {
        lock(&self.shared.table).live_one(network_id, endpoint_id)
    }

    /// Changes to live entries (what DNS and the load balancer follow).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    /// Rotation without a gap: receive with any of `keys`, send with `keys[primary]`. Roll out
    /// by adding the new key everywhere, then switching primary, then removing the old one.
    pub fn set_keys(&self, keys: Vec<[u8; 32]>, primary: usize) {
        if keys.is_empty() {
            tracing::warn!("netdb: refusing an empty key list");
            return;
        }
        *self.shared.keys.write().unwrap_or_else(|p| p.into_inner()) = Keyring::new(&keys, primary);
    }

    /// Signs our records with `key` from now on; a new key (a renewed certificate) re-publishes
    /// them signed with it.
    pub fn set_signing_key(&self, key: SigningKey) {
        lock(&self.shared.table).set_signer(key);
        let _ = self.shared.cmd.send(Cmd::Flush);
    }

    /// The public key our records are signed with, if any.
    pub fn signing_public_key(&self) -> Option<Vec<u8>> {
        lock(&self.shared.table).signer_public_key()
    }

    /// Every node's certified public key, as the managers last sent them.
    pub fn set_peer_keys(&self, keys: HashMap<String, Vec<u8>>) {
        lock(&self.shared.table).set_peer_keys(keys);
    }

    /// Known SWIM members (node id, gossip address, alive), without ourselves.
    pub fn members(&self) -> Vec<(String, SocketAddr, bool)> {
        member::members(&lock(&self.shared.members))
    }

    /// How many members are alive, without ourselves: [`NetDb::members`] without building the
    /// list (cheap enough to poll on 1,000 members).
    pub fn alive_members(&self) -> usize {
        lock(&self.shared.members)
            .values()
            .filter(|alive| **alive)
            .count()
    }

    /// Has a peer's whole table been merged here (a push-pull, either side of it)? Until then
    /// the table may hold only what this node published itself.
    pub fn has_synced(&self) -> bool {
        self.shared
            .stats
            .pushpulls_merged
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    }

    pub fn stats(&self) -> NetDbStats {
        self.shared.stats.snapshot()
    }
}

/// How long `join` waits for a seed's SWIM answer after the push-pull succeeded.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// Binds UDP then TCP on the same port; with port 0 the TCP port may already be taken, so retry.
async fn bind_both(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), NetDbError> {
    let mut attempts = 0;
    loop {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| NetDbError::BindUdp(bind, e))?;
        let addr = udp.local_addr().map_err(|e| NetDbError::BindUdp(bind, e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 && attempts < 10 => {
                attempts += 1;
                tracing::debug!(%addr, err = %e, "netdb: tcp port taken, retrying");
            }
            Err(e) => return Err(NetDbError::BindTcp(addr, e)),
        }
    }
}
