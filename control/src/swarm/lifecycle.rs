//! Membership changes: `swarm init`, `swarm join`, `swarm leave`, resuming after a restart,
//! and switching role when the node is promoted or demoted.
//!
//! Each change runs under the swarm's transition lock and is all-or-nothing: on any failure
//! the membership files are removed and anything started is stopped.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use openraft::BasicNode;
use tracing::{info, warn};

use super::{
    Active, Swarm, SwarmSummary,
    autolock::Resumed,
    convert::parse_role,
    error::Error,
    leader::{Leader, Route, check_cert_expiry},
    persist::{self, SwarmFile},
};
use crate::wire_limits::cluster_client;
use crate::{
    MANAGER_PORT,
    api::{
        AddRaftMemberRequest, AdmitRequest, InitRequest, InitResponse, JoinSwarmRequest,
        JoinSwarmResponse, NodeInfo, UpdateNodeRequest,
    },
    clock::now_secs,
    cluster::{Availability, ClusterInfo, Command, NodeRecord, Role, gossip::GossipKey, raft_id},
    error_chain::Chain,
    identity::NodeId,
    pki::{self, ClusterCa, JoinToken, NodeCredentials},
    raft::{Raft, dek, seal::UnlockKey},
};

const DEFAULT_POOL: &str = "10.0.0.0/8";
const DEFAULT_SUBNET_SIZE: u8 = 24;
impl Swarm {
    /// For `shoal info`.
    pub async fn summary(&self) -> SwarmSummary {
        let active = match self.active().await {
            Ok(active) => active,
            Err(Error::Locked) => {
                return SwarmSummary {
                    locked: true,
                    cluster_id: self.locked().map(|f| f.cluster_id).unwrap_or_default(),
                    is_manager: true,
                    ..SwarmSummary::default()
                };
            }
            Err(e @ Error::CertificateExpired { .. }) => {
                return SwarmSummary {
                    error: Some(e.to_string()),
                    ..SwarmSummary::default()
                };
            }
            Err(_) => return SwarmSummary::default(),
        };
        let (cluster_id, role) = {
            let file = active.file();
            (file.cluster_id, file.role)
        };
        // Only managers may list the nodes (a worker's `info` shows no counts, as Docker's).
        let counts = if role == Role::Manager {
            self.nodes().await
        } else {
            Ok(Vec::new())
        };
        let (managers, nodes) = match counts {
            Ok(nodes) => (
                nodes.iter().filter(|n| n.role == "manager").count() as u32,
                nodes.len() as u32,
            ),
            Err(e) => {
                tracing::debug!(cause = %Chain(&e), "cannot count nodes for info");
                (0, 0)
            }
        };
        SwarmSummary {
            active: true,
            locked: false,
            cluster_id,
            is_manager: role == Role::Manager,
            managers,
            nodes,
            error: None,
        }
    }

    /// Resumes the membership kept in the state dir, after an agent restart (even SIGKILL).
    pub async fn resume(&self) -> Result<(), Error> {
        let _guard = self.inner.transitions.lock().await;
        let state_dir = &self.inner.config.state_dir;
        let file =
            persist::load(state_dir).map_err(Error::internal("reading the swarm membership"))?;
        let Some(file) = file else {
            return Ok(());
        };
        let at_rest = match file.role {
            Role::Worker => None,
            Role::Manager => match self.resume_data_key()? {
                Resumed::Open(at_rest) => Some(at_rest),
                Resumed::Locked => {
                    info!(cluster_id = %file.cluster_id, "swarm is locked: waiting for `swarm unlock`");
                    *self.locked_file() = Some(file);
                    return Ok(());
                }
            },
        };
        let creds = self.load_credentials(at_rest.as_ref().map(|a| &a.dek))?;
        // An expired certificate: a manager re-issues its own; a worker is told, in one line
        // (logged, and the answer to every call), to join again, and the agent runs on.
        let Ok(creds) = self.resumable_credentials(creds, file.role, at_rest.as_ref()) else {
            return Ok(());
        };
        info!(cluster_id = %file.cluster_id, role = file.role.as_str(), "resuming swarm membership");
        let active = self.activate(file, creds, at_rest).await?;
        *self.inner.active.write().await = Some(active);
        Ok(())
    }

