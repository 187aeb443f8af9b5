//! Record propagation: a 3-node swarm scaling `web`, node1's `tasks.web` answers timed against
//! the FDB events of the same network DB changes, and the report.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_tests::{
    Cluster,
    task_net::{sandbox_netns, task_netns},
};

use super::{
    FDB_GRACE, NETWORK, POLL, PROPAGATION_HIGH, PROPAGATION_LOW, PROPAGATION_ROUNDS, SHOAL,
    TIMEOUT, WHOAMI_PORT, resolver::Resolver,
};
use crate::support::{Placed, cli, create_whoami, median, network_id, nsenter, running};

/// One scale of `web` as node1 saw it.
struct Phase {
    /// From `service scale` to `tasks.web` answering the full new set.
    dns: Duration,
    /// From `service scale` to the last FDB change of a remote task.
    fdb: Option<Duration>,
    /// Per remote task added or removed: DNS change time minus FDB change time.
    lags: Vec<f64>,
    /// Remote tasks whose FDB change was never seen (within the grace period).
    missing_fdb: usize,
    /// DNS queries that failed (timeout, error rcode) while polling.
    failures: u64,
}

pub(super) fn propagation() -> anyhow::Result<String> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "web",
        PROPAGATION_LOW,
        WHOAMI_PORT,
        &[],
    )?;
    let mut placed = running(&cluster, "web", PROPAGATION_LOW)?;
    let network = network_id(&cluster, NETWORK)?;
    let asker = placed
        .iter()
        .find(|t| t.node == 0)
        .cloned()
        .with_context(|| format!("no task of web on node1: {placed:?}"))?;
    let netns = task_netns(&cluster.nodes[0].state_dir(), &asker.id);
    let sandbox = sandbox_netns(&cluster.nodes[0].state_dir(), &network);
    let mut resolver = Resolver::new(&netns)?;
    wait_set(&mut resolver, &ips(&placed))?;
    let monitor = FdbMonitor::start(&sandbox)?;

    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..PROPAGATION_ROUNDS {
        for target in [PROPAGATION_HIGH, PROPAGATION_LOW] {
            let (phase, now) = scale(&cluster, &mut resolver, &monitor, &placed, target)?;
            placed = now;
            if target == PROPAGATION_HIGH {
                up.push(phase);
            } else {
                down.push(phase);
            }
        }
    }
    drop(monitor);
    drop(cluster);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns propagation: 3 nodes (1 manager), web scaled {PROPAGATION_LOW} <-> \
         {PROPAGATION_HIGH}, tasks.web polled every {POLL:?} from a task on node1, node1's FDB \
         followed with `bridge monitor fdb`; {PROPAGATION_ROUNDS} rounds"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>15} {:>15} {:>26} {:>9}",
        "", "scale->DNS", "scale->FDB", "DNS - FDB, per remote task", "DNS"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}",
        "", "p50", "max", "p50", "max", "p50", "max", "n", "failures"
    );
    for (name, phases) in [
        (format!("up {PROPAGATION_LOW} -> {PROPAGATION_HIGH}"), &up),
        (
            format!("down {PROPAGATION_HIGH} -> {PROPAGATION_LOW}"),
            &down,
        ),
    ] {
        let dns: Vec<f64> = phases.iter().map(|p| p.dns.as_secs_f64()).collect();
        let fdb: Vec<f64> = phases
            .iter()
            .filter_map(|p| p.fdb.map(|d| d.as_secs_f64()))
            .collect();
        let lags: Vec<f64> = phases.iter().flat_map(|p| p.lags.iter().copied()).collect();
        let missing: usize = phases.iter().map(|p| p.missing_fdb).sum();
        let failures: u64 = phases.iter().map(|p| p.failures).sum();
        let n = if missing > 0 {
            format!("{}+{missing}?", lags.len())
        } else {
            lags.len().to_string()
        };
        let _ = writeln!(
            out,
            "{name:<16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {n:>8} {failures:>9}",
            secs(median(dns.clone())),
            secs(max(&dns)),
            secs(median(fdb.clone())),
            secs(max(&fdb)),
            millis(median(lags.clone())),
            millis(max(&lags)),
        );
    }
    let _ = writeln!(
        out,
        "(`n+k?`: k remote tasks changed in DNS with no FDB event seen within {FDB_GRACE:?})"
    );
    Ok(out)
}

