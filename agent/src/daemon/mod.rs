//! `shoal agent`: the node daemon.
//!
//! Lifecycle: flags (command line > environment > `--config` file > defaults) -> root? ->
//! (`--cleanup`/`--purge` end here) -> init tracing -> kernel features? -> resolve config ->
//! lock the state dir -> node identity -> data path -> bind the local API and the Docker
//! Engine API (`docker.sock`, `crate::engine`) -> log what is bound -> tell systemd READY=1
//! -> serve until SIGTERM/SIGINT -> drain: STOPPING=1, stop serving, remove the sockets. Pinned maps, the pinned underlay XDP link and the tc filters on task
//! veths stay, on purpose: tasks outlive the agent, and so does their data path (published
//! ports and established flows included); `--cleanup` removes them.
//!
//! Bad input and a host that cannot run the agent (a bad config file, not root, a missing
//! kernel feature) end with one line and exit status 2, which the systemd unit does not
//! restart on: restarting would change nothing.
//!
//! # Layout
//! - `config_file`: `--config FILE`, agent flags from TOML under the environment and the
//!   command line.
//! - `preflight`: root and the kernel features, each missing one a line naming the fix.
//! - `cleanup`: `--cleanup`/`--purge`: one node's tasks, namespaces, mounts, pins, gateway.
//! - `notify`: systemd's readiness protocol (`READY=1`, `STOPPING=1` on `$NOTIFY_SOCKET`).
//! - `capacity`: what the node has for tasks (CPUs, memory), reported when it joins.
//! - `xdp_mode`: `--xdp-mode auto`: whether native XDP can work on the underlay interface.
//! - `config`: flags resolved against the host (hostname, addresses, underlay interface).
//! - `state_dir`: the state directory and its exclusive lock.
//! - `node_dataplane`: the eBPF data path as this node runs it.
//! - `local_api`: the unix socket and the API service behind it.
//! - `metrics`: the Prometheus endpoint.
//! - `tasks`: the exec driver as the swarm's task runner.

