//! gossip: how long an endpoint change takes to reach every member of the network DB, with 3,
//! 100 and 1,000 in-process members on loopback (production SWIM timers: 1 s probes, 200 ms
//! gossip rounds), against a floor measured in the same run: the same-sized datagram sent by
//! direct UDP unicast from one socket to every member. Also times the withdrawal of a
//! partitioned member's endpoints.
//!
//! Arrival times come from each member's `subscribe()` stream (what DNS and the load balancer
//! follow), not from polling, so measuring does not steal CPU from 1,000 engines on 2 cores.
//!
//! Entry signatures: every member signs its records with its own Ed25519 key (what the CA issues)
//! and verifies the others'. The bench times one signature and one verification of a realistic
//! record, and one verification in push-pull's batches (per signature), and the same with a
//! P-256 key (certificates issued before Ed25519); counts the verifications the members did
//! during the rounds, and reports what they cost as a share of the process's CPU over the same
//! rounds (all of gossip: SWIM, AES-GCM, foca, signatures). Broadcasts are checked one at a
//! time, so the share counts every verification at the single cost.
//!
//! `SHOAL_GOSSIP_SIZES=3,100` runs only some sizes; `SHOAL_GOSSIP_KEYS=p256` gives the members
//! P-256 keys instead (nodes whose certificate predates Ed25519), to compare.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_control::netdb::{
    Change, Endpoint, NetDb, NetDbConfig, PushPullLimits, SigningKey, SigningKeyError,
    verify_entries, verify_entry,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const ROUNDS: usize = 20;
const KEY: [u8; 32] = [42; 32];
/// Per-round limit; the periodic push-pull (30 s) would repair anything later than this.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// About the size of the datagram the network DB sends for one endpoint record (SWIM header,
/// the postcard-encoded record, AES-GCM header and tag), so the floor moves the same bytes.
const FLOOR_PAYLOAD: usize = 200;

