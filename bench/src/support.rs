//! Helpers the benchmarks share: commands in a network namespace, the CLI calls that set up
//! services on the netns cluster fixture and find their tasks, program-cost tables, and the
//! wrk rounds and HAProxy peer of the throughput benchmarks.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use shoal_tests::{
    Cluster,
    agent::shoal_bin,
    task_net::{http_from, in_netns},
};

/// Bound on waiting for a service's tasks to run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A command run in the network namespace at `netns` only (sandboxes and tasks need not be
/// under /run/netns, and `ip netns exec` would also remount /sys).
pub(crate) fn nsenter(netns: &Path, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program);
    command
}

/// Runs `command`; its output if it succeeded, its stderr in the error otherwise.
pub(crate) fn output(command: &mut Command) -> anyhow::Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The median of `v` (the upper one of an even count), NaN when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of single test runs' kernel-measured times, in ns.
pub(crate) fn median_run_ns(samples: &[Duration]) -> f64 {
    median(samples.iter().map(|d| d.as_nanos() as f64).collect())
}

/// The header of a per-path program-cost table (`lb-program-cost`, `mesh-program-cost`);
/// `unit` is `ns/packet` (repeated runs) or `ns/run` (single runs).
pub(crate) fn cost_header(unit: &str) {
    println!(
        "{:<40} {:<19} {:>10} {:>9} {:>9} {:>10}",
        "path", "program", unit, "floor", "vs floor", "excess ns"
    );
}

/// One row of a program-cost table: the program's time on a path against the floor's on the
/// same frames.
pub(crate) fn cost_line(path: &str, program: &str, ns: f64, floor: f64) {
    println!(
        "{path:<40} {program:<19} {ns:>10.1} {floor:>9.1} {:>9.2} {:>10.1}",
        ns / floor,
        ns - floor
    );
}

/// The `shoal` CLI against node `node`'s agent; its stdout if it succeeded.
pub(crate) fn cli(cluster: &Cluster, node: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = cluster.nodes[node].cli(args);
    if !out.status.success() {
        bail!(
            "shoal {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates (detached) a service of `replicas` `shoal whoami --port <port>` tasks on `network`
/// (none: only `ingress`, if it publishes a port), with `extra` options (`--endpoint-mode
/// dnsrr`, `--constraint ...`, `-p 8080:80`).
pub(crate) fn create_whoami(
    cluster: &Cluster,
    network: Option<&str>,
    name: &str,
    replicas: usize,
    port: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let bin = shoal_bin().display().to_string();
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--replicas",
        &replicas,
    ];
    if let Some(network) = network {
        args.extend_from_slice(&["--network", network]);
    }
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &bin, "whoami", "--port", port]);
    cli(cluster, 0, &args).map(drop)
}

/// A running task of a service.
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    /// Index of its node in the cluster.
    pub(crate) node: usize,
    pub(crate) id: String,
    pub(crate) slot: u64,
    /// `<service>.<slot>.<id>`
    pub(crate) name: String,
    /// Its address on its first network.
    pub(crate) ip: Ipv4Addr,
}

/// The service's running tasks, once exactly `count` run (bounded wait).
pub(crate) fn running(
    cluster: &Cluster,
    service: &str,
    count: usize,
) -> anyhow::Result<Vec<Placed>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = cli(cluster, 0, &["service", "ps", "--format", "json", service])?;
        let tasks: Vec<serde_json::Value> =
            serde_json::from_str(&out).context("parsing service ps")?;
        let placed: Vec<Placed> = tasks
            .iter()
            .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
            .filter_map(|t| {
                let host = t["node_hostname"].as_str()?;
                let addr = t["networks"][0]["addr"].as_str()?;
                Some(Placed {
                    node: cluster.nodes.iter().position(|n| n.name == host)?,
                    id: t["id"].as_str()?.to_string(),
                    slot: t["slot"].as_u64()?,
                    name: t["name"].as_str()?.to_string(),
                    ip: addr.split('/').next()?.parse().ok()?,
                })
            })
            .collect();
        if placed.len() == count {
            return Ok(placed);
        }
        if Instant::now() > deadline {
            bail!(
                "{service}: {} of {count} tasks running after {TIMEOUT:?}",
                placed.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ID of network `name`, from `network inspect`.
pub(crate) fn network_id(cluster: &Cluster, name: &str) -> anyhow::Result<String> {
    let out = cli(cluster, 0, &["network", "inspect", name])?;
    let all: serde_json::Value = serde_json::from_str(&out).context("parsing network inspect")?;
    all[0]["Id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no Id in {all}"))
}

/// The service's virtual IP on `network` (an ID), from `service inspect`.
pub(crate) fn vip(cluster: &Cluster, service: &str, network: &str) -> anyhow::Result<Ipv4Addr> {
    let out = cli(cluster, 0, &["service", "inspect", service])?;
    let all: serde_json::Value = serde_json::from_str(&out).context("parsing service inspect")?;
    all[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["NetworkID"] == network)
        .and_then(|v| v["Addr"].as_str()?.split('/').next()?.parse().ok())
        .with_context(|| format!("no VIP of {service} on {network} in {all}"))
}

/// `program flag`'s version, for reports: "dnsmasq 2.90", "wrk debian/4.1.0-3+b2".
pub(crate) fn version(program: &str, flag: &str) -> String {
    let out = Command::new(program).arg(flag).output();
    let text = out
        .map(|o| {
            let mut all = String::from_utf8_lossy(&o.stdout).into_owned();
            all.push_str(&String::from_utf8_lossy(&o.stderr));
            all
        })
        .unwrap_or_default();
    // "Dnsmasq version 2.90  Copyright ..." / "Version 1.17.1" / "HAProxy version 2.6.12 ..."
    let numbered = text.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.windows(2).find_map(|w| {
            let numeric = w[1].starts_with(|c: char| c.is_ascii_digit());
            (w[0].eq_ignore_ascii_case("version") && numeric).then_some(w[1])
        })
    });
    // Else the first line's second word: "wrk debian/4.1.0-3+b2 [epoll] ..."
    let number = numbered.or_else(|| text.lines().next()?.split_whitespace().nth(1));
    format!("{program} {}", number.unwrap_or("?"))
}

