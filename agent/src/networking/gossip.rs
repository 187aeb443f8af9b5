//! Starting the network DB once the leader has sent the gossip keys (with every heartbeat
//! answer), following key rotations, and re-joining when this node sees no live member.
//!
//! The last keys and peers are kept in `<state>/gossip.json` (mode 0600, like the node's TLS
//! key next to it), so an agent restarted while every manager is down gossips again at once:
//! otherwise the other nodes would declare it down and withdraw its tasks' endpoints.
//!
//! Entry signatures: the network DB signs this node's entries with its TLS key, which the swarm
//! runtime hands over in memory whenever a membership starts (`on_node_key`: on a locked
//! manager the file on disk is sealed), and checks everyone's against the keys the managers
//! send (`GossipConfig::node_keys`). A renewed certificate brings a new key the same way.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use rand::seq::SliceRandom as _;
use shoal_control::{
    cluster::gossip::{GossipConfig, GossipKey, primary_index},
    error_chain::Chain,
    netdb::{NetDb, NetDbConfig, SigningKey},
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{NodeNetworking, remote};

/// How many peers a node joins the network DB through, at once.
const JOIN_SEEDS: usize = 3;

/// How long a node alone in the network DB waits between attempts to join it again.
const REJOIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct GossipState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// A start is under way (or done): heartbeats must not start a second one.
    starting: bool,
    /// The keys last given to the network DB.
    keys: Vec<GossipKey>,
    last_join: Option<Instant>,
    /// Stops the running network DB.
    stop: Option<watch::Sender<bool>>,
    /// What `<state>/gossip.json` holds.
    saved: Option<GossipConfig>,
    /// The node keys last given to the network DB.
    node_keys: Vec<(String, Vec<u8>)>,
    /// This node's own key, as the swarm runtime last handed it over.
    own_key: Option<SigningKey>,
}

impl GossipState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn peer_keys(config: &GossipConfig) -> HashMap<String, Vec<u8>> {
    config.node_keys.iter().cloned().collect()
}

fn raw_keys(keys: &[GossipKey]) -> (Vec<[u8; 32]>, usize) {
    (
        keys.iter().map(|k| k.key).collect(),
        primary_index(keys.len()),
    )
}

impl NodeNetworking {
    /// How many gossip keys this node holds (from the leader's last heartbeat answer).
    pub fn gossip_key_count(&self) -> usize {
        self.gossip.lock().keys.len()
    }

    /// What the leader says about gossip, with each heartbeat: starts the network DB the
    /// first time, applies key rotations, and retries joining while alone.
    pub fn on_gossip(self: &Arc<Self>, config: &GossipConfig) {
        let Some(bind) = self.config.gossip_addr else {
            return;
        };
        if config.keys.is_empty() {
            return;
        }
        // A few random peers are enough to join through (the push-pull brings the member list).
        let mut peers: Vec<SocketAddr> = config
            .peers
            .iter()
            .filter(|(id, _)| *id != self.config.node_id)
            .map(|(_, ip)| SocketAddr::new(*ip, bind.port()))
            .collect();
        peers.shuffle(&mut rand::rng());
        peers.truncate(JOIN_SEEDS);
        let mut state = self.gossip.lock();
        if state.saved.as_ref() != Some(config) {
            self.save_gossip(config);
            state.saved = Some(config.clone());
        }
        let Some(db) = self.db() else {
            if !state.starting {
                state.starting = true;
                state.keys = config.keys.clone();
                state.node_keys = config.node_keys.clone();
                self.runtime
                    .spawn(start(self.clone(), bind, config.clone(), peers));
            }
            return;
        };
        if state.node_keys != config.node_keys {
            db.set_peer_keys(peer_keys(config));
            state.node_keys = config.node_keys.clone();
        }
        if state.keys != config.keys {
            let (keys, primary) = raw_keys(&config.keys);
            db.set_keys(keys, primary);
            state.keys = config.keys.clone();
            info!(keys = config.keys.len(), "gossip keys updated");
        }
        let alone = db.members().iter().all(|(_, _, alive)| !alive);
        let due = state.last_join.is_none_or(|t| t.elapsed() >= REJOIN_EVERY);
        if alone && due && !peers.is_empty() {
            state.last_join = Some(Instant::now());
            self.runtime.spawn(async move {
                if let Err(e) = db.join(&peers).await {
                    warn!(error = %Chain(&e), "joining the network DB");
                }
            });
        }
    }

