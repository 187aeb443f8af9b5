//! `shoal whoami`: the built-in demo workload. HTTP on TCP and echo on UDP, on the same port,
//! both answering with who served the request (hostname, task name, addresses), so tests and
//! the demo can see which backend a load balancer picked.

use std::{fmt::Write as _, net::SocketAddr};

use anyhow::Context as _;
use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderMap, Method, Uri, Version},
};
use nix::ifaddrs::getifaddrs;
use tokio::net::{TcpListener, UdpSocket};

use crate::cli::WhoamiArgs;

/// Set by the agent when it starts a task: `<service>.<slot>.<task-id>`.
const TASK_NAME_ENV: &str = "SHOAL_TASK_NAME";

pub fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args.port))
}

async fn serve(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding tcp {addr}"))?;
    let udp = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding udp {addr}"))?;
    println!("whoami listening on tcp and udp port {port}");

    let app = Router::new().fallback(http_whoami);
    let http = axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>());
    tokio::select! {
        result = http => result.context("serving HTTP"),
        result = udp_echo(udp) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn http_whoami(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
) -> String {
    let mut body = identity();
    let _ = writeln!(body, "RemoteAddr: {peer}");
    let _ = writeln!(body, "{method} {uri} {version:?}");
    for (name, value) in &headers {
        let _ = writeln!(
            body,
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    body
}

/// Answers each datagram with the identity, the sender, and the datagram itself.
async fn udp_echo(socket: UdpSocket) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).await.context("receiving udp")?;
        let mut reply = identity();
        let _ = writeln!(reply, "RemoteAddr: {peer}");
        let _ = writeln!(reply, "Echo: {}", String::from_utf8_lossy(&buf[..len]));
        // A failed send (ICMP from a vanished client) must not stop the server.
        let _ = socket.send_to(reply.as_bytes(), peer).await;
    }
}

/// `Hostname:`, `Name:` (when run as a task) and one `IP:` line per address.
fn identity() -> String {
    let mut out = String::new();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "Hostname: {hostname}");
    if let Ok(name) = std::env::var(TASK_NAME_ENV) {
        let _ = writeln!(out, "Name: {name}");
    }
    if let Ok(addrs) = getifaddrs() {
        for addr in addrs.filter_map(|a| a.address) {
            if let Some(v4) = addr.as_sockaddr_in() {
                let _ = writeln!(out, "IP: {}", v4.ip());
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let _ = writeln!(out, "IP: {}", v6.ip());
            }
        }
    }
    out
}
