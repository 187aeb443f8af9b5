//! One task's UDP and TCP loops: receive, answer inline or forward under a bound, send.
//!
//! These loops are ours rather than hickory-server's `Server` because that server answers
//! FORMERR to, or drops, malformed and short messages before any handler sees them (so bad input
//! could not be counted), and spawns a task per UDP query without bound (so a flood of queries
//! to forward would grow memory without limit). Here local answers are computed inline in the
//! UDP loop, only forwards are spawned, and those are capped by a per-task semaphore.
//!
//! Forward tasks and TCP connections live in `JoinSet`s owned by their loop, so aborting a
//! loop (when the task's [`crate::TaskDns`] is dropped) aborts them too and closes every socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use crate::answer::{Action, Answerer, Pending, ReceivedOver};
use crate::node::NodeShared;
use crate::records::Records;
use crate::stats::bump;
use crate::{batch, fast, forward};

/// Pause after a socket error that is not about one peer (EMFILE on accept, say), so a
/// persistent error does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Upper bound on the configured upstream budget; nothing useful waits longer for DNS.
const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// One task as its DNS loops see it: what they share with each other and with the node.
#[derive(Debug)]
pub(crate) struct ServedTask {
    /// Records, config and counters: node-wide.
    pub(crate) node: Arc<NodeShared>,
    /// The networks this task is attached to, in attachment order.
    pub(crate) scope: Vec<String>,
    /// One permit per forward in flight (UDP and TCP); bounds upstream sockets and memory.
    pub(crate) forward_permits: Arc<Semaphore>,
    /// The configured size of `forward_permits`, to report how many are in use.
    pub(crate) max_forwards: usize,
    /// One permit per open TCP connection.
    pub(crate) tcp_permits: Arc<Semaphore>,
}

impl ServedTask {
    pub(crate) fn new(node: Arc<NodeShared>, scope: Vec<String>) -> ServedTask {
        // Semaphore::new panics above MAX_PERMITS; no configuration should be able to do that.
        let max_forwards = node.config.max_pending_forwards.min(Semaphore::MAX_PERMITS);
        let max_tcp = node.config.max_tcp_connections.min(Semaphore::MAX_PERMITS);
        ServedTask {
            node,
            scope,
            forward_permits: Arc::new(Semaphore::new(max_forwards)),
            max_forwards,
            tcp_permits: Arc::new(Semaphore::new(max_tcp)),
        }
    }

    /// Forwards currently waiting on an upstream.
    pub(crate) fn forwards_in_flight(&self) -> usize {
        self.max_forwards
            .saturating_sub(self.forward_permits.available_permits())
    }

    fn handle(
        &self,
        records: &Records,
        bytes: &[u8],
        src: SocketAddr,
        received_over: ReceivedOver,
    ) -> Action {
        Answerer {
            records,
            scope: &self.scope,
            counters: &self.node.counters,
            can_forward: !self.node.config.upstreams.is_empty(),
        }
        .handle(bytes, src, received_over)
    }

    /// Asks the upstreams and builds the client's response (relayed answer or SERVFAIL).
    async fn forward(&self, pending: &Pending, arrived: Instant) -> Option<Vec<u8>> {
        let counters = &self.node.counters;
        let Some(question) = pending.question() else {
            return pending.servfail(counters);
        };
        // Clamped so that `Instant + Duration` cannot overflow whatever the configuration says.
        let deadline = arrived + self.node.config.upstream_timeout.min(MAX_UPSTREAM_TIMEOUT);
        match forward::forward(
            &self.node.config.upstreams,
            question,
            pending.upstream_flags(),
            deadline,
        )
        .await
        {
            Ok(reply) => pending.relay(&reply, counters),
            Err(err) => {
                debug!(name = %question.name(), cause = %err, "no upstream answer; SERVFAIL");
                pending.servfail(counters)
            }
        }
    }
}

