//! Helpers the benchmarks share: commands in a network namespace, the CLI calls that set up
//! services on the netns cluster fixture and find their tasks, program-cost tables, and the
//! wrk rounds, the machine's CPU time (`/proc/stat`) and the HAProxy peer of the throughput
//! benchmarks.

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

use crate::connect_loop::Tally;

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

/// The seconds of each measured wrk run and of each warm-up (`vip-throughput`,
/// `mesh-throughput`).
pub(crate) const WRK_SECONDS: u32 = 4;
const WRK_WARMUP_SECONDS: u32 = 1;
/// Rounds of every peer and mode back to back; the median is shown.
pub(crate) const WRK_ROUNDS: usize = 5;

/// wrk's threads and connections, the same for every peer of a benchmark: one connection per
/// thread, as many as fit in 16 with the same number for every backend (15 for 3, 16 for 2).
/// Then the direct peer, whose thread `i` connects to backend `i` modulo their number, puts on
/// the backends exactly the load round robin puts: as many connections on each, each in an
/// event loop of its own. (With fewer threads of several connections, a balancer's thread
/// mixes backends where the direct peer's keeps to one, and that alone cost the balancers
/// about 10% of requests/s against direct: `vip-throughput` in bench/README.md.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct WrkShape {
    pub(crate) threads: u32,
    pub(crate) connections: u32,
}

impl WrkShape {
    /// The shape for `backends` backends.
    pub(crate) fn over(backends: usize) -> WrkShape {
        let backends = (backends as u32).max(1);
        let threads = backends * (16 / backends).max(1);
        WrkShape {
            threads,
            connections: threads,
        }
    }
}

/// How wrk drives a peer.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Keep-alive connections: requests per second.
    KeepAlive,
    /// `Connection: close`: every request on a new connection (`connect_loop`).
    Close,
}

impl Mode {
    pub(crate) const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::Close];
}

/// One wrk run: requests per second, and socket errors plus non-2xx answers; the requests it
/// completed, and the machine's busy CPU time over it ([`busy_cpu_seconds`], all CPUs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) errors: u64,
    pub(crate) requests: u64,
    pub(crate) cpu_seconds: f64,
}

impl Run {
    /// The machine's CPU time per 1,000 requests, in ms (the same number as µs per request).
    pub(crate) fn cpu_ms_per_1k(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests as f64
    }
}

/// The machine's busy CPU time since boot, all CPUs, in seconds: the `cpu` line of
/// `/proc/stat`, user + nice + system + irq + softirq + steal (not idle, not iowait; guest
/// time is already in user and nice).
pub(crate) fn busy_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing /proc/stat: {line}"))?;
    ensure!(ticks.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    // /proc/stat counts in USER_HZ, 100 on every Linux architecture's ABI.
    Ok(busy as f64 / 100.0)
}

/// The machine's load averages (`/proc/loadavg`: "0.61 1.14 1.33"), for reports.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// How busy the machine is with nothing measured running: busy CPU seconds per second over
/// `period` (2.0 would be both cores of this VM), and the load averages.
pub(crate) fn machine_busy(period: Duration) -> anyhow::Result<String> {
    let before = busy_cpu_seconds()?;
    std::thread::sleep(period);
    let busy = (busy_cpu_seconds()? - before) / period.as_secs_f64();
    Ok(format!(
        "{busy:.2} CPUs busy over {} s with no wrk running, load average {}",
        period.as_secs(),
        load_average()
    ))
}

/// Each peer's runs, keep-alive then `Connection: close`, in round order.
pub(crate) type Runs = [Vec<Run>; 2];

/// A way of reaching the backends: wrk (of `shape`) runs in `netns` against `target`, from
/// inside the cgroup v2 directory `cgroup` if given. With `also`, the peer is the backends
/// themselves with no load balancer ("direct"): `target` and then `also`, spread as round robin
/// would spread them (see [`WrkPeer::wrk`]).
pub(crate) struct WrkPeer {
    pub(crate) name: &'static str,
    pub(crate) netns: PathBuf,
    pub(crate) target: SocketAddr,
    pub(crate) also: Vec<SocketAddr>,
    pub(crate) cgroup: Option<PathBuf>,
    pub(crate) shape: WrkShape,
}

