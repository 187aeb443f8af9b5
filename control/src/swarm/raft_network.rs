//! openraft's network, carried by the cluster API's `Raft` call on 2377 (mutual TLS). Requests
//! and responses are openraft's types as framed CBOR documents (`crate::format`), like the
//! store's; a transport failure is "unreachable" to openraft, which retries with backoff.

use std::{net::SocketAddr, sync::Arc};

use openraft::{
    BasicNode, SnapshotMeta, Vote,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{codec::CodecError, error::Error, peers::Peers};
use crate::{
    api::RaftRequest,
    format,
    raft::{Raft, TypeConfig},
};

impl super::Swarm {
    /// This manager's Raft handle, for the `Raft` call.
    pub(super) async fn raft(&self) -> Result<Raft, Error> {
        let active = self.active().await?;
        active
            .manager
            .as_ref()
            .map(|m| m.raft.clone())
            .ok_or_else(|| Error::refused("this node is not a manager"))
    }
}

pub const KIND_APPEND: &str = "append";
pub const KIND_VOTE: &str = "vote";
pub const KIND_SNAPSHOT: &str = "snapshot";

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

pub struct NetworkFactory {
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerLink {
        PeerLink {
            target,
            addr: node.addr.parse().ok(),
            peers: Arc::clone(&self.peers),
        }
    }
}

/// The link to one Raft peer.
pub struct PeerLink {
    target: u64,
    /// `None` when the member's address does not parse; every call is then unreachable.
    addr: Option<SocketAddr>,
    peers: Arc<Peers>,
}

impl PeerLink {
    async fn call<Req, Resp, E>(&self, kind: &str, request: &Req) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.addr.ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "member address does not parse",
            )))
        })?;
        let payload =
            format::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .client(addr)
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?;
        let response = client
            .raft(RaftRequest {
                kind: kind.to_string(),
                payload,
            })
            .await
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?
            .into_inner();
        let result: Result<Resp, RaftError<u64, E>> = format::decode(&response.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// openraft's `InstallSnapshotRequest` with its data as a CBOR byte string (serde would write
/// an array of numbers, up to twice the size); it reads back as openraft's own type, whose
/// `Vec<u8>` takes a byte string.
#[derive(Serialize)]
struct SnapshotChunk<'a> {
    vote: &'a Vote<u64>,
    meta: &'a SnapshotMeta<u64, BasicNode>,
    offset: u64,
    #[serde(serialize_with = "format::as_bytes")]
    data: &'a [u8],
    done: bool,
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.call(KIND_APPEND, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        let chunk = SnapshotChunk {
            vote: &rpc.vote,
            meta: &rpc.meta,
            offset: rpc.offset,
            data: &rpc.data,
            done: rpc.done,
        };
        self.call(KIND_SNAPSHOT, &chunk).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.call(KIND_VOTE, &rpc).await
    }
}

/// Serves one `Raft` call: decodes the request, hands it to the local Raft, encodes the result.
pub async fn serve(raft: &Raft, request: RaftRequest) -> Result<Vec<u8>, Error> {
    fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
        format::decode(payload).map_err(|source| {
            Error::Codec(CodecError::Decode {
                what: "raft request",
                source,
            })
        })
    }
    let encoded = match request.kind.as_str() {
        KIND_APPEND => format::encode(&raft.append_entries(decode(&request.payload)?).await),
        KIND_VOTE => format::encode(&raft.vote(decode(&request.payload)?).await),
        KIND_SNAPSHOT => format::encode(&raft.install_snapshot(decode(&request.payload)?).await),
        other => {
            return Err(Error::invalid(format!(
                "unknown raft request kind {other:?}"
            )));
        }
    };
    encoded.map_err(Error::internal("encoding a raft response"))
}
