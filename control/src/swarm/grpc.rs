//! The `Cluster` gRPC service: authorization, then the swarm runtime.
//!
//! The same service runs on two transports. On the local unix socket the caller is this node's
//! root (the CLI). On 2377 (mutual TLS) the caller is the node its certificate names, or
//! anonymous when it presented none, which only the join call (`Admit`) accepts. What a node
//! may do follows its role in the Raft store (a demoted manager's certificate still says
//! manager); a node this manager's store does not know yet falls back to its certificate.

use tonic::{Request, Response, Status};

use super::{
    Swarm, raft_network,
    task_io::{ExecStream, LogStream},
};
use crate::{
    api::{
        AddRaftMemberRequest, AdmitRequest, AdmitResponse, Empty, ExecRequest, HeartbeatRequest,
        HeartbeatResponse, InitRequest, InitResponse, JoinSwarmRequest, JoinSwarmResponse,
        JoinTokenRequest, JoinTokenResponse, LeaveRequest, ListNetworksResponse, ListNodesResponse,
        ListServicesResponse, ListTasksRequest, ListTasksResponse, NetworkInfo, NetworkRef,
        NetworkSpec, NodeInfo, RaftRequest, RaftResponse, RemoveNodeRequest, ServiceInfo,
        ServiceRef, ServiceSpec, TaskLogsRequest, UpdateNodeRequest, UpdateServiceRequest,
        cluster_server::Cluster,
    },
    cluster::Role,
    pki::{self, PeerIdentity},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// The node's own unix socket (mode 0600): root on this node.
    Local,
    /// 2377, mutual TLS.
    Remote,
}

/// Who is calling.
enum Caller {
    Root,
    Anonymous,
    Node(PeerIdentity),
}

pub struct ClusterService {
    swarm: Swarm,
    transport: Transport,
}

impl ClusterService {
    /// The service for the local unix socket.
    pub fn local(swarm: Swarm) -> Self {
        ClusterService {
            swarm,
            transport: Transport::Local,
        }
    }

    /// The service for 2377.
    pub fn remote(swarm: Swarm) -> Self {
        ClusterService {
            swarm,
            transport: Transport::Remote,
        }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if self.transport == Transport::Local {
            return Ok(Caller::Root);
        }
        match request.peer_certs() {
            Some(certs) if !certs.is_empty() => pki::peer_identity(certs[0].as_ref())
                .map(Caller::Node)
                .map_err(|e| {
                    Status::unauthenticated(format!("unreadable client certificate: {e}"))
                }),
            _ => Ok(Caller::Anonymous),
        }
    }

    fn local_only<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)? {
            Caller::Root => Ok(()),
            _ => Err(Status::permission_denied(
                "this call is only available on the node's local socket",
            )),
        }
    }

    /// Any node of the swarm, or root on a node of the swarm.
    fn member<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)? {
            Caller::Root | Caller::Node(_) => Ok(()),
            Caller::Anonymous => Err(no_certificate()),
        }
    }

    /// A manager: root on a manager, or a node whose role is manager.
    async fn manager<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)? {
            Caller::Root => self.swarm.require_manager().await,
            Caller::Node(peer) => {
                let role = self
                    .swarm
                    .stored_role(&peer.node_id)
                    .await
                    .unwrap_or(peer.role);
                if role == Role::Manager {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "node {} is not a manager: this call needs a manager",
                        peer.node_id
                    )))
                }
            }
            Caller::Anonymous => Err(no_certificate()),
        }
    }
}

impl ClusterService {
    /// Root on this node (whatever its role), or a node whose role is manager.
    async fn manager_or_root<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)? {
            Caller::Root => Ok(()),
            _ => self.manager(request).await,
        }
    }
}

fn no_certificate() -> Status {
    Status::unauthenticated("this call needs a cluster certificate")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        self.local_only(&request)?;
        self.swarm
            .init(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn join_swarm(
        &self,
        request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        self.local_only(&request)?;
        self.swarm
            .join(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        self.local_only(&request)?;
        self.swarm.leave(request.into_inner().force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn admit(
        &self,
        request: Request<AdmitRequest>,
    ) -> Result<Response<AdmitResponse>, Status> {
        // Anyone with a valid token: the token is the credential.
        self.swarm
            .admit(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn add_raft_member(
        &self,
        request: Request<AddRaftMemberRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.swarm
            .add_raft_member(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        self.manager(&request).await?;
        self.swarm
            .join_token(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_nodes(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.member(&request)?;
        self.swarm.list_nodes().await.map(Response::new)
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        self.manager(&request).await?;
        self.swarm
            .update_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.swarm
            .remove_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        match self.caller(&request)? {
            // A node speaks for itself; a manager may relay for others.
            Caller::Node(peer) if peer.node_id == request.get_ref().node_id => {}
            Caller::Node(_) => self.manager(&request).await?,
            Caller::Root | Caller::Anonymous => return Err(no_certificate()),
        }
        self.swarm
            .heartbeat(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_service(
        &self,
        request: Request<ServiceSpec>,
    ) -> Result<Response<ServiceInfo>, Status> {
        self.manager(&request).await?;
        self.swarm
            .create_service(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceInfo>, Status> {
        self.manager(&request).await?;
        self.swarm
            .update_service(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_service(
        &self,
        request: Request<ServiceRef>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.swarm
            .remove_service(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_services(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.member(&request)?;
        self.swarm.list_services().await.map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        self.member(&request)?;
        self.swarm
            .list_tasks(request.into_inner())
            .await
            .map(Response::new)
    }

    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        request: Request<TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        self.member(&request)?;
        self.swarm
            .task_logs(request.into_inner())
            .await
            .map(Response::new)
    }

    type ExecStream = ExecStream;

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecStream>, Status> {
        // Running commands in tasks: root on a node, or a manager relaying for its root.
        self.manager_or_root(&request).await?;
        self.swarm
            .exec(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_network(
        &self,
        request: Request<NetworkSpec>,
    ) -> Result<Response<NetworkInfo>, Status> {
        self.manager(&request).await?;
        self.swarm
            .create_network(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn rotate_gossip_key(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.swarm
            .rotate_gossip_key(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_network(
        &self,
        request: Request<NetworkRef>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.swarm
            .remove_network(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_networks(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        self.member(&request)?;
        self.swarm.list_networks().await.map(Response::new)
    }

    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        if !matches!(self.caller(&request)?, Caller::Node(_)) {
            return Err(no_certificate());
        }
        self.manager(&request).await?;
        let raft = self.swarm.raft().await?;
        let payload = raft_network::serve(&raft, request.into_inner()).await?;
        Ok(Response::new(RaftResponse { payload }))
    }
}

impl Swarm {
    /// This manager's Raft handle.
    async fn raft(&self) -> Result<crate::raft::Raft, Status> {
        let active = self.active().await?;
        active
            .manager
            .as_ref()
            .map(|m| m.raft.clone())
            .ok_or_else(|| Status::failed_precondition("this node is not a manager"))
    }
}
