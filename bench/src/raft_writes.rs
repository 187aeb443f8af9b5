//! Raft write throughput and commit latency with 3 managers on the netns cluster.
//!
//! Each write is a `node update --label-add` sent to the leader's local API: one Raft log entry
//! replicated to a majority, applied, and answered. Latency is measured per call by a single
//! writer; throughput by 16 concurrent writers. The peer is the floor of the same call with
//! no write (`node ls` on the leader), so the ratio is what consensus and the disk add.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_control::{
    api::{Empty, UpdateNodeRequest, cluster_client::ClusterClient},
    local_client::connect_unix,
};
use shoal_tests::Cluster;
use tonic::transport::Channel;

const LATENCY_SAMPLES: usize = 500;
const WRITERS: usize = 16;
const WRITES_PER_WRITER: usize = 100;

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(3);
    let leader = cluster.leader(0).map_err(anyhow::Error::msg)?;
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == leader)
        .context("leader not among the nodes")?;
    let socket = cluster.nodes[index].socket();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = connect_unix(&socket).await?;
        let target = cluster.nodes[(index + 1) % 3].name.clone();

        let mut reads = Vec::with_capacity(LATENCY_SAMPLES);
        let mut writes = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES {
            let started = Instant::now();
            ClusterClient::new(channel.clone())
                .list_nodes(Empty {})
                .await?;
            reads.push(started.elapsed());
            let started = Instant::now();
            write(channel.clone(), &target, i).await?;
            writes.push(started.elapsed());
        }
        let started = Instant::now();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let channel = channel.clone();
            let target = target.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES_PER_WRITER {
                    write(channel.clone(), &target, w * WRITES_PER_WRITER + i).await?;
                }
                anyhow::Ok(())
            }));
        }
        for writer in writers {
            writer.await??;
        }
        let elapsed = started.elapsed();
        let total = WRITERS * WRITES_PER_WRITER;

        println!("raft-writes: 3 managers in network namespaces, leader {leader}");
        println!("{:<28} {:>10} {:>10}", "", "p50", "p99");
        let (r50, r99) = percentiles(&mut reads);
        let (w50, w99) = percentiles(&mut writes);
        println!(
            "{:<28} {:>10.2?} {:>10.2?}",
            "read (node ls), floor", r50, r99
        );
        println!("{:<28} {:>10.2?} {:>10.2?}", "committed write", w50, w99);
        println!(
            "{:<28} {:>10.2} {:>10.2}",
            "write / read ratio",
            w50.as_secs_f64() / r50.as_secs_f64(),
            w99.as_secs_f64() / r99.as_secs_f64()
        );
        println!(
            "throughput: {total} writes by {WRITERS} writers in {elapsed:.2?} = {:.0} writes/s",
            total as f64 / elapsed.as_secs_f64()
        );
        anyhow::Ok(())
    })
}

async fn write(channel: Channel, node: &str, i: usize) -> anyhow::Result<()> {
    let request = UpdateNodeRequest {
        node: node.to_string(),
        labels_add: [("bench".to_string(), i.to_string())].into(),
        ..Default::default()
    };
    match ClusterClient::new(channel).update_node(request).await {
        Ok(_) => Ok(()),
        Err(status) => bail!("write {i} failed: {}", status.message()),
    }
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}