mod capacity;
mod cleanup;
mod config;
mod config_file;
mod local_api;
mod metrics;
mod node_dataplane;
mod notify;
mod preflight;
mod state_dir;
mod tasks;
mod xdp_mode;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use shoal_control::{
    error_chain::Chain,
    identity::NodeId,
    swarm::{NodeConfig, Swarm},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    cli::AgentArgs,
    engine, logging,
    networking::{self, NetworkingConfig, NodeNetworking},
};

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let args = config_file::apply(args).unwrap_or_else(|e| refuse(e));
    preflight::require_root().unwrap_or_else(|e| refuse(e));
    if args.cleanup || args.purge {
        return cleanup::run(&args, args.purge);
    }
    logging::init(&args.log_level, args.log_format)?;
    preflight::require_container_needs().unwrap_or_else(|e| refuse(e));
    preflight::require_kernel_features().unwrap_or_else(|e| refuse(e));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    let notifier = notify::Notifier::from_env();
    let config = config::Config::resolve(&args)?;
    let state = state_dir::StateDir::lock(&args.state_dir)?;
    if let Err(e) = cleanup::record_node_netns(state.path()) {
        warn!(error = %Chain(e.as_ref()), "recording the node's network namespace (for --cleanup)");
    }
    let node_id = NodeId::load_or_create(state.path()).context("loading the node identity")?;
    info!(node_id = %node_id, hostname = %config.hostname, state_dir = %state.path().display(), "node identity");

    let dataplane = node_dataplane::SharedDataplane::new(node_dataplane::NodeDataplane::start(
        &node_id,
        config.underlay_interface.as_deref(),
        args.xdp_mode,
        shoal_dataplane::TableSizes::new(args.lb_flows, args.mesh_flows)?,
    )?);
    let networking = NodeNetworking::new(
        NetworkingConfig {
            node_id: node_id.to_string(),
            node_netns: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            netns_dir: networking::netns_dir(state.path()),
            state_dir: state.path().to_path_buf(),
            data_path_addr: match config.data_path_addr {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            data_path_port: config.data_path_port,
            overlay_mtu: overlay_mtu(config.underlay_interface.as_deref()),
            gateway_subnet: networking::gateway_subnet::resolve(state.path(), args.gateway_subnet)?,
            underlay_interface: config.underlay_interface.clone(),
            dns_upstreams: config.dns_upstreams.clone(),
            task_resolv_conf: config.task_resolv_conf.clone(),
            gossip_addr: config
                .advertise_addr
                .map(|a| SocketAddr::new(a.ip(), config.gossip_port)),
        },
        Some(Arc::new(dataplane.clone())),
    )
    .context("starting the embedded DNS server")?;
    let volumes =
        Arc::new(crate::volumes::Volumes::open(state.path()).context("opening the volume store")?);
    // Tasks survive agent restarts: the executor re-adopts them (and reconnects their
    // networks) before the swarm resumes.
    let executor = crate::executor::Executor::open(
        state.path(),
        networking.clone(),
        volumes.clone(),
        config.hostname.clone(),
        node_id.as_str(),
    )
    .context("opening the task executor")?;
    if let Some(dp) = dataplane.lock().as_mut() {
        dp.serve_tasks_at_socket(executor.task_cgroup_v2().as_deref());
    }
    // Before the stale sandboxes go: the `ingress` one is kept for the node's endpoint.
    networking.resume_routing_mesh();
    networking.remove_stale_sandboxes();
    networking.resume_gossip();
    let tasks = Arc::new(tasks::NodeTasks {
        executor,
        networking: networking.clone(),
    });
    let swarm = Swarm::new(
        NodeConfig {
            node_id: node_id.clone(),
            hostname: config.hostname.clone(),
            state_dir: state.path().to_path_buf(),
            listen_addr: config.listen_addr,
            advertise_addr: config.advertise_addr,
            data_path_addr: config.data_path_addr,
            heartbeat_period: DEFAULT_HEARTBEAT,
            resources: capacity::host_resources(),
        },
        tasks.clone(),
    );
    swarm
        .resume()
        .await
        .context("resuming the swarm membership")?;
    let service = local_api::AgentService::new(
        node_id,
        config,
        state.path(),
        dataplane.clone(),
        swarm.clone(),
        networking.clone(),
        volumes,
    );
    let (metrics_addr, metrics) = metrics::serve(
        args.metrics_addr,
        dataplane.clone(),
        swarm.clone(),
        networking.clone(),
        tasks,
    )
    .await?;
    info!(addr = %metrics_addr, "metrics endpoint listening");
    // Bound last: once the socket exists, the agent is up.
    let listener = local_api::bind(&args.socket)?;
    info!(socket = %args.socket.display(), "local API listening");
    let engine_socket = args
        .engine_socket
        .clone()
        .unwrap_or_else(|| engine::default_path(&args.socket));
    let engine_listener = engine::bind(&engine_socket)?;
    info!(socket = %engine_socket.display(), "Docker Engine API listening");
    let (stop_engine, engine_stopped) = tokio::sync::oneshot::channel::<()>();
    let engine_server = tokio::spawn(engine::serve(
        engine_listener,
        engine::Engine::new(&args.socket)?,
        async {
            let _ = engine_stopped.await;
        },
    ));
    // The socket is bound (connections queue until served, just below) and the data path is
    // loaded: the node is up.
    notifier.ready(&format!("serving on {}", args.socket.display()));
    let stop = async {
        shutdown_signal().await;
        notifier.stopping();
    };
    local_api::serve(listener, service, swarm.clone(), stop).await?;

    info!("shutting down");
    metrics.abort();
    let _ = stop_engine.send(());
    if let Ok(Err(e)) = engine_server.await {
        warn!(error = %Chain(e.as_ref()), "the Engine API stopped");
    }
    swarm.shutdown().await;
    // Detach programs before the socket disappears, so that "socket gone" means "clean".
    drop(dataplane.lock().take());
    local_api::remove_socket(&args.socket);
    engine::remove_socket(&engine_socket);
    drop(state);
    info!("stopped");
    Ok(())
}

/// Bad input, or a host that cannot run the agent: one line, and exit status 2 (the unit's
/// `RestartPreventExitStatus`), since a restart would change nothing.
/// The overlay MTU over this node's underlay interface (1450 without one, or when it cannot be
/// read: Docker's value, logged).
fn overlay_mtu(underlay: Option<&str>) -> u32 {
    use shoal_dataplane::overlay::{DEFAULT_MTU, overlay_mtu_over};
    let Some(interface) = underlay else {
        return DEFAULT_MTU;
    };
    let own_netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    match overlay_mtu_over(&own_netns, interface) {
        Ok(mtu) => {
            info!(
                interface,
                overlay_mtu = mtu,
                "overlay MTU from the underlay's"
            );
            mtu
        }
        Err(e) => {
            warn!(interface, error = %Chain(&e), mtu = DEFAULT_MTU, "reading the underlay's MTU");
            DEFAULT_MTU
        }
    }
}

fn refuse(e: anyhow::Error) -> ! {
    eprintln!("error: {}", Chain(e.as_ref()));
    std::process::exit(2)
}

/// Swarm's default is 5 s; shoal notices a dead node five times sooner.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "received"),
        _ = int.recv() => info!(signal = "SIGINT", "received"),
    }
}
