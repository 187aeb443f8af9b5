//! Connecting the CLI to an agent's API: `unix:///path` (the default) or `tcp://host:port`.

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use shoal_control::api::agent_client::AgentClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to the agent at `host`, failing with a message that says what to check.
pub async fn connect(host: &str) -> anyhow::Result<AgentClient<Channel>> {
    let Some(path) = host.strip_prefix("unix://") else {
        bail!("unsupported host {host:?}: expected unix:///path/to/shoal.sock");
    };
    let path = path.to_string();
    // The URI is required by the HTTP/2 layer but never dialled: the connector opens the socket.
    let channel = Endpoint::from_static("http://shoal.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("{}", root_cause(&e)))
        .with_context(|| {
            format!("cannot reach the shoal agent at {host} (is `shoal agent` running?)")
        })?;
    Ok(AgentClient::new(channel))
}

/// Turns an API error status into one line.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
