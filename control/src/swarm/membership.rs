//! An active membership's machinery: starting what it runs (the 2377 server with its TLS,
//! Raft on managers, the heartbeat, certificate renewal, leadership and orchestration loops),
//! saving its files, and abandoning it. `lifecycle.rs` decides when; this file knows how.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::{net::TcpListener, sync::watch};
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use super::{
    Active, ManagerRole, Swarm,
    authz::StoreRevocations,
    autolock::{self, AtRest},
    error::Error,
    grpc::ClusterService,
    leader::{CertReports, liveness, orchestrate},
    node::{
        certs::{self, CertWatch},
        heartbeat,
    },
    peers::Peers,
    persist::{self, SwarmFile},
    raft_network::NetworkFactory,
    source_limits::{REQUEST_TIMEOUT, SourceLimits},
};
use crate::wire_limits::cluster_server;
use crate::{
    cluster::{Role, raft_id},
    error_chain::Chain,
    pki::{self, LiveTls, NodeCredentials},
    raft::{Raft, seal::SealKey, store},
};

impl Swarm {
    /// Starts everything an active membership runs: the 2377 server, Raft on managers (whose
    /// store `at_rest` seals), and the heartbeat loop.
    pub(super) async fn activate(
        &self,
        file: SwarmFile,
        creds: NodeCredentials,
        at_rest: Option<AtRest>,
    ) -> Result<Arc<Active>, Error> {
        let config = &self.inner.config;
        let listen_addr = file.listen_addr.unwrap_or(config.listen_addr);
        let listener = TcpListener::bind(listen_addr).await.map_err(|e| {
            Error::unavailable_because(format!("cannot listen on {listen_addr}"), e)
        })?;
        let tls = LiveTls::new(creds).map_err(Error::pki("TLS configuration"))?;
        let peers = Arc::new(Peers::new(Arc::clone(&tls)));
        self.inner.runner.node_key(&tls.creds().key_pem);
        let manager = match (file.role, &at_rest) {
            (Role::Manager, Some(at_rest)) => {
                Some(self.start_raft(Arc::clone(&peers), &at_rest.dek).await?)
            }
            (Role::Manager, None) => {
                return Err(Error::Internal {
                    what: "starting raft",
                    source: "a manager without a data key".into(),
                });
            }
            (Role::Worker, _) => None,
        };
        // A manager refuses removed nodes at the handshake, from its store; a worker serves
        // only the managers the leader names, checked on each call.
        if let Some(manager) = &manager {
            tls.set_revocations(Arc::new(StoreRevocations(manager.state_machine.clone())));
        }
        let (stop, stopped) = watch::channel(false);
        let active = Arc::new(Active {
            file: Mutex::new(file),
            tls: Arc::clone(&tls),
            certs: CertWatch::new(config.heartbeat_period),
            cert_reports: CertReports::default(),
            peers,
            manager,
            at_rest,
            liveness: liveness::Liveness::new(),
            leader_hint: Mutex::new(None),
            manager_ids: Mutex::new(Vec::new()),
            stop,
            tasks: Mutex::new(Vec::new()),
        });

        let server = {
            let mut stopped = stopped.clone();
            let limits = Arc::new(SourceLimits::default());
            let service = cluster_server(ClusterService::remote(self.clone(), Arc::clone(&limits)));
            // Every caller names its API version; one this node does not work with is refused.
            let service = InterceptedService::new(service, crate::version::check_caller);
            let incoming = pki::handshakes(limits.incoming(listener), tls);
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                if let Err(e) = tonic::transport::Server::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                {
                    warn!(cause = %Chain(&e), "cluster API server failed");
                }
            })
        };
        let beats = tokio::spawn(heartbeat::run(
            self.clone(),
            Arc::clone(&active),
            stopped.clone(),
        ));
        let renewal = tokio::spawn(certs::run(
            self.clone(),
            Arc::clone(&active),
            stopped.clone(),
        ));
        let mut tasks = vec![server, beats, renewal];
        if let Some(manager) = &active.manager {
            tasks.push(tokio::spawn(liveness::watch_leadership(
                self.clone(),
                Arc::clone(&active),
                manager.raft.clone(),
                stopped.clone(),
            )));
            tasks.push(tokio::spawn(autolock::follow_unlock_key(
                self.clone(),
                Arc::clone(&active),
                stopped.clone(),
            )));
            tasks.push(tokio::spawn(orchestrate::run(
                self.clone(),
                Arc::clone(&active),
                stopped,
            )));
        }
        active
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
        info!(listen = %listen_addr, "cluster API listening (mutual TLS)");
        Ok(active)
    }

    pub(super) async fn start_raft(
        &self,
        peers: Arc<Peers>,
        dek: &SealKey,
    ) -> Result<ManagerRole, Error> {
        let path = persist::raft_path(&self.inner.config.state_dir);
        let (log_store, state_machine) =
            store::open(&path, dek.clone()).map_err(Error::internal("opening the raft store"))?;
        let reader = state_machine.reader();
        let config = openraft::Config {
            cluster_name: "shoal".to_string(),
            // Leader loss is noticed within ~1-2 s, so a new leader is elected well within 5 s.
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            max_in_snapshot_log_to_keep: store::LOGS_KEPT_AFTER_SNAPSHOT,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(store::SNAPSHOT_EVERY),
            ..Default::default()
        }
        .validate()
        .map_err(Error::internal("raft configuration"))?;
        let raft = Raft::new(
            raft_id(self.node_id()),
            Arc::new(config),
            NetworkFactory { peers },
            log_store,
            state_machine,
        )
        .await
        .map_err(Error::internal("starting raft"))?;
        Ok(ManagerRole {
            raft,
            state_machine: reader,
            meshes: Arc::default(),
        })
    }

    /// Saves `swarm.json` and the credentials, the key sealed with `dek` if given (a manager
    /// under autolock).
    pub(super) fn save_membership(
        &self,
        file: &SwarmFile,
        creds: &NodeCredentials,
        dek: Option<&SealKey>,
    ) -> Result<(), Error> {
        let state_dir = &self.inner.config.state_dir;
        creds
            .save_sealed(&persist::swarm_dir(state_dir), dek)
            .map_err(Error::pki("saving the node credentials"))?;
        persist::save(state_dir, file).map_err(Error::internal("saving the swarm membership"))
    }

    /// Stops whatever is active and forgets the membership on disk.
    pub(super) async fn abandon(&self) {
        if let Some(active) = self.inner.active.write().await.take() {
            active.deactivate().await;
        }
        if let Err(e) = persist::remove(&self.inner.config.state_dir) {
            warn!(cause = %Chain(&e), "cannot remove the swarm membership files");
        }
    }
}
