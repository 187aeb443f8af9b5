//! A task's output and `exec` into it. Both happen on the node that runs the task; any other
//! node relays the call there over 2377, so the CLI can ask its own agent about any task.

use std::{io::SeekFrom, path::PathBuf, pin::Pin, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncSeekExt},
    sync::mpsc,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;

use crate::{
    api::{
        Empty, ExecOutput, ExecRequest, ListTasksRequest, LogChunk, NodeInfo, TaskInfo,
        TaskLogsRequest, cluster_client::ClusterClient,
    },
    cluster::Role,
    swarm::{Swarm, error::Error, leader::Route},
};

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send + 'static>>;
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send + 'static>>;

/// How often a followed log is checked for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

impl Swarm {
    pub async fn task_logs(&self, request: TaskLogsRequest) -> Result<LogStream, Error> {
        let task_id = if self.is_manager().await? {
            let task = self.find_task(&request.task_id).await?;
            if task.node_id != self.node_id() {
                let mut node = self.node_client(&task.node_id).await?;
                let relayed = node.task_logs(request).await?.into_inner();
                return Ok(Box::pin(relayed));
            }
            task.id
        } else {
            // A worker cannot look tasks up: a manager relays with the full ID of one of ours.
            request.task_id.clone()
        };
        let (stdout, stderr) =
            self.inner.runner.log_paths(&task_id).ok_or_else(|| {
                Error::not_found(format!("no logs for task {task_id} on this node"))
            })?;
        let (tx, rx) = mpsc::channel(64);
        if request.lines {
            tokio::spawn(super::log_lines::send(stdout, stderr, request, tx));
            return Ok(Box::pin(ReceiverStream::new(rx)));
        }
        tokio::spawn(async move {
            let follow = request.follow;
            let out = tokio::spawn(send_file(stdout, "stdout", follow, tx.clone()));
            let err = tokio::spawn(send_file(stderr, "stderr", follow, tx));
            let _ = tokio::join!(out, err);
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    pub async fn exec(&self, request: ExecRequest) -> Result<ExecStream, Error> {
        if request.command.is_empty() {
            return Err(Error::invalid("exec needs a command"));
        }
        let task_id = if self.is_manager().await? {
            let task = self.find_task(&request.task).await?;
            if task.state != "running" {
                return Err(Error::refused(format!(
                    "task {} is not running ({})",
                    task.name, task.state
                )));
            }
            if task.node_id != self.node_id() {
                let mut node = self.node_client(&task.node_id).await?;
                let request = ExecRequest {
                    task: task.id.clone(),
                    command: request.command,
                };
                let relayed = node.exec(request).await?.into_inner();
                return Ok(Box::pin(relayed));
            }
            task.id
        } else {
            // A worker cannot look tasks up: root here names one of this node's tasks by its
            // ID, and a manager relays with the full ID.
            request.task.clone()
        };
        let command = self
            .inner
            .runner
            .exec_command(&task_id, &request.command)
            .map_err(|source| Error::Exec {
                task_id: task_id.clone(),
                source,
            })?;
        let mut child = tokio::process::Command::from(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Exec {
                task_id: task_id.clone(),
                source: Box::new(source),
            })?;
        let (tx, rx) = mpsc::channel(64);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let out = tokio::spawn(pump(stdout, "stdout", tx.clone()));
            let err = tokio::spawn(pump(stderr, "stderr", tx.clone()));
            let _ = tokio::join!(out, err);
            let code = match child.wait().await {
                Ok(status) => status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                }),
                Err(_) => 126,
            };
            let _ = tx
                .send(Ok(ExecOutput {
                    stream: "exit".into(),
                    data: Vec::new(),
                    exit_code: code,
                }))
                .await;
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// A task by ID, unique ID prefix, or `SERVICE.SLOT` (its current task).
    async fn find_task(&self, reference: &str) -> Result<TaskInfo, Error> {
        let tasks = match self.route().await? {
            Route::Here(leader) => leader.list_tasks(ListTasksRequest::default()).await?,
            Route::Forward(mut client) => client
                .list_tasks(ListTasksRequest::default())
                .await?
                .into_inner(),
        }
        .tasks;
        if let Some(task) = tasks.iter().find(|t| t.id == reference) {
            return Ok(task.clone());
        }
        if let Some((service, slot)) = reference.rsplit_once('.')
            && let Ok(slot) = slot.parse::<u64>()
        {
            // Tasks come newest first within a slot.
            if let Some(task) = tasks.iter().find(|t| {
                t.service_name == service && t.slot == slot && t.desired_state == "running"
            }) {
                return Ok(task.clone());
            }
        }
        let matches: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| !reference.is_empty() && t.id.starts_with(reference))
            .collect();
        match matches.as_slice() {
            [task] => Ok((*task).clone()),
            [] => Err(Error::not_found(format!("task {reference} not found"))),
            _ => Err(Error::refused(format!("task {reference} is ambiguous"))),
        }
    }

    /// A client for the agent of `node_id`, at its advertise address.
    async fn node_client(
        &self,
        node_id: &str,
    ) -> Result<ClusterClient<tonic::transport::Channel>, Error> {
        let nodes = self.nodes().await?;
        let node = nodes
            .iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| Error::not_found(format!("node {node_id} not found")))?;
        let addr = node.addr.parse().map_err(|_| {
            Error::unavailable(format!("node {node_id} has a bad address {}", node.addr))
        })?;
        self.active().await?.peers.client(addr)
    }
}

impl Swarm {
    async fn is_manager(&self) -> Result<bool, Error> {
        Ok(self.active().await?.role() == Role::Manager)
    }

    /// Every node, in the leader's view (asked of the leader when this node does not lead).
    pub(in crate::swarm) async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let list = match self.route().await? {
            Route::Here(leader) => leader.list_nodes(Empty {}).await?,
            Route::Forward(mut client) => client.list_nodes(Empty {}).await?.into_inner(),
        };
        Ok(list.nodes)
    }
}

/// Sends a log file, then (when following) what is appended to it, until the receiver goes.
async fn send_file(
    path: PathBuf,
    stream: &'static str,
    follow: bool,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
) {
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf).await {
            Ok(0) if !follow => return,
            Ok(0) => {
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                // Re-open if the file was replaced; keep reading from where we were.
                if let Ok(mut reopened) = tokio::fs::File::open(&path).await
                    && reopened.seek(SeekFrom::Start(offset)).await.is_ok()
                {
                    file = reopened;
                }
            }
            Ok(n) => {
                offset += n as u64;
                let chunk = LogChunk {
                    stream: stream.into(),
                    data: buf[..n].to_vec(),
                    time_unix_nanos: 0,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Forwards a child's pipe to the stream.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: &'static str,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let out = ExecOutput {
            stream: stream.into(),
            data: buf[..n].to_vec(),
            exit_code: 0,
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}