pub fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = match std::env::var("SHOAL_GOSSIP_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("SHOAL_GOSSIP_SIZES: comma-separated sizes")
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![3, 100, 1000],
    };
    let keys = match std::env::var("SHOAL_GOSSIP_KEYS").as_deref() {
        Ok("p256") => MemberKeys::P256,
        Ok("ed25519") | Err(_) => MemberKeys::Ed25519,
        Ok(other) => anyhow::bail!("SHOAL_GOSSIP_KEYS: ed25519 or p256, not {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let cost = signature_cost()?;
    println!(
        "gossip: entry signatures ({}): sign {:.1?}, verify {:.1?}, batch verify {:.1?} per \
         signature (push-pull, batches of up to {COST_BATCH} keys); ECDSA P-256: sign {:.1?}, \
         verify {:.1?} (means of {COST_ITERATIONS}, fastest of {COST_REPEATS} runs)",
        cost.algorithm, cost.sign, cost.verify, cost.batch, cost.p256_sign, cost.p256_verify
    );
    let mut rows = Vec::new();
    for n in sizes {
        rows.push(rt.block_on(measure(n, keys))?);
    }
    println!();
    println!(
        "gossip summary ({ROUNDS} rounds per size; times from put_endpoint to the last member)"
    );
    println!(
        "{:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>12}",
        "members",
        "setup",
        "shoal p50",
        "shoal max",
        "floor p50",
        "floor max",
        "p50 x",
        "max x",
        "detected",
        "withdrawn"
    );
    for r in &rows {
        println!(
            "{:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9.1} {:>9.1} {:>11} {:>12}",
            r.n,
            fmt(Some(r.setup)),
            fmt(r.shoal.p50),
            fmt(r.shoal.max),
            fmt(r.floor.p50),
            fmt(r.floor.max),
            ratio(r.shoal.p50, r.floor.p50),
            ratio(r.shoal.max, r.floor.max),
            fmt(r.detected),
            fmt(r.withdrawn),
        );
    }
    println!();
    let (algorithm, sign, verify) = match keys {
        MemberKeys::Ed25519 => (cost.algorithm, cost.sign, cost.verify),
        MemberKeys::P256 => ("ECDSA P-256", cost.p256_sign, cost.p256_verify),
    };
    println!(
        "entry signatures ({algorithm}: sign {sign:.1?}, verify {verify:.1?} each; CPU of the \
         whole process over the rounds)"
    );
    println!(
        "{:>7} {:>14} {:>12} {:>15} {:>13} {:>8} {:>11} {:>11}",
        "members",
        "verifs/change",
        "sig CPU/chg",
        "gossip CPU/chg",
        "sig CPU all",
        "share",
        "idle CPU/s",
        "share @1/s"
    );
    for r in &rows {
        let changes = (ROUNDS - r.shoal.missed).max(1) as f64;
        let sig = sign.as_secs_f64() * ROUNDS as f64 + verify.as_secs_f64() * r.verified as f64;
        let cpu = r.cpu.as_secs_f64();
        let (sig_per_change, cpu_per_change) = (sig / changes, cpu / changes);
        // One change a second in the whole cluster: SWIM's idle cost plus one change's.
        let at_one = 100.0 * sig_per_change / (r.idle + cpu_per_change);
        println!(
            "{:>7} {:>14.0} {:>12} {:>15} {:>13} {:>7.2}% {:>10.2}s {:>10.2}%",
            r.n,
            r.verified as f64 / changes,
            fmt(Some(Duration::from_secs_f64(sig_per_change))),
            fmt(Some(Duration::from_secs_f64(cpu_per_change))),
            fmt(Some(Duration::from_secs_f64(sig))),
            if cpu > 0.0 {
                100.0 * sig / cpu
            } else {
                f64::NAN
            },
            r.idle,
            at_one,
        );
    }
    Ok(())
}

const COST_ITERATIONS: u32 = 2000;
/// How long CPU is measured with no change, before the rounds.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// The members' keys.
#[derive(Clone, Copy)]
enum MemberKeys {
    /// What the CA issues.
    Ed25519,
    /// What certificates issued before Ed25519 have.
    P256,
}

impl MemberKeys {
    fn generate(self) -> Result<SigningKey, SigningKeyError> {
        match self {
            MemberKeys::Ed25519 => SigningKey::generate(),
            MemberKeys::P256 => SigningKey::generate_p256(),
        }
    }
}

/// Distinct signers in the batch timing: a push-pull brings records of many owners.
const COST_BATCH: usize = 64;

/// What one entry signature and one verification cost on this machine.
struct SignatureCost {
    /// Of the keys the members use (what the CA issues).
    algorithm: &'static str,
    sign: Duration,
    /// One at a time, with the key parsed once (as the network DB keeps it).
    verify: Duration,
    /// Per signature, all at once (as push-pull checks a table's worth).
    batch: Duration,
    /// The same with a P-256 key (certificates issued before Ed25519).
    p256_sign: Duration,
    p256_verify: Duration,
}

/// Timings of signatures are taken this many times, and the fastest kept: other work on the
/// machine only ever adds to them.
const COST_REPEATS: usize = 5;

fn signature_cost() -> anyhow::Result<SignatureCost> {
    let mut best = signature_cost_once()?;
    for _ in 1..COST_REPEATS {
        let c = signature_cost_once()?;
        best = SignatureCost {
            algorithm: c.algorithm,
            sign: best.sign.min(c.sign),
            verify: best.verify.min(c.verify),
            batch: best.batch.min(c.batch),
            p256_sign: best.p256_sign.min(c.p256_sign),
            p256_verify: best.p256_verify.min(c.p256_verify),
        };
    }
    Ok(best)
}

fn signature_cost_once() -> anyhow::Result<SignatureCost> {
    let mut e = endpoint(7, "x7c9d0a1b2c3d4e5f6a7b8c9d0");
    e.vip = Some(Ipv4Addr::new(10, 0, 0, 2));
    e.aliases = vec![
        "bench.7.x7c9d0a1b2c3d4e5f6a7b8c9d0".into(),
        "bench.7".into(),
    ];
    let keys: Vec<SigningKey> = (0..COST_BATCH)
        .map(|_| SigningKey::generate())
        .collect::<Result<_, _>>()
        .context("generating keys")?;
    let key_of = |clock: usize| &keys[clock % COST_BATCH];
    let n = COST_ITERATIONS as usize;

    let start = Instant::now();
    let sigs: Vec<Vec<u8>> = (0..n)
        .map(|clock| key_of(clock).sign_entry(&e, "node-7", clock as u64, false))
        .collect();
    let sign = start.elapsed() / COST_ITERATIONS;

    let start = Instant::now();
    let ok = sigs
        .iter()
        .enumerate()
        .filter(|(clock, sig)| {
            key_of(*clock)
                .verifying_key()
                .verify_entry(&e, "node-7", *clock as u64, false, sig)
        })
        .count();
    let verify = start.elapsed() / COST_ITERATIONS;
    anyhow::ensure!(ok == n, "{} signatures did not verify", n - ok);

    let start = Instant::now();
    let entries: Vec<_> = sigs
        .iter()
        .enumerate()
        .map(|(clock, sig)| {
            key_of(clock)
                .verifying_key()
                .entry(&e, "node-7", clock as u64, false, sig)
        })
        .collect();
    let ok = verify_entries(&entries).into_iter().filter(|v| *v).count();
    let batch = start.elapsed() / COST_ITERATIONS;
    anyhow::ensure!(ok == n, "{} signatures did not verify in batches", n - ok);

    let p256 = SigningKey::generate_p256().context("generating a P-256 key")?;
    let start = Instant::now();
    let sigs: Vec<Vec<u8>> = (0..n)
        .map(|clock| p256.sign_entry(&e, "node-7", clock as u64, false))
        .collect();
    let p256_sign = start.elapsed() / COST_ITERATIONS;
    let start = Instant::now();
    let ok = sigs
        .iter()
        .enumerate()
        .filter(|(clock, sig)| {
            verify_entry(p256.public_key(), &e, "node-7", *clock as u64, false, sig)
        })
        .count();
    let p256_verify = start.elapsed() / COST_ITERATIONS;
    anyhow::ensure!(ok == n, "{} P-256 signatures did not verify", n - ok);

    Ok(SignatureCost {
        algorithm: keys[0].algorithm(),
        sign,
        verify,
        batch,
        p256_sign,
        p256_verify,
    })
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (clock ticks of
/// 10 ms: the rounds last seconds, so that is precise enough).
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command (which may hold spaces) start at ")": state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse()
            .context("parsing /proc/self/stat")
    };
    // `rest` starts at field 3 (state), so field k is at index k - 3.
    let total = ticks(14 - 3)? + ticks(15 - 3)?;
    Ok(Duration::from_millis(total * 10))
}

struct Row {
    n: usize,
    setup: Duration,
    shoal: Summary,
    floor: Summary,
    /// Partition -> the first member withdraws the victim's endpoint (SWIM detection).
    detected: Option<Duration>,
    /// First withdrawal -> the last member withdraws it (spread after detection).
    withdrawn: Option<Duration>,
    /// Entry signatures the members verified during the rounds.
    verified: u64,
    /// CPU time of the whole process during the rounds.
    cpu: Duration,
    /// CPU seconds per second with no change being spread (SWIM alone).
    idle: f64,
}

#[derive(Default)]
struct Summary {
    p50: Option<Duration>,
    max: Option<Duration>,
    missed: usize,
}

impl Summary {
    fn of(mut times: Vec<Duration>, missed: usize) -> Summary {
        times.sort();
        Summary {
            p50: times.get(times.len() / 2).copied(),
            max: times.last().copied(),
            missed,
        }
    }
}

fn fmt(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{d:.1?}"))
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => a.as_secs_f64() / b.as_secs_f64(),
        _ => f64::NAN,
    }
}

