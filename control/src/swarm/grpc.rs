//! The `Cluster` gRPC service: who may call what, where each call runs, and the one place the
//! runtime's [`Error`] becomes a `Status`.
//!
//! The same service runs on two transports. On the local unix socket the caller is this node's
//! root (the CLI). On 2377 (mutual TLS) the caller is the node its certificate names, or
//! anonymous when it presented none, which only the join call (`Admit`) accepts. What each
//! caller may do is `authz`'s rule: what the swarm knows of the node now, not its certificate.
//!
//! Cluster operations run on the Raft leader. Each call below says so explicitly: authorize,
//! then [`ClusterService::on_leader`] runs the leader's operation here when this node leads,
//! or sends the same request to the leader.

use std::{future::Future, sync::Arc, time::Instant};

use tonic::{Request, Response, Status, transport::Channel};

use super::{
    Swarm,
    authz::{Caller, Needs},
    error::Error,
    events::EventStream,
    leader::{Leader, Route},
    node::task_io::{ExecStream, LogStream},
    raft_network,
    source_limits::SourceLimits,
};
use crate::{
    api::{
        AddRaftMemberRequest, AdmitRequest, AdmitResponse, ConfigInfo, ConfigSpec, Credentials,
        Empty, EventsRequest, ExecRequest, HeartbeatRequest, HeartbeatResponse, InitRequest,
        InitResponse, JoinSwarmRequest, JoinSwarmResponse, JoinTokenRequest, JoinTokenResponse,
        LeaveRequest, ListConfigsResponse, ListNetworksResponse, ListNodesResponse,
        ListSecretsResponse, ListServicesResponse, ListTasksRequest, ListTasksResponse,
        NetworkInfo, NetworkRef, NetworkSpec, NodeInfo, ObjectRef, RaftRequest, RaftResponse,
        RemoveNodeRequest, RenewCertificateRequest, RootCaRequest, RootCaResponse, SecretInfo,
        SecretSpec, ServiceInfo, ServiceRef, ServiceSpec, SwarmInfo, TaskLogsRequest,
        UnlockKeyRequest, UnlockKeyResponse, UpdateNodeRequest, UpdateObjectRequest,
        UpdateServiceRequest, UpdateSwarmRequest, cluster_client::ClusterClient,
        cluster_server::Cluster,
    },
    error_chain::Chain,
    pki,
};

/// Which socket a call came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    /// The node's own unix socket (mode 0600): root on this node.
    Local,
    /// 2377, mutual TLS.
    Remote,
}

pub struct ClusterService {
    swarm: Swarm,
    listener: Listener,
    /// On 2377: the bounds on join attempts per source.
    limits: Option<Arc<SourceLimits>>,
}

impl ClusterService {
    /// The service for the local unix socket.
    pub fn local(swarm: Swarm) -> Self {
        ClusterService {
            swarm,
            listener: Listener::Local,
            limits: None,
        }
    }

