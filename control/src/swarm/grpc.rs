//! The `Cluster` gRPC service: who may call what, where each call runs, and the one place the
//! runtime's [`Error`] becomes a `Status`.
//!
//! The same service runs on two transports. On the local unix socket the caller is this node's
//! root (the CLI). On 2377 (mutual TLS) the caller is the node its certificate names, or
//! anonymous when it presented none, which only the join call (`Admit`) accepts. What a node
//! may do follows its role in the Raft store (a demoted manager's certificate still says
//! manager); a node this manager's store does not know yet falls back to its certificate.
//!
//! Cluster operations run on the Raft leader. Each call below says so explicitly: authorize,
//! then [`ClusterService::on_leader`] runs the leader's operation here when this node leads,
//! or sends the same request to the leader.

use std::future::Future;

use crate::error_chain::Chain;

use tonic::{Request, Response, Status, transport::Channel};

use super::{
    Swarm,
    error::Error,
    leader::{Leader, Route},
    node::task_io::{ExecStream, LogStream},
    raft_network,
};
use crate::{
    api::{
        AddRaftMemberRequest, AdmitRequest, AdmitResponse, Empty, ExecRequest, HeartbeatRequest,
        HeartbeatResponse, InitRequest, InitResponse, JoinSwarmRequest, JoinSwarmResponse,
        JoinTokenRequest, JoinTokenResponse, LeaveRequest, ListNetworksResponse, ListNodesResponse,
        ListServicesResponse, ListTasksRequest, ListTasksResponse, NetworkInfo, NetworkRef,
        NetworkSpec, NodeInfo, RaftRequest, RaftResponse, RemoveNodeRequest, ServiceInfo,
        ServiceRef, ServiceSpec, TaskLogsRequest, UpdateNodeRequest, UpdateServiceRequest,
        cluster_client::ClusterClient, cluster_server::Cluster,
    },
    cluster::Role,
    pki::{self, PeerIdentity},
};

/// Which socket a call came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
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
    listener: Listener,
}

impl ClusterService {
    /// The service for the local unix socket.
    pub fn local(swarm: Swarm) -> Self {
        ClusterService {
            swarm,
            listener: Listener::Local,
        }
    }

    /// The service for 2377.
    pub fn remote(swarm: Swarm) -> Self {
        ClusterService {
            swarm,
            listener: Listener::Remote,
        }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if self.listener == Listener::Local {
            return Ok(Caller::Root);
        }
        match request.peer_certs() {
            Some(certs) if !certs.is_empty() => pki::peer_identity(certs[0].as_ref())
                .map(Caller::Node)
                .map_err(|e| {
                    Status::unauthenticated(format!("unreadable client certificate: {}", Chain(&e)))
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
            Caller::Root => Ok(self.swarm.require_manager().await?),
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
    /// Runs a cluster operation where it belongs: `here` with this node's [`Leader`] when it
    /// leads, else `forward` with a client for the leader (the request is the same).
    async fn on_leader<R, T, Here, Forward>(
        &self,
        request: R,
        here: impl FnOnce(Leader, R) -> Here,
        forward: impl FnOnce(ClusterClient<Channel>, R) -> Forward,
    ) -> Result<Response<T>, Status>
    where
        Here: Future<Output = Result<T, Error>>,
        Forward: Future<Output = Result<Response<T>, Status>>,
    {
        match self.swarm.route().await? {
            Route::Here(leader) => Ok(Response::new(here(leader, request).await?)),
            Route::Forward(client) => forward(client, request).await,
        }
    }

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
        let response = self.swarm.init(request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn join_swarm(
        &self,
        request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        self.local_only(&request)?;
        let response = self.swarm.join(request.into_inner()).await?;
        Ok(Response::new(response))
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
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.admit(r).await,
            async |mut client, r| client.admit(r).await,
        )
        .await
    }

    async fn add_raft_member(
        &self,
        request: Request<AddRaftMemberRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.add_raft_member(r).await,
            async |mut client, r| client.add_raft_member(r).await,
        )
        .await
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.join_token(r).await,
            async |mut client, r| client.join_token(r).await,
        )
        .await
    }

    async fn list_nodes(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.member(&request)?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_nodes(r).await,
            async |mut client, r| client.list_nodes(r).await,
        )
        .await
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.update_node(r).await,
            async |mut client, r| client.update_node(r).await,
        )
        .await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.remove_node(r).await,
            async |mut client, r| client.remove_node(r).await,
        )
        .await
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
        // Followers keep a record too, so a follower that becomes leader knows who was alive.
        self.swarm
            .record_heartbeat(&request.get_ref().node_id)
            .await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.heartbeat(r).await,
            async |mut client, r| client.heartbeat(r).await,
        )
        .await
    }

    async fn create_service(
        &self,
        request: Request<ServiceSpec>,
    ) -> Result<Response<ServiceInfo>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.create_service(r).await,
            async |mut client, r| client.create_service(r).await,
        )
        .await
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceInfo>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.update_service(r).await,
            async |mut client, r| client.update_service(r).await,
        )
        .await
    }

    async fn remove_service(
        &self,
        request: Request<ServiceRef>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.remove_service(r).await,
            async |mut client, r| client.remove_service(r).await,
        )
        .await
    }

    async fn list_services(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.member(&request)?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_services(r).await,
            async |mut client, r| client.list_services(r).await,
        )
        .await
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        self.member(&request)?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_tasks(r).await,
            async |mut client, r| client.list_tasks(r).await,
        )
        .await
    }

    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        request: Request<TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        self.member(&request)?;
        let stream = self.swarm.task_logs(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type ExecStream = ExecStream;

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecStream>, Status> {
        // Running commands in tasks: root on a node, or a manager relaying for its root.
        self.manager_or_root(&request).await?;
        let stream = self.swarm.exec(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn create_network(
        &self,
        request: Request<NetworkSpec>,
    ) -> Result<Response<NetworkInfo>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.create_network(r).await,
            async |mut client, r| client.create_network(r).await,
        )
        .await
    }

    async fn rotate_gossip_key(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.rotate_gossip_key(r).await,
            async |mut client, r| client.rotate_gossip_key(r).await,
        )
        .await
    }

    async fn remove_network(
        &self,
        request: Request<NetworkRef>,
    ) -> Result<Response<Empty>, Status> {
        self.manager(&request).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.remove_network(r).await,
            async |mut client, r| client.remove_network(r).await,
        )
        .await
    }

    async fn list_networks(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        self.member(&request)?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_networks(r).await,
            async |mut client, r| client.list_networks(r).await,
        )
        .await
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
    async fn raft(&self) -> Result<crate::raft::Raft, Error> {
        let active = self.active().await?;
        active
            .manager
            .as_ref()
            .map(|m| m.raft.clone())
            .ok_or_else(|| Error::refused("this node is not a manager"))
    }

    /// The role the store gives `node_id`, when this node holds the store.
    async fn stored_role(&self, node_id: &str) -> Option<Role> {
        let active = self.active().await.ok()?;
        let manager = active.manager.as_ref()?;
        manager.state().nodes.get(node_id).map(|n| n.role)
    }

    /// Refuses the call unless this node is a manager.
    async fn require_manager(&self) -> Result<(), Error> {
        let active = self.active().await?;
        if active.role() != Role::Manager {
            return Err(Error::NotAManager);
        }
        Ok(())
    }

    /// Notes that `node_id` is alive (every manager does, not only the leader).
    async fn record_heartbeat(&self, node_id: &str) -> Result<(), Error> {
        self.active().await?.liveness.record(node_id);
        Ok(())
    }
}
