//! The Docker Engine API's Swarm subset, served on a unix socket beside the agent's own
//! (`docker.sock`), so the docker CLI, docker-py and other Engine API clients drive shoal
//! unchanged: `DOCKER_HOST=unix:///run/shoal/docker.sock docker service ls`.
//!
//! Every handler is a client of this agent's gRPC API over its local socket, making the calls
//! the `shoal` CLI makes: who may do what, forwarding to the leader and the daemon's words
//! stay in one place, and this module only translates Docker's shapes (reusing what
//! `shoal ... inspect` prints, so both CLIs show the same objects).
//!
//! # Layout
//! - `socket`: binding `docker.sock` (mode 0660, group `docker` when it exists).
//! - `version`: `/v1.N` prefixes, dockerd's headers, `/_ping`, `/version`.
//! - `errors`: `ApiError`, dockerd's status and `{"message"}`; gRPC codes mapped as dockerd's.
//! - `node_state`: the node's swarm state and dockerd's refusal on a node that is no manager.
//! - `info`: `/info` with its Swarm section.
//! - `filters`: the `filters` query parameter. `lookup`: references as dockerd resolves them.
//! - `nodes`, `services`, `tasks`, `networks`, `distribution`: the endpoints.
//! - `secrets`: `/secrets` and, with the same handlers, `/configs` (`configs`).
//! - `swarm`: `/swarm` (inspect, init, join, leave, update, unlock key, unlock).
//! - `logs`: service and task logs in dockerd's multiplexed stream; `events`: swarm events.
//! - `shape/`: Docker's JSON shapes to and from the API's messages.

mod configs;
mod distribution;
mod errors;
mod events;
mod filters;
mod info;
mod logs;
mod lookup;
mod networks;
mod node_state;
mod nodes;
mod secrets;
mod services;
mod shape;
mod socket;
mod swarm;
mod tasks;
mod version;

use std::{future::Future, path::Path, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    routing::{get, post},
};
use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::Layer as _;

pub use socket::{bind, default_path, remove as remove_socket};

/// What every handler needs: a channel to this agent's API.
pub struct Engine {
    channel: Channel,
}

type Shared = Arc<Engine>;

impl Engine {
    /// An engine calling the agent's API at `api_socket`. The channel connects on first use
    /// (and again after a failure), so the engine may start before the API is served.
    pub fn new(api_socket: &Path) -> anyhow::Result<Engine> {
        let path = api_socket.to_path_buf();
        // The URI is required by the HTTP/2 layer but never dialled: the connector opens the
        // socket.
        let channel = Endpoint::from_static("http://shoal.local").connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }),
        );
        Ok(Engine { channel })
    }
}

/// The routes, without the version prefix (stripped by `version::negotiate`).
fn router(engine: Shared) -> Router {
    Router::new()
        .route("/_ping", get(version::ping))
        .route("/version", get(version::version))
        .route("/info", get(info::info))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{id}", get(nodes::inspect).delete(nodes::remove))
        .route("/nodes/{id}/update", post(nodes::update))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route(
            "/services/{id}",
            get(services::inspect).delete(services::remove),
        )
        .route("/services/{id}/update", post(services::update))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::inspect))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/distribution/{*name}", get(distribution::inspect))
        .merge(swarm::routes())
        .merge(secrets::routes())
        .merge(configs::routes())
        .merge(logs::routes())
        .merge(events::routes())
        .fallback(|| async { errors::ApiError::not_found("page not found") })
        .with_state(engine)
}

/// Serves the Engine API on `listener` until `shutdown` resolves; open connections are
/// dropped then (the agent is stopping).
pub async fn serve(
    listener: UnixListener,
    engine: Engine,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = axum::middleware::from_fn(version::negotiate).layer(router(Arc::new(engine)));
    tokio::select! {
        served = axum::serve(listener, axum::ServiceExt::<axum::extract::Request>::into_make_service(app)) => {
            served.context("serving the Engine API")
        }
        () = shutdown => Ok(()),
    }
}
