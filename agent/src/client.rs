//! Connecting the CLI to an agent's API: `unix:///path` (the default).

use std::path::Path;

use anyhow::{Context as _, bail};
use tonic::transport::Channel;

/// Connects to the agent at `host` and runs `call` with the channel, on a small runtime of its
/// own. Failures come back as one line that says what to check.
pub fn with_agent<T>(
    host: &str,
    call: impl AsyncFnOnce(Channel) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = connect(host).await?;
        call(channel).await
    })
}

async fn connect(host: &str) -> anyhow::Result<Channel> {
    let Some(path) = host.strip_prefix("unix://") else {
        bail!("unsupported host {host:?}: expected unix:///path/to/shoal.sock");
    };
    shoal_control::local_client::connect_unix(Path::new(path))
        .await
        .with_context(|| {
            format!("cannot reach the shoal agent at {host} (is `shoal agent` running?)")
        })
}

/// Turns an API error status into one line: the message is written for operators.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message().replace('\n', " "))
}
