//! gossip: how long an endpoint change takes to reach every member of the network DB, with 3,
//! 100 and 1,000 in-process members on loopback (production SWIM timers: 1 s probes, 200 ms
//! gossip rounds; changes are also pushed at once to 3 random members).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_control::netdb::{Endpoint, NetDb, NetDbConfig};

const ROUNDS: usize = 20;

pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    for n in [3usize, 100, 1000] {
        rt.block_on(measure(n))?;
    }
    Ok(())
}

async fn measure(n: usize) -> anyhow::Result<()> {
    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut dbs: Vec<NetDb> = Vec::with_capacity(n);
    let setup = Instant::now();
    for i in 0..n {
        let mut rx = stop_tx.subscribe();
        let db = NetDb::start(
            NetDbConfig::new(format!("node-{i}"), bind, [42; 32]),
            async move {
                let _ = rx.recv().await;
            },
        )
        .await?;
        db.join_network("bench");
        if let Some(seed) = dbs.first() {
            db.join(&[seed.bound()]).await?;
        }
        dbs.push(db);
    }
    // Wait (bounded) for SWIM to converge so every member knows every other one.
    let limit = Duration::from_secs(if n > 100 { 120 } else { 60 });
    let deadline = Instant::now() + limit;
    let full = loop {
        let min = dbs
            .iter()
            .map(|d| d.members().iter().filter(|m| m.2).count())
            .min()
            .unwrap_or(0);
        if min + 1 >= n {
            break true;
        }
        if Instant::now() > deadline {
            println!(
                "gossip n={n}: membership not fully converged after {limit:?} (min view {min} of {})",
                n - 1
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "gossip n={n}: setup + membership {} in {:.1?}",
        if full { "converged" } else { "partial" },
        setup.elapsed()
    );
    let mut times = Vec::with_capacity(ROUNDS);
    let mut missed = 0;
    for r in 0..ROUNDS {
        let writer = &dbs[(r * 7919) % n];
        let id = format!("task-{r}");
        let start = Instant::now();
        writer.put_endpoint(Endpoint {
            network_id: "bench".into(),
            endpoint_id: id.clone(),
            node_id: String::new(),
            ip: Ipv4Addr::new(10, 0, (r / 250) as u8, (r % 250) as u8 + 2),
            mac: [2, 0, 0, 0, 0, r as u8],
            vtep: Ipv4Addr::LOCALHOST,
            service: "bench".into(),
            aliases: vec![],
        });
        let deadline = start + Duration::from_secs(30);
        loop {
            let done = dbs
                .iter()
                .all(|d| d.endpoints("bench").iter().any(|e| e.endpoint_id == id));
            if done {
                times.push(start.elapsed());
                break;
            }
            if Instant::now() > deadline {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    times.sort();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    println!(
        "gossip n={n}: change -> all members: p50 {p50:.1?}, max {max:.1?} ({} rounds, {missed} not converged in 30 s)",
        times.len()
    );
    let _ = stop_tx.send(());
    // Let the engines leave before the next size starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}
