//! Time from `service create --replicas 50` to all 50 tasks running, on a 3-node netns swarm.
//!
//! The floor is the cost of the processes themselves: the same 50 commands started directly
//! in fresh net, mount and UTS namespaces with util-linux `unshare`, from a shell in a node.
//! The ratio is what scheduling, Raft commits, dispatch on heartbeats and status reporting add.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_control::{
    api::{ListTasksRequest, ServiceRef, ServiceSpec, cluster_client::ClusterClient},
    local_client::connect_unix,
};
use shoal_tests::Cluster;

const REPLICAS: u64 = 50;
const TIMEOUT: Duration = Duration::from_secs(120);

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let socket = cluster.nodes[0].socket();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shoal = runtime.block_on(async {
        let channel = connect_unix(&socket).await?;
        let mut api = ClusterClient::new(channel);
        let spec = ServiceSpec {
            name: "bench".into(),
            command: vec!["sleep".into(), "600".into()],
            replicas: REPLICAS,
            ..Default::default()
        };
        let started = Instant::now();
        api.create_service(spec).await?;
        loop {
            let tasks = api
                .list_tasks(ListTasksRequest {
                    service: "bench".into(),
                    node: String::new(),
                })
                .await?
                .into_inner()
                .tasks;
            let running = tasks.iter().filter(|t| t.state == "running").count() as u64;
            if running == REPLICAS {
                break;
            }
            if started.elapsed() > TIMEOUT {
                bail!("only {running} of {REPLICAS} tasks running after {TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        api.remove_service(ServiceRef {
            service: "bench".into(),
        })
        .await?;
        anyhow::Ok(elapsed)
    })?;

    // The floor: 50 processes in new namespaces, started by a shell in node1. `sleep 601`
    // tells them apart from the service's tasks, which may still be stopping. Their output
    // goes to /dev/null: inheriting the pipe would keep `output()` waiting until they exit.
    let script = format!(
        "for i in $(seq {REPLICAS}); do unshare --net --mount --uts sleep 601 >/dev/null 2>&1 & done; \
         while [ $(pgrep -c -f 'sleep 601') -lt {REPLICAS} ]; do :; done"
    );
    let started = Instant::now();
    let out = cluster
        .node_ns(0)
        .command("sh")
        .args(["-c", &script])
        .output()
        .context("running the floor")?;
    let floor = started.elapsed();
    let _ = Command::new("pkill").args(["-f", "^sleep 601$"]).status();
    if !out.status.success() {
        bail!("floor failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    println!(
        "service-create: {REPLICAS} replicas of `sleep 600` on 3 nodes (netns), 1 s heartbeats"
    );
    println!(
        "{:<34} {:>10}",
        "shoal: create -> all running",
        format!("{shoal:.2?}")
    );
    println!(
        "{:<34} {:>10}",
        "floor: unshare x50 from a shell",
        format!("{floor:.2?}")
    );
    println!(
        "{:<34} {:>10.1}",
        "ratio",
        shoal.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}