    /// `swarm init`.
    pub async fn init(&self, request: InitRequest) -> Result<InitResponse, Error> {
        let _guard = self.inner.transitions.lock().await;
        self.check_not_in_swarm().await?;
        let listen_addr = self.listen_addr(&request.listen_addr)?;
        let addr = self.advertise_addr(&request.advertise_addr, listen_addr)?;
        let data_path_addr = self.data_path_addr(&request.data_path_addr, addr)?;
        let (pools, subnet_size) = validate_pools(
            &request.default_addr_pools,
            request.default_addr_pool_mask_length,
        )?;
        let cert_expiry = match request.cert_expiry_secs {
            0 => pki::DEFAULT_NODE_CERT_EXPIRY,
            secs => {
                check_cert_expiry(secs)?;
                Duration::from_secs(secs)
            }
        };

        let node_id = self.node_id().to_string();
        let cluster_id = NodeId::generate().to_string();
        let unlock = request.autolock.then(UnlockKey::generate);
        let ca = ClusterCa::generate(&cluster_id).map_err(Error::pki("creating the cluster CA"))?;
        let (cert_pem, key_pem) = ca
            .issue_leaf(&node_id, Role::Manager, &cluster_id, cert_expiry)
            .map_err(Error::pki("issuing this node's certificate"))?;
        let creds = NodeCredentials {
            ca_cert_pem: ca.cert_pem.clone(),
            cert_pem,
            key_pem,
        };
        let cluster = ClusterInfo {
            id: cluster_id.clone(),
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            worker_secret: pki::generate_secret(),
            manager_secret: pki::generate_secret(),
            default_addr_pools: pools,
            subnet_size,
            heartbeat_period_ms: match request.dispatcher_heartbeat_ms {
                0 => self.inner.config.heartbeat_period.as_millis() as u64,
                ms => ms,
            },
            created_at: now_secs(),
            gossip_keys: vec![GossipKey::generate(now_secs() * 1000)],
            unlock_key: unlock.as_ref().map(ToString::to_string),
            version: 1,
            updated_at_ms: 0,
        };
        let worker_token = JoinToken::new(
            ca.digest().map_err(Error::pki("digesting the CA"))?,
            cluster.worker_secret.clone(),
        );
        let node = self.node_record(Role::Manager, addr, data_path_addr);
        let file = SwarmFile {
            cluster_id,
            role: Role::Manager,
            addr,
            data_path_addr,
            manager_addrs: vec![addr],
            listen_addr: chosen(listen_addr, self.inner.config.listen_addr),
        };

        let result = async {
            let at_rest = self.new_data_key(unlock.as_ref())?;
            let seal_tls = unlock.is_some().then_some(&at_rest.dek);
            self.save_membership(&file, &creds, seal_tls)?;
            let active = self.activate(file, creds, Some(at_rest)).await?;
            *self.inner.active.write().await = Some(Arc::clone(&active));
            let manager = active.manager.as_ref().ok_or_else(|| Error::Internal {
                what: "initializing raft",
                source: "a manager without raft".into(),
            })?;
            let members = BTreeMap::from([(raft_id(&node_id), BasicNode::new(addr.to_string()))]);
            manager
                .raft
                .initialize(members)
                .await
                .map_err(Error::internal("initializing raft"))?;
            wait_for_leader(&manager.raft, Duration::from_secs(10)).await?;
            let leader = Leader::of(self, &active).ok_or(Error::NoLeader)?;
            leader.propose(Command::Init { cluster, node }).await?;
            if request.cert_expiry_secs != 0 {
                let secs = request.cert_expiry_secs;
                leader.propose(Command::SetCertExpiry { secs }).await?;
            }
            leader.create_ingress().await
        }
        .await;
        if let Err(e) = result {
            self.abandon().await;
            return Err(e);
        }
        info!(%addr, "swarm initialized");
        Ok(InitResponse {
            node_id,
            worker_token: worker_token.to_string(),
            manager_addr: addr.to_string(),
            unlock_key: unlock.map(|k| k.to_string()).unwrap_or_default(),
        })
    }