/// Serves `socket` until the surrounding task is aborted.
///
/// Each wake-up takes a batch of queued datagrams (see [`batch`]); local answers are written
/// inline, by [`fast`] when it can and by the [`Answerer`] otherwise, and sent together.
pub(crate) async fn serve_udp(task: Arc<ServedTask>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let ipv6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut forwards = JoinSet::new();
    loop {
        tokio::select! {
            // Reap finished forwards first so the set never holds more than the permits allow.
            biased;
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            ready = socket.readable() => {
                let served = ready.and_then(|()| {
                    // Held for this batch only, never across an await.
                    let records = task.node.records.read();
                    batch::serve_ready(&socket, ipv6, |query, src, reply| {
                        answer_udp(&task, &records, &socket, &mut forwards, query, src, reply)
                    })
                });
                match served {
                    Ok(served) => {
                        for (response, dst) in served.unsent {
                            send_udp(&socket, &response, dst).await;
                        }
                        // One batch per turn, so a flooded task cannot hold the thread that
                        // serves every other task's DNS.
                        if served.full {
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(err) => {
                        debug!(cause = %err, "UDP receive failed");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
            }
        }
    }
}

/// One datagram: writes its response into `reply` and returns true, or spawns its forward (or
/// sends nothing) and returns false.
fn answer_udp(
    task: &Arc<ServedTask>,
    records: &Records,
    socket: &Arc<UdpSocket>,
    forwards: &mut JoinSet<()>,
    query: &[u8],
    src: SocketAddr,
    reply: &mut Vec<u8>,
) -> bool {
    let counters = &task.node.counters;
    bump(&counters.queries_udp);
    if fast::answer(records, &task.scope, query, counters, reply) {
        return true;
    }
    let response = match task.handle(records, query, src, ReceivedOver::Udp) {
        Action::Drop => None,
        Action::Reply(response) => Some(response),
        Action::Forward(pending) => match try_forward_permit(task) {
            Some(permit) => {
                let arrived = Instant::now();
                let (task, socket) = (Arc::clone(task), Arc::clone(socket));
                forwards.spawn(async move {
                    let response = task.forward(&pending, arrived).await;
                    drop(permit);
                    if let Some(response) = response {
                        send_udp(&socket, &response, src).await;
                    }
                });
                None
            }
            None => pending.refused(counters),
        },
    };
    match response {
        Some(response) => {
            *reply = response;
            true
        }
        None => false,
    }
}

/// A forward permit, counting the query as forwarded; `None` when the task is at its limit.
fn try_forward_permit(task: &ServedTask) -> Option<OwnedSemaphorePermit> {
    let permit = Arc::clone(&task.forward_permits).try_acquire_owned().ok()?;
    bump(&task.node.counters.forwarded);
    Some(permit)
}

async fn send_udp(socket: &UdpSocket, response: &[u8], dst: SocketAddr) {
    if let Err(err) = socket.send_to(response, dst).await {
        debug!(%dst, cause = %err, "UDP send failed");
    }
}

/// Accepts connections until the surrounding task is aborted; over the limit, closes them.
pub(crate) async fn serve_tcp(task: Arc<ServedTask>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        warn!(cause = %err, "TCP accept failed");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                };
                match Arc::clone(&task.tcp_permits).try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(serve_connection(Arc::clone(&task), stream, peer, permit));
                    }
                    Err(_) => {
                        debug!(%peer, "TCP connection limit reached; closing");
                        bump(&task.node.counters.refused);
                        drop(stream);
                    }
                }
            }
        }
    }
}

/// Serves length-prefixed messages on one connection, one at a time, until the client closes
/// it, sends nothing for the idle timeout, or an I/O error.
async fn serve_connection(
    task: Arc<ServedTask>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let idle = task.node.config.tcp_idle_timeout;
    loop {
        let message = match timeout(idle, read_message(&mut stream)).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => {
                debug!(%peer, cause = %err, "TCP read failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "TCP connection idle; closing");
                return;
            }
        };
        bump(&task.node.counters.queries_tcp);
        let arrived = Instant::now();
        // The records are read for this message only, not across a forward.
        let action = task.handle(&task.node.records.read(), &message, peer, ReceivedOver::Tcp);
        let response = match action {
            Action::Drop => continue,
            Action::Reply(response) => Some(response),
            Action::Forward(pending) => match try_forward_permit(&task) {
                Some(_permit) => task.forward(&pending, arrived).await,
                None => pending.refused(&task.node.counters),
            },
        };
        let Some(response) = response else { continue };
        match timeout(idle, write_message(&mut stream, &response)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                debug!(%peer, cause = %err, "TCP write failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "TCP client not reading; closing");
                return;
            }
        }
    }
}

/// One length-prefixed message, or `None` on a clean close before its length.
async fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    // TCP responses are encoded with a 65535-byte limit, so this only fails on a bug.
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
