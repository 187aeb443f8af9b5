//! TCP throughput task to task across two nodes over a shoal overlay (VXLAN), against the same
//! two nodes over the bare underlay, both measured with iperf3 in the same run; the ratio is
//! what encapsulation and the sandbox bridge cost.
//!
//! The topology is built with shoal's own data-path API (`shoal_dataplane::overlay`), the way
//! the agent builds it: two node netns joined by a veth underlay, one sandbox per node
//! (`br0` + `vxlan0`), one task netns per node attached to its sandbox, and each side's task
//! programmed on the other as a remote endpoint (static FDB + neighbour entries).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_dataplane::{
    netns::run_in,
    overlay::{
        DEFAULT_MTU, DEFAULT_VXLAN_PORT, OverlaySpec, Sandbox, add_remote_endpoint, attach_task,
        ensure_sandbox, mac_for_ip, remove_sandbox,
    },
};

use crate::support::{nsenter, output};

/// Measurements per path; the median is reported (odd, so the median is one real run).
const RUNS: usize = 5;
/// Measured seconds per run, after `OMIT_SECONDS` of TCP slow start that iperf3 discards.
const SECONDS: u32 = 3;
const OMIT_SECONDS: u32 = 1;
/// iperf3's port; every server is alone in its netns, so the default cannot collide.
const PORT: u16 = 5201;
const VNI: u32 = 4097;
/// Underlay veth names, inside the node netns (so they cannot collide with the host's).
const UNDERLAY_A: &str = "ula";
const UNDERLAY_B: &str = "ulb";
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const TASK_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const TASK_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);

pub fn run() -> anyhow::Result<()> {
    let mut topo = Topology::build().context("building the two-node overlay topology")?;

    let underlay_mtu = mtu(&topo.node_a, UNDERLAY_A)?;
    let overlay_mtu = mtu(&topo.task_a, "eth0")?;

    // One server per receiving netns, bound to the address under test.
    let node_b = topo.node_b.clone();
    let task_b = topo.task_b.clone();
    topo.start_server(&node_b, NODE_B)?;
    topo.start_server(&task_b, TASK_B)?;

    // Interleaved, so drift on the machine (other work, frequency) hits both paths alike.
    let (mut underlay, mut overlay) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        underlay.push(iperf(&topo.node_a, NODE_A, NODE_B).context("underlay run")?);
        overlay.push(iperf(&topo.task_a, TASK_A, TASK_B).context("overlay run")?);
    }
    drop(topo);

    let (underlay, overlay) = (Summary::of(&underlay), Summary::of(&overlay));
    println!(
        "overlay-throughput: iperf3 TCP, 1 stream, median of {RUNS} runs of {SECONDS} s \
         (+{OMIT_SECONDS} s slow start omitted), netns on one machine"
    );
    println!(
        "{:<38} {:>5} {:>8} {:>15} {:>8}",
        "path", "MTU", "Gbit/s", "min..max", "retrans"
    );
    for (name, mtu, s) in [
        ("underlay: node A -> node B (veth)", underlay_mtu, &underlay),
        ("overlay: task A -> task B (VXLAN)", overlay_mtu, &overlay),
    ] {
        println!(
            "{name:<38} {mtu:>5} {:>8.2} {:>15} {:>8}",
            s.median,
            format!("{:.2}..{:.2}", s.min, s.max),
            s.retransmits
        );
    }
    println!(
        "{:<38} {:>5} {:>8.2}",
        "overlay / underlay",
        "",
        overlay.median / underlay.median
    );
    Ok(())
}

/// Everything the benchmark creates; dropping it (also on panic) stops the iperf3 servers and
/// removes the sandboxes and netns, which takes every link with them.
struct Topology {
    /// Named netns made with `ip netns add` (nodes and tasks), deleted with `ip netns del`.
    netns: Vec<String>,
    /// The directory the sandbox netns are mounted in (a mount point of its own once used):
    /// unmounted and removed last.
    sandbox_dir: PathBuf,
    /// Sandbox netns paths handed to `ensure_sandbox`, removed with `remove_sandbox`.
    sandboxes: Vec<PathBuf>,
    /// iperf3 servers: killed first, since a process inside a netns keeps it (and its links)
    /// alive after the netns file is gone.
    servers: Vec<Child>,
    node_a: PathBuf,
    node_b: PathBuf,
    task_a: PathBuf,
    task_b: PathBuf,
}