/// One member saw one endpoint appear, or leave service (drained: its node was declared
/// down, or gone).
struct Arrival {
    member: usize,
    endpoint_id: String,
    serving: bool,
    at: Instant,
}

async fn measure(n: usize, member_keys: MemberKeys) -> anyhow::Result<Row> {
    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);

    // --- 1. start n members, each joining through the first (TCP push-pull + SWIM announce),
    //        each with its node key and everyone's public keys (what the managers send)
    let keys: Vec<SigningKey> = (0..n)
        .map(|_| member_keys.generate())
        .collect::<Result<_, _>>()
        .context("generating node keys")?;
    let certified: HashMap<String, Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("node-{i}"), k.public_key().to_vec()))
        .collect();
    let setup = Instant::now();
    let mut dbs: Vec<NetDb> = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let mut rx = stop_tx.subscribe();
        // Every member connects from 127.0.0.1, one source to push-pull's caps, which are
        // meant for one host each: lift them, as n hosts would have n budgets.
        let config = NetDbConfig {
            push_pull_limits: PushPullLimits {
                max_connections: 4096,
                max_per_source: 4096,
                per_source_rate: 1_000_000,
                per_source_burst: 1_000_000,
            },
            signing_key: Some(key.clone()),
            peer_keys: certified.clone(),
            ..NetDbConfig::new(format!("node-{i}"), bind, KEY)
        };
        let db = NetDb::start(config, async move {
            let _ = rx.recv().await;
        })
        .await
        .with_context(|| format!("starting member {i} (raise `ulimit -n` for 1,000 members)"))?;
        db.join_network("bench");
        if let Some(seed) = dbs.first() {
            db.join(&[seed.bound()]).await?;
        }
        dbs.push(db);
    }
    let started = setup.elapsed();

    // --- 2. wait (bounded) until every member sees every other one alive
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let full = loop {
        let min = dbs.iter().map(NetDb::alive_members).min().unwrap_or(0);
        if min + 1 >= n {
            break true;
        }
        if Instant::now() > deadline {
            println!(
                "gossip n={n}: membership not converged after {limit:?} (smallest view {min} of {})",
                n - 1
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(if n > 100 { 500 } else { 50 })).await;
    };
    let setup = setup.elapsed();
    println!(
        "gossip n={n}: setup {setup:.1?} (members started and joined in {started:.1?}, \
         membership {})",
        if full { "complete" } else { "partial" },
    );

    // --- 3. follow every member's change stream
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel::<Arrival>();
    let mut followers = JoinSet::new();
    for (member, db) in dbs.iter().enumerate() {
        let mut changes = db.subscribe();
        let tx = arrivals_tx.clone();
        followers.spawn(async move {
            loop {
                let (e, serving) = match changes.recv().await {
                    Ok(Change::Upsert(e)) => {
                        let serving = !e.draining;
                        (e, serving)
                    }
                    Ok(Change::Remove(e)) => (e, false),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let at = Instant::now();
                let arrival = Arrival {
                    member,
                    endpoint_id: e.endpoint_id,
                    serving,
                    at,
                };
                if tx.send(arrival).is_err() {
                    break;
                }
            }
        });
    }

    // --- 4. rounds: one member puts an endpoint; time until the last member lists it
    // --- 3b. CPU with no change at all (SWIM probes and gossip rounds), for the share at a
    //         realistic change rate
    let idle_cpu = process_cpu()?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = process_cpu()?.saturating_sub(idle_cpu).as_secs_f64() / IDLE_WINDOW.as_secs_f64();

    let verified_before: u64 = dbs.iter().map(|d| d.stats().entries_verified).sum();
    let cpu_before = process_cpu()?;
    let mut times = Vec::with_capacity(ROUNDS);
    let mut missed = 0;
    for r in 0..ROUNDS {
        let writer = &dbs[writer_of(r, n)];
        let id = format!("task-{r}");
        let start = Instant::now();
        writer.put_endpoint(endpoint(r, &id));
        match wait_all(&mut arrivals, &id, true, n, None, start + ROUND_LIMIT).await {
            Ok((_, last)) => times.push(last - start),
            Err(reached) => {
                missed += 1;
                println!("gossip n={n}: round {r}: {reached} of {n} members in {ROUND_LIMIT:?}");
            }
        }
        // Let the round's retransmissions settle so rounds do not share packets.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = process_cpu()?.saturating_sub(cpu_before);
    let verified = dbs
        .iter()
        .map(|d| d.stats().entries_verified)
        .sum::<u64>()
        .saturating_sub(verified_before);
    let forged: u64 = dbs
        .iter()
        .map(|d| d.stats().dropped_forged + d.stats().dropped_unknown_owner)
        .sum();
    println!(
        "gossip n={n}: rounds used {cpu:.1?} of CPU; {verified} signatures verified, {forged} \
         entries dropped as unsigned"
    );
    let shoal = Summary::of(times, missed);
    println!(
        "gossip n={n}: shoal change -> all members: p50 {}, max {} ({} rounds, {} not converged \
         in {ROUND_LIMIT:?})",
        fmt(shoal.p50),
        fmt(shoal.max),
        ROUNDS - shoal.missed,
        shoal.missed
    );

    // --- 5. floor: the same-sized datagram unicast from one socket to one socket per member
    let floor = floor(n).await?;
    println!(
        "gossip n={n}: floor unicast -> all members: p50 {}, max {} (ratio p50 {:.1}, max {:.1})",
        fmt(floor.p50),
        fmt(floor.max),
        ratio(shoal.p50, floor.p50),
        ratio(shoal.max, floor.max),
    );

    // --- 6. partition the writer of round 1 (a key nobody else has: it can neither send nor
    // receive); time until SWIM declares it down and everyone withdraws its endpoint
    let victim = writer_of(1, n);
    let id = "task-1";
    while arrivals.try_recv().is_ok() {}
    let cut = Instant::now();
    dbs[victim].set_keys(vec![[7; 32]], 0);
    let (detected, withdrawn) = match wait_all(
        &mut arrivals,
        id,
        false,
        n - 1,
        Some(victim),
        cut + Duration::from_secs(60),
    )
    .await
    {
        Ok((first, last)) => (Some(first - cut), Some(last - first)),
        Err(reached) => {
            println!(
                "gossip n={n}: partition: {reached} of {} members withdrew in 60 s",
                n - 1
            );
            (None, None)
        }
    };
    println!(
        "gossip n={n}: partitioned member: detected (first withdrawal) after {}, withdrawn \
         everywhere {} later",
        fmt(detected),
        fmt(withdrawn),
    );

    let _ = stop_tx.send(());
    followers.abort_all();
    // Let the engines leave before the next size starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Row {
        n,
        setup,
        shoal,
        floor,
        detected,
        withdrawn,
        verified,
        cpu,
        idle,
    })
}

