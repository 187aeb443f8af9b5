//! Helpers the benchmarks share: commands in a network namespace, and the CLI calls that set up
//! services on the netns cluster fixture and find their tasks.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_tests::{Cluster, agent::shoal_bin};

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

/// Creates (detached) a service of `replicas` `shoal whoami --port <port>` tasks on `network`,
/// with `extra` options (`--endpoint-mode dnsrr`, `--constraint ...`).
pub(crate) fn create_whoami(
    cluster: &Cluster,
    network: &str,
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
        "--network",
        network,
    ];
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