impl WrkPeer {
    /// A peer whose wrk runs in `netns` against `target`, alone and outside any cgroup.
    pub(crate) fn new(
        name: &'static str,
        netns: PathBuf,
        target: SocketAddr,
        shape: WrkShape,
    ) -> WrkPeer {
        WrkPeer {
            name,
            netns,
            target,
            also: Vec::new(),
            cgroup: None,
            shape,
        }
    }

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
        let targets = self.targets();
        let mut next = targets.iter().cycle();
        while Instant::now() < deadline {
            let target = *next.next().unwrap_or(&self.target);
            match self.get(target) {
                Ok(body) => {
                    let name = body
                        .lines()
                        .find_map(|l| l.strip_prefix(field))
                        .unwrap_or_default();
                    ensure!(
                        backends.contains(name),
                        "{target} answered from {name:?}, not a backend:\n{body}"
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

    /// Every address wrk is pointed at: `target`, then `also`.
    fn targets(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.target];
        all.extend_from_slice(&self.also);
        all
    }

    /// `program args` in the peer's network namespace, and in its cgroup if it has one (a
    /// shell writes its own PID into the cgroup, then becomes `nsenter`).
    fn command(&self, program: &str, args: &[String]) -> Command {
        let mut command = match &self.cgroup {
            None => nsenter(&self.netns, program),
            Some(cgroup) => {
                let mut command = Command::new("sh");
                command
                    .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                    .arg(cgroup.join("cgroup.procs"))
                    .arg("nsenter")
                    .arg(format!("--net={}", self.netns.display()))
                    .args(["--", program]);
                command
            }
        };
        command.args(args);
        command
    }

    /// `GET /` on a new connection from the peer's netns (and cgroup): whoami's answer.
    fn get(&self, target: SocketAddr) -> anyhow::Result<String> {
        if self.cgroup.is_none() {
            return Ok(http_from(&self.netns, target)?);
        }
        let args = ["-sS", "--max-time", "2"].map(str::to_string);
        let mut command = self.command("curl", &args);
        command.arg(format!("http://{target}/"));
        let out = output(command.stdin(Stdio::null()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One run through the peer, and the machine's busy CPU time over it. Keep-alive: wrk; a
    /// direct peer is spread over its addresses as round robin would spread it, one wrk whose
    /// thread `i` connects to address `i` (a Lua `setup`; round robin spreads connections, and
    /// the shape gives each backend the same number). `Connection: close`: the bench's own
    /// client (`connect_loop`), of the same shape, each thread cycling through the peer's
    /// addresses, so a direct peer's thread sends its consecutive connections to the backends
    /// in turn, as a balancer's does.
    pub(crate) fn wrk(&self, mode: Mode, seconds: u32) -> anyhow::Result<Run> {
        let targets = self.targets();
        match mode {
            Mode::Close => self.connect_loop(&targets, seconds),
            Mode::KeepAlive if targets.len() == 1 => self.wrk_once(self.target, None, seconds),
            Mode::KeepAlive => {
                let script = ThreadTargets::write(&targets)?;
                self.wrk_once(self.target, Some(&script.path), seconds)
            }
        }
    }

    /// `shoal-bench connect-loop` of the peer's shape to `targets` in the peer's netns (and
    /// cgroup), and the machine's busy CPU time from just before it starts to just after it
    /// exits.
    fn connect_loop(&self, targets: &[SocketAddr], seconds: u32) -> anyhow::Result<Run> {
        let exe = std::env::current_exe().context("finding shoal-bench itself")?;
        let mut args = vec![
            "connect-loop".to_string(),
            seconds.to_string(),
            self.shape.threads.to_string(),
        ];
        args.extend(targets.iter().map(ToString::to_string));
        let what = format!("connect loop to {targets:?}");
        let (out, cpu_seconds) = self.timed(&exe.display().to_string(), &args, &what)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tally = Tally::parse(stdout.lines().last().unwrap_or_default())
            .with_context(|| format!("{}: {what}", self.name))?;
        Ok(Run {
            rate: tally.requests as f64 / tally.seconds,
            errors: tally.errors,
            requests: tally.requests,
            cpu_seconds,
        })
    }

    /// `program args` through the peer, which must succeed (else an error naming `what`), and
    /// the machine's busy CPU time from just before it starts to just after it exits.
    fn timed(&self, program: &str, args: &[String], what: &str) -> anyhow::Result<(Output, f64)> {
        let before = busy_cpu_seconds()?;
        let out = self
            .command(program, args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {what}"))?;
        let cpu_seconds = busy_cpu_seconds()? - before;
        ensure!(
            out.status.success(),
            "{}: {what}: {}: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok((out, cpu_seconds))
    }

    /// One keep-alive wrk of the peer's shape to `target` (with `script`, if given), and the
    /// machine's busy CPU time over it.
    fn wrk_once(
        &self,
        target: SocketAddr,
        script: Option<&Path>,
        seconds: u32,
    ) -> anyhow::Result<Run> {
        let WrkShape {
            threads,
            connections,
        } = self.shape;
        let mut args = vec![
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--timeout".to_string(),
            "2s".to_string(),
        ];
        if let Some(script) = script {
            args.extend(["-s".to_string(), script.display().to_string()]);
        }
        args.push(format!("http://{target}/"));
        let (out, cpu_seconds) = self.timed("wrk", &args, &format!("wrk to {target}"))?;
        let report = String::from_utf8_lossy(&out.stdout);
        let run = parse_wrk(&report).with_context(|| {
            format!(
                "{}: unexpected wrk output (to {target}):\n{report}",
                self.name
            )
        })?;
        Ok(Run { cpu_seconds, ..run })
    }
}

/// A wrk Lua script that points thread `i` at address `i` (modulo their number), in a file of
/// its own, removed on drop.
struct ThreadTargets {
    path: PathBuf,
}

impl ThreadTargets {
    fn write(targets: &[SocketAddr]) -> anyhow::Result<ThreadTargets> {
        let list: Vec<String> = targets
            .iter()
            .map(|t| format!("{{\"{}\", \"{}\"}}", t.ip(), t.port()))
            .collect();
        let script = format!(
            "-- shoal-bench: thread i connects to address i, as round robin spreads connections.\n\
             local targets = {{ {} }}\n\
             local next = 0\n\
             function setup(thread)\n  \
               local t = targets[next % #targets + 1]\n  \
               next = next + 1\n  \
               thread.addr = wrk.lookup(t[1], t[2])[1]\n\
             end\n",
            list.join(", ")
        );
        let path = std::env::temp_dir().join(format!(
            "shoal-bench-wrk-targets-{}.lua",
            std::process::id()
        ));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        Ok(ThreadTargets { path })
    }
}

impl Drop for ThreadTargets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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

/// How the throughput benchmarks measure, for their reports: "wrk 4.1.0 -t15 -c15 (keep-alive),
/// connect-loop 15 threads (close), median of 5 rounds of 4 s; haproxy 2.6.12".
pub(crate) fn wrk_conditions(shape: WrkShape) -> String {
    format!(
        "{wrk} -t{threads} -c{connections} (keep-alive), connect-loop {threads} threads \
         (close), median of {WRK_ROUNDS} rounds of {WRK_SECONDS} s; {haproxy}",
        wrk = version("wrk", "--version"),
        threads = shape.threads,
        connections = shape.connections,
        haproxy = version("haproxy", "-v")
    )
}

/// Prints the table of `wrk_rounds`' results: each peer's medians and errors, the machine's CPU
/// time per 1,000 requests (keep-alive) and per 1,000 connections (`Connection: close`), and
/// that minus the `direct` peer's (no load balancer): what the load balancer itself costs.
/// Then, for each `(a, b)` of `versus`, a's medians over b's, and a's load-balancer CPU over
/// b's (not against the direct peer, whose is 0 by definition); peers are named by `shorts`
/// there. Last, every round's numbers.
pub(crate) fn print_wrk_table(
    names: &[&str],
    shorts: &[&str],
    results: &[Runs],
    direct: usize,
    versus: &[(usize, usize)],
) {
    println!(
        "{:<44} {:>11} {:>6} {:>10} {:>6} {:>11} {:>10} {:>12} {:>11}",
        "peer",
        "requests/s",
        "errors",
        "conns/s",
        "errors",
        "CPU/1k req",
        "LB/1k req",
        "CPU/1k conn",
        "LB/1k conn"
    );
    let medians = |f: fn(&Run) -> f64| -> Vec<[f64; 2]> {
        results
            .iter()
            .map(|r| r.clone().map(|runs| median(runs.iter().map(f).collect())))
            .collect()
    };
    let rates = medians(|r| r.rate);
    let cpu = medians(Run::cpu_ms_per_1k);
    // What the load balancer costs: the machine's CPU per 1,000 requests over the direct
    // peer's, in each mode.
    let lb: Vec<[f64; 2]> = cpu
        .iter()
        .map(|c| [c[0] - cpu[direct][0], c[1] - cpu[direct][1]])
        .collect();
    for (p, (name, result)) in names.iter().zip(results).enumerate() {
        let errors = |runs: &[Run]| runs.iter().map(|r| r.errors).sum::<u64>();
        let (ms, lb_ms) = (cpu[p], lb[p]);
        println!(
            "{name:<44} {:>11.0} {:>6} {:>10.0} {:>6} {:>8.1} ms {:>7.1} ms {:>9.1} ms {:>8.1} ms",
            rates[p][0],
            errors(&result[0]),
            rates[p][1],
            errors(&result[1]),
            ms[0],
            lb_ms[0],
            ms[1],
            lb_ms[1]
        );
    }
    println!(
        "(CPU: the machine's busy CPU time, all CPUs, from /proc/stat over each wrk run, per \
         1,000 requests (ms per 1k = us per request); LB: minus {}'s, the load balancer's own \
         cost)",
        shorts[direct]
    );
    let ratio = |a: f64, b: f64| {
        if b.abs() < f64::EPSILON {
            "-".to_string()
        } else {
            format!("{:.2}", a / b)
        }
    };
    for &(a, b) in versus {
        let lb_ratio = |m: usize| {
            if b == direct {
                "-".to_string()
            } else {
                ratio(lb[a][m], lb[b][m])
            }
        };
        println!(
            "{:<44} {:>11} {:>6} {:>10} {:>6} {:>11} {:>10} {:>12} {:>11}",
            format!("{} / {}", shorts[a], shorts[b]),
            ratio(rates[a][0], rates[b][0]),
            "",
            ratio(rates[a][1], rates[b][1]),
            "",
            ratio(cpu[a][0], cpu[b][0]),
            lb_ratio(0),
            ratio(cpu[a][1], cpu[b][1]),
            lb_ratio(1)
        );
    }
    println!("per round (requests/s, conns/s; CPU ms per 1k requests, per 1k conns):");
    for (name, result) in names.iter().zip(results) {
        let rounds: Vec<String> = result[0]
            .iter()
            .zip(&result[1])
            .map(|(keep_alive, close)| {
                format!(
                    "{:.0} {:.0} ({:.1} {:.1})",
                    keep_alive.rate,
                    close.rate,
                    keep_alive.cpu_ms_per_1k(),
                    close.cpu_ms_per_1k()
                )
            })
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
    // "  151234 requests in 4.00s, 50.12MB read"
    let requests = report
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no `N requests in`")?;
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
    Ok(Run {
        rate,
        errors,
        requests,
        cpu_seconds: 0.0,
    })
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