/// Spreads writers over the members (7919 is prime, so sizes never alias).
fn writer_of(round: usize, n: usize) -> usize {
    (round * 7919) % n
}

fn endpoint(r: usize, id: &str) -> Endpoint {
    Endpoint {
        network_id: "bench".into(),
        endpoint_id: id.into(),
        node_id: String::new(),
        ip: Ipv4Addr::new(10, 0, (r / 250) as u8, (r % 250) as u8 + 2),
        mac: [2, 0, 0, 0, 0, r as u8],
        vtep: Ipv4Addr::LOCALHOST,
        service: "bench".into(),
        vip: None,
        aliases: vec![],
        service_aliases: vec![],
        draining: false,
    }
}

/// Waits until `want` distinct members (other than `except`) report `id` appearing
/// (`serving`) or leaving service; returns the first and last arrival, or how many were reached by `deadline`.
async fn wait_all(
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    id: &str,
    serving: bool,
    want: usize,
    except: Option<usize>,
    deadline: Instant,
) -> Result<(Instant, Instant), usize> {
    let mut seen = HashSet::new();
    let mut first = None;
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let a = match tokio::time::timeout(left, arrivals.recv()).await {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => return Err(seen.len()),
        };
        if a.endpoint_id != id || a.serving != serving || Some(a.member) == except {
            continue;
        }
        if seen.insert(a.member) {
            first.get_or_insert(a.at);
            if seen.len() == want {
                return Ok((first.unwrap_or(a.at), a.at));
            }
        }
    }
    Err(seen.len())
}

