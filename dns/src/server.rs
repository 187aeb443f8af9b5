//! The node-wide server: the thread that serves every task, and the handle that keeps one
//! task's sockets served.
//!
//! Every task's sockets are served on one thread with a single-threaded runtime of its own,
//! as dnsmasq serves from one loop: on a multi-threaded runtime, the workers kept handing a
//! busy UDP loop to each other (the DNS benchmark measured about half a context switch per
//! query and 1.45x dnsmasq's CPU per query), and the DNS work of a node is small and
//! non-blocking anyway. Slow work (forwards) is asynchronous and bounded per task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::node::{NodeShared, ServerConfig};
use crate::records::RecordsView;
use crate::stats::{Counters, DnsCounters};
use crate::transport::{self, ServedTask};

/// One per node: every task's sockets are served against the same records and counters, each
/// with that task's own scope.
#[derive(Debug)]
pub struct DnsServer {
    /// Configuration, records and counters, read by every task's loops.
    node: Arc<NodeShared>,
    /// The serving thread's runtime; the thread ends when the server is dropped.
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl DnsServer {
    /// A server answering from `records` (which the caller keeps, to swap them).
    ///
    /// Starts the serving thread; fails only if the thread or its runtime cannot be created.
    pub fn new(config: ServerConfig, records: Arc<RecordsView>) -> io::Result<Arc<DnsServer>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("shoal-dns".into())
            .spawn(move || {
                // Ends when the sender (held by the server) is dropped.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Arc::new(DnsServer {
            node: Arc::new(NodeShared {
                config,
                records,
                counters: Counters::default(),
            }),
            runtime: handle,
            _stop: stop,
        }))
    }

    /// Serves one task from sockets already bound (inside the task's netns) to 127.0.0.11:53.
    ///
    /// `scope` is the task's network IDs in attachment order. Callable from any thread; the
    /// sockets may be blocking std sockets, they are switched to non-blocking here.
    pub fn serve_task(
        self: &Arc<Self>,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        scope: Vec<String>,
    ) -> io::Result<TaskDns> {
        let runtime = &self.runtime;
        // Registers the sockets with the serving thread's reactor.
        let _entered = runtime.enter();
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        info!(
            udp = %display_addr(udp.local_addr()),
            tcp = %display_addr(tcp.local_addr()),
            scope = ?scope,
            "serving task DNS"
        );
        let task = Arc::new(ServedTask::new(Arc::clone(&self.node), scope));
        Ok(TaskDns {
            udp: runtime.spawn(transport::serve_udp(Arc::clone(&task), udp)),
            tcp: runtime.spawn(transport::serve_tcp(Arc::clone(&task), tcp)),
            task,
            _server: Arc::clone(self),
        })
    }

    /// A node-wide snapshot of the counters.
    pub fn counters(&self) -> DnsCounters {
        self.node.counters.snapshot()
    }
}

fn display_addr(addr: io::Result<SocketAddr>) -> String {
    addr.map_or_else(|err| format!("unknown ({err})"), |a| a.to_string())
}

/// One task being served. Stops serving (and closes the sockets, in-flight forwards and TCP
/// connections) when dropped or on [`TaskDns::stop`].
#[derive(Debug)]
pub struct TaskDns {
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
    task: Arc<ServedTask>,
    /// Keeps the serving thread, and so this task's loops, running while the task is served,
    /// even if everyone else has dropped the server.
    _server: Arc<DnsServer>,
}

impl TaskDns {
    /// Stops serving this task.
    pub fn stop(self) {}

    /// Forwards of this task currently waiting on an upstream; never above
    /// [`ServerConfig::max_pending_forwards`].
    pub fn forwards_in_flight(&self) -> usize {
        self.task.forwards_in_flight()
    }
}

impl Drop for TaskDns {
    fn drop(&mut self) {
        debug!(scope = ?self.task.scope, "stopping task DNS");
        self.udp.abort();
        self.tcp.abort();
    }
}