    /// The swarm runtime's copy of this node's key (PEM, in the clear): kept for a network
    /// DB not started yet, and given to the running one when it differs (it re-publishes the
    /// node's entries signed with it).
    pub fn on_node_key(&self, key_pem: &str) {
        let key = match SigningKey::from_pem(key_pem) {
            Ok(key) => key,
            Err(e) => {
                warn!(error = %Chain(&e), "the node key cannot sign network DB entries");
                return;
            }
        };
        let public = key.public_key().to_vec();
        self.gossip.lock().own_key = Some(key.clone());
        if let Some(db) = self.db()
            && db.signing_public_key().as_deref() != Some(public.as_slice())
        {
            info!("network DB entries signed with the node's current key");
            db.set_signing_key(key);
        }
    }

    /// Starts the network DB from the settings saved by the previous agent, if any.
    pub fn resume_gossip(self: &Arc<Self>) {
        let path = self.saved_gossip_path();
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        match serde_json::from_slice::<GossipConfig>(&bytes) {
            Ok(config) => {
                info!("network DB resumed from the saved keys and peers");
                self.on_gossip(&config);
            }
            Err(e) => {
                warn!(file = %path.display(), error = %Chain(&e), "unreadable saved gossip settings")
            }
        }
    }

    fn saved_gossip_path(&self) -> std::path::PathBuf {
        self.config.state_dir.join("gossip.json")
    }

    fn save_gossip(&self, config: &GossipConfig) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.saved_gossip_path();
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec(config)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            warn!(file = %path.display(), error = %Chain(&e), "saving gossip settings");
        }
    }

    /// Stops the network DB (the node leaves the swarm); a later join starts a new one.
    pub(super) fn stop_gossip(&self) {
        let _ = std::fs::remove_file(self.saved_gossip_path());
        let mut state = self.gossip.lock();
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(true);
        }
        *state = Inner::default();
        drop(state);
        *self.netdb.write().unwrap_or_else(PoisonError::into_inner) = None;
        // Other nodes' endpoints are no longer seen.
        self.mark_dirty(|d| d.all = true);
    }
}

async fn start(
    networking: Arc<NodeNetworking>,
    bind: SocketAddr,
    gossip: GossipConfig,
    peers: Vec<SocketAddr>,
) {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (raw, primary) = raw_keys(&gossip.keys);
    let mut config = NetDbConfig::new(networking.config.node_id.clone(), bind, raw[primary]);
    config.keys = raw;
    config.primary_key = primary;
    config.signing_key = networking.gossip.lock().own_key.clone();
    config.peer_keys = peer_keys(&gossip);
    let shutdown = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let db = match NetDb::start(config, shutdown).await {
        Ok(db) => Arc::new(db),
        Err(e) => {
            warn!(error = %Chain(&e), "starting the network DB (retried with the next heartbeat)");
            networking.gossip.lock().starting = false;
            return;
        }
    };
    let changes = db.subscribe();
    // Our endpoints go in before we meet anyone: a restarted agent then re-asserts its live
    // endpoints instead of withdrawing them for a moment (which would cut working traffic).
    let n = networking.clone();
    let published = db.clone();
    let publish = tokio::task::spawn_blocking(move || {
        let local = n.local();
        for id in local.networks.keys() {
            published.join_network(id);
        }
        for endpoint in local.endpoints.values() {
            published.put_endpoint(endpoint.clone());
        }
        *n.netdb.write().unwrap_or_else(PoisonError::into_inner) = Some(published.clone());
        for (id, net) in &local.networks {
            remote::program_all(&n.config.node_id, &net.sandbox, &published.endpoints(id));
        }
    })
    .await;
    if let Err(e) = publish {
        warn!(error = %Chain(&e), "publishing local endpoints");
    }
    // A key handed over while the DB was starting found no DB to give it to (`on_node_key`
    // stores it first, this looks after the DB is registered: one of the two sees the other).
    let own_key = networking.gossip.lock().own_key.clone();
    if let Some(key) = own_key
        && db.signing_public_key().as_deref() != Some(key.public_key())
    {
        info!("network DB entries signed with the node's current key");
        db.set_signing_key(key);
    }
    networking.gossip.lock().stop = Some(stop_tx);
    tokio::spawn(remote::follow(networking.clone(), changes));
    tokio::spawn(super::dns::follow(networking.clone(), db.subscribe()));
    // What the DB held before the follower subscribed: read every endpoint again.
    networking.mark_dirty(|d| d.all = true);
    let n = networking.clone();
    let _ = tokio::task::spawn_blocking(move || n.refresh_services()).await;
    info!(%bind, peers = peers.len(), "network DB started");
    if !peers.is_empty() {
        networking.gossip.lock().last_join = Some(Instant::now());
        if let Err(e) = db.join(&peers).await {
            warn!(error = %Chain(&e), "joining the network DB (retried while alone)");
        }
    }
}