/// The lower bound on this machine: one socket sends the change to each of `n` sockets, each
/// read by its own task (as each member has its engine task); time until the last one has it.
async fn floor(n: usize) -> anyhow::Result<Summary> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let mut addrs = Vec::with_capacity(n);
    let mut readers = JoinSet::new();
    for _ in 0..n {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("floor: bind")?;
        addrs.push(sock.local_addr()?);
        let tx = tx.clone();
        readers.spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok(len) = sock.recv(&mut buf).await {
                if len >= 4 {
                    let round = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if tx.send((round, Instant::now())).is_err() {
                        break;
                    }
                }
            }
        });
    }
    let sender = Arc::new(
        UdpSocket::bind("127.0.0.1:0")
            .await
            .context("floor: bind")?,
    );
    let mut payload = vec![0u8; FLOOR_PAYLOAD];
    let mut times = Vec::with_capacity(ROUNDS);
    let mut missed = 0;
    for r in 0..ROUNDS as u32 {
        payload[..4].copy_from_slice(&r.to_be_bytes());
        let start = Instant::now();
        for to in &addrs {
            sender.send_to(&payload, to).await.context("floor: send")?;
        }
        let mut got = 0;
        let mut last = start;
        let deadline = start + Duration::from_secs(5);
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((round, at))) if round == r => {
                    got += 1;
                    last = last.max(at);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if got == n {
            times.push(last - start);
        } else {
            missed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    readers.abort_all();
    Ok(Summary::of(times, missed))
}