impl Topology {
    fn build() -> anyhow::Result<Self> {
        let prefix = format!("shoal-bench-ovl-{}", std::process::id());
        let [node_a, node_b, task_a, task_b] =
            ["na", "nb", "ta", "tb"].map(|n| format!("{prefix}-{n}"));
        let sandbox_dir = Path::new("/run/shoal").join(&prefix);
        let [sandbox_a, sandbox_b] = ["sa", "sb"].map(|n| sandbox_dir.join(n));
        // Names are recorded before anything is created, so a half-built topology is removed
        // too (removing what does not exist is harmless).
        let topo = Topology {
            netns: vec![
                node_a.clone(),
                node_b.clone(),
                task_a.clone(),
                task_b.clone(),
            ],
            sandbox_dir,
            sandboxes: vec![sandbox_a.clone(), sandbox_b.clone()],
            servers: Vec::new(),
            node_a: run_netns_path(&node_a),
            node_b: run_netns_path(&node_b),
            task_a: run_netns_path(&task_a),
            task_b: run_netns_path(&task_b),
        };
        for name in topo.netns.clone() {
            ip(&["netns", "add", &name])?;
        }

        // Underlay: one veth between the two nodes, created directly inside them.
        ip(&[
            "link", "add", UNDERLAY_A, "netns", &node_a, "type", "veth", "peer", UNDERLAY_B,
            "netns", &node_b,
        ])?;
        for (node, dev, addr) in [(&node_a, UNDERLAY_A, NODE_A), (&node_b, UNDERLAY_B, NODE_B)] {
            ip(&["-n", node, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", node, "link", "set", dev, "up"])?;
            ip(&["-n", node, "link", "set", "lo", "up"])?;
        }

        // Overlay: a sandbox per node, requested from a thread in the node netns as the agent
        // does, then a task per node and the other node's task as a remote endpoint.
        let sbox_a = sandbox(&topo.node_a, &sandbox_a, NODE_A)?;
        let sbox_b = sandbox(&topo.node_b, &sandbox_b, NODE_B)?;
        for (sbox, task, addr, host_side) in [
            (&sbox_a, &topo.task_a, TASK_A, "veth-ta"),
            (&sbox_b, &topo.task_b, TASK_B, "veth-tb"),
        ] {
            let ip = format!("{addr}/24").parse().context("task address")?;
            attach_task(sbox, task, "eth0", ip, true, host_side)
                .with_context(|| format!("attaching task {addr}"))?;
        }
        add_remote_endpoint(&sbox_a, TASK_B, mac_for_ip(TASK_B), NODE_B)
            .context("programming task B on node A")?;
        add_remote_endpoint(&sbox_b, TASK_A, mac_for_ip(TASK_A), NODE_A)
            .context("programming task A on node B")?;
        Ok(topo)
    }

    /// Starts `iperf3 -s` bound to `addr` in `netns` and waits (bounded) until it listens.
    fn start_server(&mut self, netns: &Path, addr: Ipv4Addr) -> anyhow::Result<()> {
        let child = nsenter(netns, "iperf3")
            .args(["-s", "-B", &addr.to_string(), "-p", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed? run scripts/setup.sh)")?;
        self.servers.push(child);
        let filter = format!("sport = :{PORT}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = output(nsenter(netns, "ss").args(["-Hltn", &filter]))?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}:{PORT}")) {
                return Ok(());
            }
            if let Some(server) = self.servers.last_mut()
                && let Some(status) = server.try_wait()?
            {
                bail!("iperf3 server on {addr} exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!("iperf3 server on {addr}:{PORT} not listening after 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for path in &self.sandboxes {
            if let Err(e) = remove_sandbox(path) {
                eprintln!(
                    "overlay-throughput: removing sandbox {}: {e}",
                    path.display()
                );
            }
        }
        if self.sandbox_dir.exists() {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&self.sandbox_dir)
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir(&self.sandbox_dir);
        }
        for name in &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn sandbox(node: &Path, path: &Path, vtep: Ipv4Addr) -> anyhow::Result<Sandbox> {
    let spec = OverlaySpec {
        vni: VNI,
        subnet: "10.0.1.0/24".parse().context("subnet")?,
        gateway: Ipv4Addr::new(10, 0, 1, 1),
        vxlan_port: DEFAULT_VXLAN_PORT,
        local_vtep: vtep,
        mtu: DEFAULT_MTU,
    };
    let sandbox = run_in(node, || ensure_sandbox(node, path, &spec))
        .with_context(|| format!("entering {}", node.display()))?
        .with_context(|| format!("ensuring sandbox {}", path.display()))?;
    Ok(sandbox)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    output(Command::new("ip").args(args)).map(drop)
}

/// MTU of `link` in `netns`, as the kernel reports it.
fn mtu(netns: &Path, link: &str) -> anyhow::Result<u64> {
    let out = output(nsenter(netns, "ip").args(["-j", "link", "show", "dev", link]))?;
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `ip -j link`")?;
    links[0]["mtu"]
        .as_u64()
        .with_context(|| format!("no mtu for {link} in {links}"))
}

/// One iperf3 run's result.
struct Sample {
    gbps: f64,
    retransmits: u64,
}

/// One TCP stream from `from` (in `netns`) to the server at `to`, measured at the receiver.
fn iperf(netns: &Path, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<Sample> {
    let out = nsenter(netns, "iperf3")
        .args(["-J", "-c", &to.to_string(), "-B", &from.to_string()])
        .args(["-p", &PORT.to_string(), "--connect-timeout", "3000"])
        .args(["-t", &SECONDS.to_string(), "-O", &OMIT_SECONDS.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3 -c")?;
    // With -J, iperf3 reports errors in the JSON too; stderr may hold more.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 {from} -> {to} ({}): unparsable output: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(error) = report["error"].as_str() {
        bail!("iperf3 {from} -> {to}: {error}");
    }
    if !out.status.success() {
        bail!("iperf3 {from} -> {to}: {}", out.status);
    }
    let end = &report["end"];
    let bits = end["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 {from} -> {to}: no end.sum_received in the report"))?;
    Ok(Sample {
        gbps: bits / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// Median, spread and total retransmits of one path's runs.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    retransmits: u64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Self {
        let mut gbps: Vec<f64> = samples.iter().map(|s| s.gbps).collect();
        gbps.sort_by(f64::total_cmp);
        Summary {
            median: gbps.get(gbps.len() / 2).copied().unwrap_or(f64::NAN),
            min: gbps.first().copied().unwrap_or(f64::NAN),
            max: gbps.last().copied().unwrap_or(f64::NAN),
            retransmits: samples.iter().map(|s| s.retransmits).sum(),
        }
    }
}