/// Scales `web` to `target` and times node1's DNS answers and FDB; returns the phase and the
/// running tasks afterwards.
fn scale(
    cluster: &Cluster,
    resolver: &mut Resolver,
    monitor: &FdbMonitor,
    before: &[Placed],
    target: usize,
) -> anyhow::Result<(Phase, Vec<Placed>)> {
    let old: BTreeSet<Ipv4Addr> = ips(before);
    monitor.drain();
    let mut fdb_seen: HashMap<String, Instant> = HashMap::new();
    let mut dns_seen: HashMap<Ipv4Addr, Instant> = HashMap::new();
    let mut failures = 0;
    let grow = target > before.len();

    let started = Instant::now();
    cli(
        cluster,
        0,
        &["service", "scale", "--detach", &format!("web={target}")],
    )?;
    // Until DNS shows `target` addresses.
    let done = loop {
        let now = Instant::now();
        monitor.collect(grow, &mut fdb_seen);
        match resolver.lookup(SHOAL, "tasks.web") {
            Ok(set) => {
                let changed: Vec<Ipv4Addr> = if grow {
                    set.difference(&old).copied().collect()
                } else {
                    old.difference(&set).copied().collect()
                };
                for ip in changed {
                    dns_seen.entry(ip).or_insert(now);
                }
                if set.len() == target && (grow || set.is_subset(&old)) {
                    break now;
                }
            }
            Err(_) => failures += 1,
        }
        if now - started > TIMEOUT {
            bail!("tasks.web did not reach {target} addresses in {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    let after = running(cluster, "web", target)?;
    // The remote tasks that came or went, and the MAC their FDB entry carries.
    let changed: Vec<&Placed> = if grow {
        after.iter().filter(|t| !old.contains(&t.ip)).collect()
    } else {
        let now = ips(&after);
        before.iter().filter(|t| !now.contains(&t.ip)).collect()
    };
    let remote: Vec<&Placed> = changed.into_iter().filter(|t| t.node != 0).collect();
    let grace = Instant::now() + FDB_GRACE;
    while remote.iter().any(|t| !fdb_seen.contains_key(&mac_of(t.ip))) && Instant::now() < grace {
        std::thread::sleep(POLL);
        monitor.collect(grow, &mut fdb_seen);
    }
    let mut lags = Vec::new();
    let mut last_fdb = None::<Instant>;
    let mut missing_fdb = 0;
    for t in &remote {
        match (fdb_seen.get(&mac_of(t.ip)), dns_seen.get(&t.ip)) {
            (Some(fdb), Some(dns)) => {
                lags.push(signed_secs(*dns, *fdb));
                last_fdb = Some(last_fdb.map_or(*fdb, |l| l.max(*fdb)));
            }
            _ => missing_fdb += 1,
        }
    }
    let phase = Phase {
        dns: done - started,
        fdb: last_fdb.map(|l| l.saturating_duration_since(started)),
        lags,
        missing_fdb,
        failures,
    };
    Ok((phase, after))
}

/// Waits until `tasks.web` answers exactly `want`.
fn wait_set(resolver: &mut Resolver, want: &BTreeSet<Ipv4Addr>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = resolver.lookup(SHOAL, "tasks.web");
        match &got {
            Ok(set) if set == want => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("tasks.web: {got:?} after {TIMEOUT:?}, expected {want:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `bridge monitor fdb` in a sandbox netns, each line stamped when read. Killed on drop.
struct FdbMonitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl FdbMonitor {
    fn start(sandbox: &Path) -> anyhow::Result<FdbMonitor> {
        let mut child = nsenter(sandbox, "bridge")
            .args(["monitor", "fdb"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bridge monitor fdb")?;
        let stdout = child.stdout.take().context("bridge monitor's stdout")?;
        let (tx, lines) = mpsc::channel();
        // Ends at EOF, when the monitor is killed.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(FdbMonitor { child, lines })
    }

    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Records the first time each MAC was added (`added`) or deleted on vxlan0 with a remote
    /// VTEP (`<mac> dev vxlan0 dst <ip> ...`, `Deleted <mac> dev vxlan0 dst ...`).
    fn collect(&self, added: bool, seen: &mut HashMap<String, Instant>) {
        while let Ok((at, line)) = self.lines.try_recv() {
            let (deleted, rest) = match line.strip_prefix("Deleted ") {
                Some(rest) => (true, rest),
                None => (false, line.as_str()),
            };
            if deleted == added || !rest.contains("dev vxlan0") || !rest.contains(" dst ") {
                continue;
            }
            if let Some(mac) = rest.split_whitespace().next() {
                seen.entry(mac.to_string()).or_insert(at);
            }
        }
    }
}

impl Drop for FdbMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MAC shoal gives a task's interface (and its FDB entries): Docker's `02:42` + the IP.
fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

fn ips(tasks: &[Placed]) -> BTreeSet<Ipv4Addr> {
    tasks.iter().map(|t| t.ip).collect()
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
}

/// `a - b` in seconds, negative when `a` came first.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

fn secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{s:.2}s")
    }
}

fn millis(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{:.1}ms", s * 1e3)
    }
}
