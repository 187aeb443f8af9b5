//! Following a create, scale, update or rollback until every task of the service's current
//! version runs, printing Docker's progress lines, or failing with why it cannot converge.

use std::time::{Duration, Instant};

use anyhow::bail;
use shoal_control::api::TaskInfo;
use tonic::transport::Channel;

use super::{
    render::name_of,
    requests::{current, tasks},
};

/// How long a task may stay unplaceable before `create` gives up waiting.
const PENDING_PATIENCE: Duration = Duration::from_secs(5);
/// How long to follow a service before giving up waiting.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(300);

/// What `converge` follows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A create, scale or update: a rollback means the update failed.
    Forward,
    /// A requested rollback.
    Rollback,
}

/// Follows the service until every task of its current version runs (Docker's progress), or
/// fails saying why it cannot converge.
pub(crate) async fn converge(channel: Channel, id: &str, expect: Expect) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let service = current(channel.clone(), id).await?;
        let name = name_of(&service).to_string();
        match service.update_state.as_str() {
            "paused" | "rollback_paused" => {
                bail!("update of {name} paused: {}", service.update_message)
            }
            "rollback_completed" if expect == Expect::Forward => {
                bail!(
                    "update of {name} failed and was rolled back: {}",
                    service.update_message
                )
            }
            _ => {}
        }
        let tasks = tasks(channel.clone(), id).await?;
        let mut live: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| t.desired_state == "running" && t.service_version == service.version)
            .collect();
        let running = live.iter().filter(|t| t.state == "running").count() as u64;
        let updating = matches!(
            service.update_state.as_str(),
            "updating" | "rollback_started"
        );
        let desired = service.desired_tasks;
        if running == desired && live.len() as u64 == desired && !updating {
            println!("overall progress: {running} out of {desired} tasks");
            live.sort_by_key(|t| (t.slot, t.node_hostname.clone()));
            for task in &live {
                let label = if task.slot > 0 {
                    task.slot.to_string()
                } else {
                    task.node_hostname.clone()
                };
                println!("{label}/{desired}: running");
            }
            println!("verify: Service converged");
            return Ok(());
        }
        if started.elapsed() > PENDING_PATIENCE
            && let Some(stuck) = live
                .iter()
                .find(|t| t.state == "pending" && !t.error.is_empty())
        {
            bail!(
                "service {name} cannot converge: task {} is pending: {}",
                stuck.name,
                stuck.error
            );
        }
        if started.elapsed() > CONVERGE_TIMEOUT {
            bail!(
                "service {name} did not converge within {CONVERGE_TIMEOUT:?}: {running} of {desired} tasks running"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