    /// `swarm join`: admitted by a manager with a token, without trusting it on first use.
    pub async fn join(&self, request: JoinSwarmRequest) -> Result<JoinSwarmResponse, Error> {
        let _guard = self.inner.transitions.lock().await;
        self.check_not_in_swarm().await?;
        let token: JoinToken = request
            .token
            .trim()
            .parse()
            .map_err(|e: pki::PkiError| Error::invalid(e.to_string()))?;
        let remote = parse_addr(&request.remote_addr, MANAGER_PORT)
            .map_err(|e| Error::invalid(format!("invalid manager address: {e}")))?;
        let listen_addr = self.listen_addr(&request.listen_addr)?;
        let addr = self.advertise_addr(&request.advertise_addr, listen_addr)?;
        let data_path_addr = self.data_path_addr(&request.data_path_addr, addr)?;

        let (channel, verified_ca) = pki::connect_for_join(remote, &token).await.map_err(|e| {
            Error::unavailable_because(format!("cannot join the swarm at {remote}"), e)
        })?;
        let admitted = cluster_client(channel)
            .admit(AdmitRequest {
                token: token.to_string(),
                node_id: self.node_id().to_string(),
                hostname: self.inner.config.hostname.clone(),
                addr: addr.to_string(),
                data_path_addr: data_path_addr.to_string(),
                nano_cpus: self.inner.config.resources.nano_cpus,
                memory_bytes: self.inner.config.resources.memory_bytes,
            })
            .await?
            .into_inner();
        // The roots it sends (two during a root rotation) must include the CA the token
        // names, which the manager's own certificate was verified against.
        if !pki::bundle_holds(&admitted.ca_cert_pem, &verified_ca) {
            return Err(Error::denied(
                "the manager's certificates do not match the CA it presented",
            ));
        }
        let role = parse_role(&admitted.role)?;
        let creds = NodeCredentials {
            ca_cert_pem: admitted.ca_cert_pem,
            cert_pem: admitted.cert_pem,
            key_pem: admitted.key_pem,
        };
        let mut manager_addrs: Vec<SocketAddr> = admitted
            .manager_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if manager_addrs.is_empty() {
            manager_addrs.push(remote);
        }
        let file = SwarmFile {
            cluster_id: admitted.cluster_id,
            role,
            addr,
            data_path_addr,
            manager_addrs,
            listen_addr: chosen(listen_addr, self.inner.config.listen_addr),
        };

        let result = async {
            // In the clear until the store catches up: the manager then seals it with the
            // swarm's unlock key, if autolock is on.
            let at_rest = match role {
                Role::Manager => Some(self.new_data_key(None)?),
                Role::Worker => None,
            };
            self.save_membership(&file, &creds, None)?;
            let active = self.activate(file, creds, at_rest).await?;
            *self.inner.active.write().await = Some(Arc::clone(&active));
            if role == Role::Manager {
                self.become_raft_member(&active).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.abandon().await;
            return Err(e);
        }
        info!(%remote, role = role.as_str(), "joined the swarm");
        Ok(JoinSwarmResponse {
            role: role.as_str().to_string(),
        })
    }

    /// `swarm leave`. A manager is refused (without `force`) when it is the last one or when
    /// its leaving would cost the swarm its Raft quorum; otherwise it is demoted first.
    pub async fn leave(&self, force: bool) -> Result<(), Error> {
        {
            let _guard = self.inner.transitions.lock().await;
            if self.leave_locked(force)? {
                info!("left the swarm while locked");
                return Ok(());
            }
            if self.leave_expired(force)? {
                info!("left the swarm its expired certificate could no longer reach");
                return Ok(());
            }
        }
        let active = self.active().await?;
        if active.role() == Role::Manager && !force {
            self.check_manager_may_leave().await?;
            // Demotion goes through the leader, which removes us from Raft cleanly.
            let demote = UpdateNodeRequest {
                node: self.node_id().to_string(),
                role: Role::Worker.as_str().to_string(),
                ..Default::default()
            };
            match self.route().await? {
                Route::Here(leader) => leader.update_node(demote).await.map(drop)?,
                Route::Forward(mut client) => client.update_node(demote).await.map(drop)?,
            }
        }
        let _guard = self.inner.transitions.lock().await;
        self.abandon().await;
        // Stopping waits out each task's grace period: not on an async worker.
        let runner = Arc::clone(&self.inner.runner);
        if let Err(e) = tokio::task::spawn_blocking(move || runner.stop_all()).await {
            warn!(cause = %Chain(&e), "stopping the tasks failed");
        }
        info!("left the swarm");
        Ok(())
    }

    /// Refuses init and join on a node already in a swarm, locked or not.
    async fn check_not_in_swarm(&self) -> Result<(), Error> {
        if self.locked().is_some() {
            return Err(Error::Locked);
        }
        if let Some(expired_on) = self.expired() {
            return Err(Error::CertificateExpired { expired_on });
        }
        if self.inner.active.read().await.is_some() {
            return Err(Error::AlreadyInSwarm);
        }
        Ok(())
    }

    /// Counts, in the leader's view, the managers that would remain reachable.
    async fn check_manager_may_leave(&self) -> Result<(), Error> {
        let nodes: Vec<NodeInfo> = self.nodes().await?;
        let others: Vec<_> = nodes
            .iter()
            .filter(|n| n.role == Role::Manager.as_str() && n.id != self.node_id())
            .collect();
        if others.is_empty() {
            return Err(Error::refused(
                "You are attempting to leave the swarm on a node that is participating as a \
                 manager. Removing the last manager erases all current state of the swarm. Use \
                 `--force` to ignore this message.",
            ));
        }
        let reachable = others
            .iter()
            .filter(|n| n.manager_status == "leader" || n.manager_status == "reachable")
            .count();
        let remaining = others.len();
        let quorum = remaining / 2 + 1;
        if reachable < quorum {
            return Err(Error::refused(format!(
                "You are attempting to leave the swarm on a node that is participating as a \
                 manager. Leaving the swarm will leave you with {reachable} managers out of \
                 {remaining}. This means Raft quorum will be lost and your swarm will become \
                 inaccessible. Use `--force` to ignore this message."
            )));
        }
        Ok(())
    }

    /// Follows a role change decided by the leader (promotion or demotion): restarts the
    /// membership with Raft started or stopped.
    pub(super) async fn switch_role(&self, role: Role) -> Result<(), Error> {
        let _guard = self.inner.transitions.lock().await;
        let Some(old) = self.inner.active.write().await.take() else {
            return Ok(());
        };
        let mut file = old.file();
        if file.role == role {
            *self.inner.active.write().await = Some(old);
            return Ok(());
        }
        info!(
            from = file.role.as_str(),
            to = role.as_str(),
            "switching role"
        );
        // A certificate for the new role, asked for while the old membership can still reach
        // the managers. Authorization never trusts the certificate's role, so keeping the old
        // one when no manager answers is safe; the next switch asks again.
        let creds = match self.renew_credentials(&old).await {
            Ok(creds) => creds,
            Err(e) => {
                warn!(cause = %Chain(&e), "keeping the old certificate: renewal failed");
                old.tls.creds()
            }
        };
        old.deactivate().await;
        drop(old);
        let state_dir = &self.inner.config.state_dir;
        let at_rest = match role {
            Role::Worker => {
                // A demoted manager's log is of no further use, and stale if it is promoted
                // again; so is its data key.
                let _ = std::fs::remove_file(persist::raft_path(state_dir));
                let _ = dek::remove(&persist::swarm_dir(state_dir));
                None
            }
            Role::Manager => Some(self.new_data_key(None)?),
        };
        file.role = role;
        // In the clear: a promoted manager seals it once its store says autolock is on.
        self.save_membership(&file, &creds, None)?;
        let active = self.activate(file, creds, at_rest).await?;
        *self.inner.active.write().await = Some(Arc::clone(&active));
        if role == Role::Manager {
            self.become_raft_member(&active).await?;
        }
        Ok(())
    }

    /// Asks the leader to make this (manager) node a Raft voter, now that its Raft server is up.
    async fn become_raft_member(&self, active: &Active) -> Result<(), Error> {
        let request = AddRaftMemberRequest {
            node_id: self.node_id().to_string(),
            addr: active.file().addr.to_string(),
        };
        // The leader may be changing hands or still learning of us: retry for a while.
        let mut last = Error::unavailable("no manager answered");
        for _ in 0..20 {
            for addr in active.managers_leader_first() {
                match active
                    .peers
                    .client(addr)?
                    .add_raft_member(request.clone())
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }

    fn node_record(&self, role: Role, addr: SocketAddr, data_path_addr: IpAddr) -> NodeRecord {
        NodeRecord {
            id: self.node_id().to_string(),
            hostname: self.inner.config.hostname.clone(),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            addr,
            data_path_addr,
            created_at: now_secs(),
            resources: self.inner.config.resources,
        }
    }

    /// Where the cluster API is to listen: `requested` (`--listen-addr`, its port 2377 when
    /// not given, as Docker's) or the agent's own.
    fn listen_addr(&self, requested: &str) -> Result<SocketAddr, Error> {
        if requested.is_empty() {
            return Ok(self.inner.config.listen_addr);
        }
        parse_addr(requested, MANAGER_PORT)
            .map_err(|e| Error::invalid(format!("invalid --listen-addr: {e}")))
    }

    /// The address other nodes reach this one at; its port, when not given, is the one the
    /// cluster API listens on (Docker's rule).
    fn advertise_addr(&self, requested: &str, listen: SocketAddr) -> Result<SocketAddr, Error> {
        if !requested.is_empty() {
            return parse_addr(requested, listen.port())
                .map_err(|e| Error::invalid(format!("invalid --advertise-addr: {e}")));
        }
        let guessed = self.inner.config.advertise_addr.ok_or_else(|| {
            Error::invalid(
                "could not choose an IP address to advertise since this system has several \
                 addresses or none; specify one with --advertise-addr",
            )
        })?;
        if listen == self.inner.config.listen_addr {
            Ok(guessed)
        } else {
            Ok(SocketAddr::new(guessed.ip(), listen.port()))
        }
    }

    fn data_path_addr(&self, requested: &str, advertise: SocketAddr) -> Result<IpAddr, Error> {
        if !requested.is_empty() {
            return requested
                .parse()
                .map_err(|_| Error::invalid(format!("invalid --data-path-addr {requested:?}")));
        }
        Ok(self.inner.config.data_path_addr.unwrap_or(advertise.ip()))
    }
}

/// What the swarm file records of a listen address: only one that differs from the agent's
/// own, so that a later `--listen-addr` on the agent still applies to a node that never chose.
fn chosen(listen: SocketAddr, agents: SocketAddr) -> Option<SocketAddr> {
    (listen != agents).then_some(listen)
}

/// An address that is neither `IP` nor `IP:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or IP:PORT")]
pub struct BadAddress(String);

/// Parses `IP` or `IP:PORT`.
pub fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, BadAddress> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| BadAddress(s.to_string()))
}

/// Checks `--default-addr-pool` and `--default-addr-pool-mask-length`.
fn validate_pools(pools: &[String], mask_length: u32) -> Result<(Vec<String>, u8), Error> {
    let subnet_size = if mask_length == 0 {
        DEFAULT_SUBNET_SIZE
    } else {
        u8::try_from(mask_length).unwrap_or(u8::MAX)
    };
    let pools: Vec<String> = if pools.is_empty() {
        vec![DEFAULT_POOL.to_string()]
    } else {
        pools.to_vec()
    };
    let mut parsed: Vec<ipnet::Ipv4Net> = Vec::new();
    for pool in &pools {
        let net: ipnet::Ipv4Net = pool.trim().parse().map_err(|_| {
            Error::invalid(format!(
                "invalid default address pool {pool:?}: not an IPv4 CIDR"
            ))
        })?;
        if net.network() != net.addr() {
            return Err(Error::invalid(format!(
                "invalid default address pool {pool:?}: host bits are set (did you mean {}?)",
                net.trunc()
            )));
        }
        if subnet_size < net.prefix_len() || subnet_size > 29 {
            return Err(Error::invalid(format!(
                "invalid default address pool mask length {subnet_size}: it must be between {} \
                 (the pool {pool}) and 29",
                net.prefix_len()
            )));
        }
        if let Some(other) = parsed.iter().find(|p| p.contains(&net) || net.contains(*p)) {
            return Err(Error::invalid(format!(
                "invalid default address pools: {pool} overlaps {other}"
            )));
        }
        parsed.push(net);
    }
    Ok((
        parsed.iter().map(ToString::to_string).collect(),
        subnet_size,
    ))
}

async fn wait_for_leader(raft: &Raft, timeout: Duration) -> Result<(), Error> {
    raft.wait(Some(timeout))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .map(|_| ())
        .map_err(|e| Error::unavailable_because("no raft leader was elected", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_validated() {
        let ok = validate_pools(&[], 0).unwrap();
        assert_eq!(ok, (vec!["10.0.0.0/8".to_string()], 24));
        let ok = validate_pools(&["10.20.0.0/16".into()], 26).unwrap();
        assert_eq!(ok.1, 26);
        for (pools, mask) in [
            (vec!["10.0.0.0/33".to_string()], 0),
            (vec!["not-a-cidr".to_string()], 0),
            (vec!["10.0.0.1/8".to_string()], 0),
            (vec!["10.0.0.0/16".to_string()], 8),
            (vec!["10.0.0.0/16".to_string()], 30),
            (vec!["10.0.0.0/8".to_string(), "10.1.0.0/16".to_string()], 0),
        ] {
            assert!(
                validate_pools(&pools, mask).is_err(),
                "{pools:?} /{mask} accepted"
            );
        }
    }

    #[test]
    fn addresses_take_a_default_port() {
        assert_eq!(
            parse_addr("10.0.0.1", 2377).unwrap(),
            "10.0.0.1:2377".parse().unwrap()
        );
        assert_eq!(
            parse_addr("10.0.0.1:99", 2377).unwrap(),
            "10.0.0.1:99".parse().unwrap()
        );
        assert!(parse_addr("manager", 2377).is_err());
    }
}
