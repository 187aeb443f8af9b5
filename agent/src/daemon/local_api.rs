//! The local API: a unix socket (mode 0600, root only) serving the gRPC `Agent` service (this
//! node: its info, its side of networks, unlocking, its volumes) and the `Cluster` service (the
//! swarm, with this node's root as the caller) to the CLI.

use std::{future::Future, path::Path, sync::Arc};

use anyhow::Context as _;
use shoal_control::wire_limits::{agent_server, cluster_server};
use shoal_control::{
    api::{
        CreateVolumeRequest, Empty, GossipPeer, InfoRequest, InfoResponse, KeyValue, LocalEndpoint,
        LocalNetworkRequest, LocalNetworkResponse, RemoveVolumeRequest, UnlockRequest, VolumeInfo,
        VolumeList, VolumeRef, agent_server::Agent,
    },
    error_chain::Chain,
    identity::NodeId,
    swarm::{ClusterService, Swarm},
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Code, Request, Response, Status};
use tracing::warn;

use super::{
    config::Config,
    node_dataplane::{NodeDataplane, SharedDataplane},
};
use crate::{
    build_info,
    networking::NodeNetworking,
    volumes::{self, Volume, VolumeError, Volumes},
};

pub struct AgentService {
    /// The parts of `info` that do not change while the agent runs.
    static_info: InfoResponse,
    dataplane: SharedDataplane,
    swarm: Swarm,
    networking: Arc<NodeNetworking>,
    /// `volume create | ls | inspect | rm`.
    volumes: Arc<Volumes>,
}

impl AgentService {
    pub fn new(
        node_id: NodeId,
        config: Config,
        state_dir: &Path,
        dataplane: SharedDataplane,
        swarm: Swarm,
        networking: Arc<NodeNetworking>,
        volumes: Arc<Volumes>,
    ) -> Self {
        let static_info = InfoResponse {
            node_id: node_id.to_string(),
            hostname: config.hostname,
            version: build_info::VERSION.to_string(),
            git_commit: build_info::GIT_COMMIT.to_string(),
            api_version: build_info::API_VERSION.to_string(),
            min_api_version: build_info::MIN_API_VERSION.to_string(),
            swarm_state: "inactive".to_string(),
            listen_addr: config.listen_addr.to_string(),
            advertise_addr: config
                .advertise_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
            data_path_addr: config
                .data_path_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
            data_path_port: config.data_path_port.into(),
            gossip_port: config.gossip_port.into(),
            state_dir: state_dir.display().to_string(),
            ..Default::default()
        };
        AgentService {
            static_info,
            dataplane,
            swarm,
            networking,
            volumes,
        }
    }

    /// Runs a volume store call off the async workers (it syncs files); a failure reads as
    /// Docker's `<op> <name>: <why>`.
    async fn volume_call<T: Send + 'static>(
        &self,
        op: &'static str,
        name: String,
        call: impl FnOnce(&Volumes, &str) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, Status> {
        let volumes = self.volumes.clone();
        tokio::task::spawn_blocking(move || {
            call(&volumes, &name).map_err(|e| volume_status(op, &name, &e))
        })
        .await
        .map_err(|e| Status::internal(format!("volume {op} did not finish: {e}")))?
    }
}

/// Docker's daemon words a volume error `<op> <name>: <why>`; a missing volume is always
/// `get <name>: no such volume`.
fn volume_status(op: &str, name: &str, e: &VolumeError) -> Status {
    let (code, op) = match e {
        VolumeError::InvalidName(_) => (Code::InvalidArgument, op),
        VolumeError::NotFound => (Code::NotFound, "get"),
        VolumeError::InUse { .. } => (Code::FailedPrecondition, op),
        VolumeError::Io { .. } => (Code::Internal, op),
    };
    let subject = if name.is_empty() {
        op.to_string()
    } else {
        format!("{op} {name}")
    };
    Status::new(code, format!("{subject}: {}", Chain(e)))
}

fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        driver: volumes::DRIVER.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        labels: v
            .labels
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        created_at_ms: v.created_at_ms,
        used_by: v.used_by,
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn local_network(
        &self,
        request: Request<LocalNetworkRequest>,
    ) -> Result<Response<LocalNetworkResponse>, Status> {
        let id = &request.get_ref().network_id;
        let endpoints = self
            .networking
            .local_endpoints(id)
            .into_iter()
            .map(|(e, prefix)| LocalEndpoint {
                task_name: e.aliases.first().cloned().unwrap_or_default(),
                addr: format!("{}/{prefix}", e.ip),
                mac: e
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                // The node's own endpoint on `ingress` has no task: Docker's key for it.
                task_id: if e.service.is_empty() {
                    crate::networking::INGRESS_SANDBOX_KEY.to_string()
                } else {
                    e.endpoint_id
                },
            })
            .collect();
        let peers = self
            .networking
            .gossip_members()
            .into_iter()
            .map(|(node_id, addr)| GossipPeer {
                node_id,
                addr: addr.ip().to_string(),
            })
            .collect();
        Ok(Response::new(LocalNetworkResponse { endpoints, peers }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let dataplane = self.dataplane.lock().as_ref().map(NodeDataplane::info);
        let swarm = self.swarm.summary().await;
        Ok(Response::new(InfoResponse {
            dataplane,
            swarm_state: match (swarm.active, swarm.locked) {
                (true, _) => "active",
                (false, true) => "locked",
                (false, false) => "inactive",
            }
            .to_string(),
            cluster_id: swarm.cluster_id,
            is_manager: swarm.is_manager,
            managers: swarm.managers,
            nodes: swarm.nodes,
            ..self.static_info.clone()
        }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<Empty>, Status> {
        self.swarm.unlock(&request.into_inner().key).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<VolumeInfo>, Status> {
        let request = request.into_inner();
        let labels = request
            .labels
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let created = self
            .volume_call("create", request.name, move |volumes, name| {
                volumes.create((!name.is_empty()).then_some(name), labels)
            })
            .await?;
        Ok(Response::new(volume_info(created)))
    }

    async fn list_volumes(&self, _: Request<Empty>) -> Result<Response<VolumeList>, Status> {
        let all = self
            .volume_call("list", String::new(), |volumes, _| volumes.list())
            .await?;
        Ok(Response::new(VolumeList {
            volumes: all.into_iter().map(volume_info).collect(),
        }))
    }

    async fn inspect_volume(
        &self,
        request: Request<VolumeRef>,
    ) -> Result<Response<VolumeInfo>, Status> {
        let name = request.into_inner().name;
        let volume = self
            .volume_call("get", name, |volumes, name| volumes.inspect(name))
            .await?;
        Ok(Response::new(volume_info(volume)))
    }

    async fn remove_volume(
        &self,
        request: Request<RemoveVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let RemoveVolumeRequest { name, force } = request.into_inner();
        self.volume_call("remove", name, move |volumes, name| {
            match volumes.remove(name) {
                Err(VolumeError::NotFound) if force => Ok(()),
                result => result,
            }
        })
        .await?;
        Ok(Response::new(Empty {}))
    }
}

/// Binds the socket at `path` with mode 0600 (see [`crate::unix_socket`]).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    crate::unix_socket::bind_with_mode(path, 0o600)
}

/// Serves the API (the agent's own calls, and the cluster calls as this node's root) on
/// `listener` until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    listener: UnixListener,
    service: AgentService,
    swarm: Swarm,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(agent_server(service))
        .add_service(cluster_server(ClusterService::local(swarm)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving the local API")
}

pub fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(socket = %path.display(), cause = %Chain(&e), "cannot remove socket");
    }
}