    /// The service for 2377, within `limits`.
    pub fn remote(swarm: Swarm, limits: Arc<SourceLimits>) -> Self {
        ClusterService {
            swarm,
            listener: Listener::Remote,
            limits: Some(limits),
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

    /// Refuses the call unless its caller has what `needs` asks (see `authz`).
    async fn allow<T>(&self, request: &Request<T>, needs: Needs<'_>) -> Result<(), Status> {
        let caller = self.caller(request)?;
        Ok(self.swarm.authorize(&caller, needs).await?)
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
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        self.allow(&request, Needs::LocalRoot).await?;
        let response = self.swarm.init(request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn join_swarm(
        &self,
        request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        self.allow(&request, Needs::LocalRoot).await?;
        let response = self.swarm.join(request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        self.allow(&request, Needs::LocalRoot).await?;
        self.swarm.leave(request.into_inner().force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn admit(
        &self,
        request: Request<AdmitRequest>,
    ) -> Result<Response<AdmitResponse>, Status> {
        // Anyone with a valid token: the token is the credential, so guessing it is bounded.
        if let Some(limits) = &self.limits {
            let source = request.remote_addr().map(|addr| addr.ip());
            limits.join_attempt(source, Instant::now())?;
        }
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        // A node speaks for itself; a manager may relay for others.
        let node_id = request.get_ref().node_id.clone();
        self.allow(&request, Needs::Itself(&node_id)).await?;
        // Followers keep a record too, so a follower that becomes leader knows who was alive.
        self.swarm
            .record_heartbeat(&node_id, request.get_ref().agent_stopping)
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
        let stream = self.swarm.task_logs(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.allow(&request, Needs::Manager).await?;
        let stream = self.swarm.events(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type ExecStream = ExecStream;

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecStream>, Status> {
        // Running commands in tasks: root on a node, or a manager relaying for its root.
        self.allow(&request, Needs::ManagerOrRoot).await?;
        let stream = self.swarm.exec(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn create_network(
        &self,
        request: Request<NetworkSpec>,
    ) -> Result<Response<NetworkInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.create_network(r).await,
            async |mut client, r| client.create_network(r).await,
        )
        .await
    }

    async fn rotate_gossip_key(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Manager).await?;
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
        self.allow(&request, Needs::Member).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_networks(r).await,
            async |mut client, r| client.list_networks(r).await,
        )
        .await
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<Credentials>, Status> {
        let node_id = request.get_ref().node_id.clone();
        self.allow(&request, Needs::Itself(&node_id)).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.renew_certificate(r).await,
            async |mut client, r| client.renew_certificate(r).await,
        )
        .await
    }

    async fn update_swarm(
        &self,
        request: Request<UpdateSwarmRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.update_swarm(r).await,
            async |mut client, r| client.update_swarm(r).await,
        )
        .await
    }

    async fn inspect_swarm(&self, request: Request<Empty>) -> Result<Response<SwarmInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.inspect_swarm(r).await,
            async |mut client, r| client.inspect_swarm(r).await,
        )
        .await
    }

    async fn root_ca(
        &self,
        request: Request<RootCaRequest>,
    ) -> Result<Response<RootCaResponse>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.root_ca(r).await,
            async |mut client, r| client.root_ca(r).await,
        )
        .await
    }

    async fn unlock_key(
        &self,
        request: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.unlock_key(r).await,
            async |mut client, r| client.unlock_key(r).await,
        )
        .await
    }

    async fn create_secret(
        &self,
        request: Request<SecretSpec>,
    ) -> Result<Response<SecretInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.create_secret(r).await,
            async |mut client, r| client.create_secret(r).await,
        )
        .await
    }

    async fn list_secrets(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_secrets(r).await,
            async |mut client, r| client.list_secrets(r).await,
        )
        .await
    }

    async fn inspect_secret(
        &self,
        request: Request<ObjectRef>,
    ) -> Result<Response<SecretInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.inspect_secret(r).await,
            async |mut client, r| client.inspect_secret(r).await,
        )
        .await
    }

    async fn update_secret(
        &self,
        request: Request<UpdateObjectRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.update_secret(r).await,
            async |mut client, r| client.update_secret(r).await,
        )
        .await
    }

    async fn remove_secret(&self, request: Request<ObjectRef>) -> Result<Response<Empty>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.remove_secret(r).await,
            async |mut client, r| client.remove_secret(r).await,
        )
        .await
    }

    async fn create_config(
        &self,
        request: Request<ConfigSpec>,
    ) -> Result<Response<ConfigInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.create_config(r).await,
            async |mut client, r| client.create_config(r).await,
        )
        .await
    }

    async fn list_configs(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.list_configs(r).await,
            async |mut client, r| client.list_configs(r).await,
        )
        .await
    }

    async fn inspect_config(
        &self,
        request: Request<ObjectRef>,
    ) -> Result<Response<ConfigInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.inspect_config(r).await,
            async |mut client, r| client.inspect_config(r).await,
        )
        .await
    }

    async fn update_config(
        &self,
        request: Request<UpdateObjectRequest>,
    ) -> Result<Response<ConfigInfo>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.update_config(r).await,
            async |mut client, r| client.update_config(r).await,
        )
        .await
    }

    async fn remove_config(&self, request: Request<ObjectRef>) -> Result<Response<Empty>, Status> {
        self.allow(&request, Needs::Manager).await?;
        self.on_leader(
            request.into_inner(),
            async |leader, r| leader.remove_config(r).await,
            async |mut client, r| client.remove_config(r).await,
        )
        .await
    }

    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        self.allow(&request, Needs::ManagerNode).await?;
        let raft = self.swarm.raft().await?;
        let payload = raft_network::serve(&raft, request.into_inner()).await?;
        Ok(Response::new(RaftResponse { payload }))
    }
}
