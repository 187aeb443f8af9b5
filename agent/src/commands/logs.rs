//! `shoal service logs [-f] SERVICE`: every task's output, from every node, each line prefixed
//! with `<service>.<slot>.<task-id>@<node>`, as Docker does.

use std::io::Write as _;

use shoal_control::api::{ListTasksRequest, TaskInfo, TaskLogsRequest};
use shoal_control::wire_limits::cluster_client;
use tonic::transport::Channel;

use crate::client::status_error;

pub async fn run(channel: Channel, service: &str, follow: bool) -> anyhow::Result<()> {
    let request = ListTasksRequest {
        service: service.to_string(),
        node: String::new(),
    };
    let tasks: Vec<TaskInfo> = cluster_client(channel.clone())
        .list_tasks(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks
        .into_iter()
        .filter(|t| !t.node_id.is_empty())
        .collect();
    let width = tasks.iter().map(|t| prefix(t).len()).max().unwrap_or(0);
    let mut streams = Vec::new();
    for task in tasks {
        let channel = channel.clone();
        let stream = async move { print_task(channel, &task, width, follow).await };
        if follow {
            streams.push(tokio::spawn(stream));
        } else {
            stream.await?;
        }
    }
    for stream in streams {
        stream.await??;
    }
    Ok(())
}

fn prefix(task: &TaskInfo) -> String {
    format!("{}@{}", task.name, task.node_hostname)
}

async fn print_task(
    channel: Channel,
    task: &TaskInfo,
    width: usize,
    follow: bool,
) -> anyhow::Result<()> {
    let request = TaskLogsRequest {
        task_id: task.id.clone(),
        follow,
        ..Default::default()
    };
    let mut chunks = match cluster_client(channel).task_logs(request).await {
        Ok(response) => response.into_inner(),
        // A task whose node is gone, or that never ran, has no logs to show.
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
        Err(status) => return Err(status_error(status)),
    };
    let label = format!("{:<width$}", prefix(task));
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        let buf = if chunk.stream == "stderr" {
            &mut err_buf
        } else {
            &mut out_buf
        };
        buf.extend_from_slice(&chunk.data);
        emit_lines(buf, &label, false)?;
    }
    emit_lines(&mut out_buf, &label, true)?;
    emit_lines(&mut err_buf, &label, true)
}

/// Prints the complete lines in `buf` (and the rest too when `flush`), keeping a partial line.
fn emit_lines(buf: &mut Vec<u8>, label: &str, flush: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        writeln!(
            stdout,
            "{label} | {}",
            String::from_utf8_lossy(&line[..line.len() - 1])
        )?;
    }
    if flush && !buf.is_empty() {
        writeln!(stdout, "{label} | {}", String::from_utf8_lossy(buf))?;
        buf.clear();
    }
    Ok(())
}