/// wrk's threads and connections, and the seconds of each measured run and of each warm-up
/// (`vip-throughput`, `mesh-throughput`).
pub(crate) const WRK_THREADS: u32 = 1;
pub(crate) const WRK_CONNECTIONS: u32 = 16;
pub(crate) const WRK_SECONDS: u32 = 4;
const WRK_WARMUP_SECONDS: u32 = 1;
/// Rounds of every peer and mode back to back; the median is shown.
pub(crate) const WRK_ROUNDS: usize = 5;

/// How wrk drives a peer.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Keep-alive connections: requests per second.
    KeepAlive,
    /// `Connection: close`: every request on a new connection.
    Close,
}

impl Mode {
    pub(crate) const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::Close];
}

/// One wrk run: requests per second, and socket errors plus non-2xx answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) errors: u64,
}

/// Each peer's runs, keep-alive then `Connection: close`, in round order.
pub(crate) type Runs = [Vec<Run>; 2];

/// A way of reaching the backends: wrk runs in `netns` against `target`.
pub(crate) struct WrkPeer {
    pub(crate) name: &'static str,
    pub(crate) netns: PathBuf,
    pub(crate) target: SocketAddr,
}

impl WrkPeer {
    /// Waits (bounded) until new connections through the peer reach every backend in
    /// `backends`, each named by whoami's `field` line (`Name: `, `Hostname: `).
    pub(crate) fn wait_balanced(
        &self,
        field: &str,
        backends: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = BTreeSet::new();
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match http_from(&self.netns, self.target) {
                Ok(body) => {
                    let name = body
                        .lines()
                        .find_map(|l| l.strip_prefix(field))
                        .unwrap_or_default();
                    ensure!(
                        backends.contains(name),
                        "{} answered from {name:?}, not a backend:\n{body}",
                        self.target
                    );
                    seen.insert(name.to_string());
                    if seen == *backends {
                        return Ok(());
                    }
                }
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        bail!(
            "{} reached {seen:?} of {backends:?} in 30 s (last error: {last_error})",
            self.target
        )
    }

    /// One wrk run through the peer.
    pub(crate) fn wrk(&self, mode: Mode, seconds: u32) -> anyhow::Result<Run> {
        let mut command = nsenter(&self.netns, "wrk");
        command
            .arg(format!("-t{WRK_THREADS}"))
            .arg(format!("-c{WRK_CONNECTIONS}"))
            .arg(format!("-d{seconds}s"))
            .args(["--timeout", "2s"]);
        if let Mode::Close = mode {
            command.args(["-H", "Connection: close"]);
        }
        command.arg(format!("http://{}/", self.target));
        let out = output(command.stdin(Stdio::null())).context("running wrk")?;
        let report = String::from_utf8_lossy(&out.stdout);
        parse_wrk(&report)
            .with_context(|| format!("{}: unexpected wrk output:\n{report}", self.name))
    }
}

/// A warm-up run of every peer in every mode, then `WRK_ROUNDS` rounds of every peer with
/// keep-alive, then every peer with `Connection: close`, `WRK_SECONDS` each. `run(p, mode,
/// seconds)` runs wrk through peer `p` of `count`. The peers are interleaved run by run,
/// starting with another one each round, so drift on the machine (and what one run leaves
/// behind, such as TIME_WAIT sockets) hits all alike.
pub(crate) fn wrk_rounds(
    count: usize,
    mut run: impl FnMut(usize, Mode, u32) -> anyhow::Result<Run>,
) -> anyhow::Result<Vec<Runs>> {
    for p in 0..count {
        for mode in Mode::ALL {
            run(p, mode, WRK_WARMUP_SECONDS)?;
        }
    }
    let mut results: Vec<Runs> = (0..count).map(|_| Default::default()).collect();
    for round in 0..WRK_ROUNDS {
        for (m, mode) in Mode::ALL.into_iter().enumerate() {
            for p in (0..count).map(|i| (i + round) % count) {
                results[p][m].push(run(p, mode, WRK_SECONDS)?);
            }
        }
    }
    Ok(results)
}

/// How the throughput benchmarks measure, for their reports: "wrk 4.1.0 -t1 -c16, median of
/// 5 rounds of 4 s; haproxy 2.6.12".
pub(crate) fn wrk_conditions() -> String {
    format!(
        "{} -t{WRK_THREADS} -c{WRK_CONNECTIONS}, median of {WRK_ROUNDS} rounds of {WRK_SECONDS} \
         s; {}",
        version("wrk", "--version"),
        version("haproxy", "-v")
    )
}

/// Prints the table of `wrk_rounds`' results: each peer's medians and errors, shoal (the
/// first peer) over each of `versus` (peer index, short name), and every round's numbers.
pub(crate) fn print_wrk_table(names: &[&str], results: &[Runs], versus: &[(usize, &str)]) {
    println!(
        "{:<44} {:>12} {:>8} {:>12} {:>8}",
        "peer", "requests/s", "errors", "conns/s", "errors"
    );
    let medians: Vec<[f64; 2]> = results
        .iter()
        .map(|r| {
            r.clone()
                .map(|runs| median(runs.iter().map(|r| r.rate).collect()))
        })
        .collect();
    for ((name, result), m) in names.iter().zip(results).zip(&medians) {
        let errors = |runs: &[Run]| runs.iter().map(|r| r.errors).sum::<u64>();
        println!(
            "{name:<44} {:>12.0} {:>8} {:>12.0} {:>8}",
            m[0],
            errors(&result[0]),
            m[1],
            errors(&result[1])
        );
    }
    for (i, peer) in versus {
        println!(
            "{:<44} {:>12.2} {:>8} {:>12.2}",
            format!("shoal / {peer}"),
            medians[0][0] / medians[*i][0],
            "",
            medians[0][1] / medians[*i][1]
        );
    }
    println!("per round (requests/s, conns/s):");
    for (name, result) in names.iter().zip(results) {
        let rounds: Vec<String> = result[0]
            .iter()
            .zip(&result[1])
            .map(|(keep_alive, close)| format!("{:.0} {:.0}", keep_alive.rate, close.rate))
            .collect();
        println!("  {name:<42} {}", rounds.join(" | "));
    }
}

/// Requests/sec, and the socket errors and non-2xx/3xx answers wrk reports.
fn parse_wrk(report: &str) -> anyhow::Result<Run> {
    let rate = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec")?;
    let mut errors = 0;
    for line in report.lines().map(str::trim) {
        if let Some(counts) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += counts
                .split(',')
                .filter_map(|c| c.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(Run { rate, errors })
}

/// HAProxy in the foreground (`-db`) in a network namespace, logging its own errors to a file
/// in its scratch directory; killed on drop.
pub(crate) struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    /// Writes `config` into `dir`, starts HAProxy with it in `netns` and waits (5 s at most)
    /// until it accepts connections on `listening`.
    pub(crate) fn start(
        netns: &Path,
        dir: &Path,
        config: &str,
        listening: SocketAddr,
    ) -> anyhow::Result<Haproxy> {
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).context("writing haproxy.cfg")?;
        let log_path = dir.join("haproxy.log");
        let log = File::create(&log_path).context("creating haproxy.log")?;
        let child = nsenter(netns, "haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy (is it installed? run scripts/setup.sh)")?;
        let mut haproxy = Haproxy {
            child,
            log: log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_netns(netns, || {
            std::net::TcpStream::connect_timeout(&listening, Duration::from_millis(200))
        })
        .is_err()
        {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                return Err(haproxy.explain(anyhow!("haproxy exited: {status}")));
            }
            if Instant::now() > deadline {
                let e = anyhow!("haproxy not listening on {listening} after 5 s");
                return Err(haproxy.explain(e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(haproxy)
    }

    /// Adds the log of `haproxy`, if it was started, to an error.
    pub(crate) fn explain_any(haproxy: Option<&Haproxy>, e: anyhow::Error) -> anyhow::Error {
        match haproxy {
            Some(haproxy) => haproxy.explain(e),
            None => e,
        }
    }

    /// Adds HAProxy's log to an error.
    pub(crate) fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if log.trim().is_empty() {
            e
        } else {
            e.context(format!("haproxy's log:\n{}", log.trim()))
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy's configuration: a TCP listener on `bind` balancing round robin over the
/// backends, no health checks (shoal and nftables have none either), no logging.
pub(crate) fn haproxy_config(bind: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut config = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n\nlisten vip\n    bind {bind}\n    \
         balance roundrobin\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!("    server web{i} {backend}\n"));
    }
    config
}
