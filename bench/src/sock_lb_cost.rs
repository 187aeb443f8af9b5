//! What the socket-level balancer costs the sockets it does not balance: every `connect(2)` on
//! the host runs `shoal_connect4` (and every unconnected UDP `sendmsg(2)` `shoal_sendmsg4`),
//! which must tell a VIP from anything else before it lets the call go on. Measured as the time
//! of a UDP `connect(2)` in a loop (a route lookup and the hook, no packet sent), with and
//! without the programs attached to the cgroup v2 root, in the same run:
//!
//! - no programs attached.
//! - hook floor: a `connect4` program that does nothing (`shoal_connect4_floor`): what any
//!   program on the hook costs, the kernel's part.
//! - not a VIP: the address's last two octets match no VIP, so the VIP hints (one array read)
//!   say no at once: the path of nearly every socket of a host.
//! - shares a VIP's last two octets: the hints say maybe, and the VIP hash lookup misses (the
//!   path every address took before the hints).
//! - a VIP, not from a task: the hash lookup hits, and the caller's cgroup ancestry is walked
//!   (`bpf_get_current_ancestor_cgroup_id`) to find it is no task of the node's: left alone.
//!
//! The measuring thread runs in a network namespace of its own (loopback only: the addresses
//! are in 127.0.0.0/8, and the VIP is put on `lo` there, so each connect finds a route), not
//! the one the programs were attached from, so it takes the tasks' path rather than the node's
//! (published ports). The programs serve a task subtree (a cgroup the bench makes and removes)
//! as an agent's do, which the measuring thread is not in. Rounds of the
//! four cases are interleaved, so that drift on the machine touches them alike; each is the
//! median of its rounds. Every case is checked to leave the socket's peer as asked (nothing
//! here is balanced).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use shoal_dataplane::{Dataplane, LbTable, netns::run_in, sock_lb};
use shoal_tests::{names::unique_prefix, netns::Netns};

use crate::support::median;

/// The VIP programmed (its hint: last two octets 9.2), and its one backend.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 3);
/// No VIP ends in 8.2.
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 8, 2);
/// Ends in 9.2, as the VIP does.
const SHARES_OCTETS: Ipv4Addr = Ipv4Addr::new(127, 0, 9, 2);
const PORT: u16 = 8080;
/// `connect(2)` calls per round, and rounds per case.
const CALLS: u32 = 200_000;
const ROUNDS: usize = 15;

pub fn run() -> anyhow::Result<()> {
    let root = sock_lb::cgroup2_root().context("no cgroup v2 hierarchy is mounted")?;
    let tasks = TaskSubtree::create(&root)?;
    let table: LbTable = [(VIP, [BACKEND].into())].into();
    let client = Netns::create(&format!("{}-sock-cost", unique_prefix()));
    client.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    let cases: [(&str, Ipv4Addr, Attached); 5] = [
        ("no programs attached", NOT_A_VIP, Attached::Nothing),
        ("hook floor (does nothing)", NOT_A_VIP, Attached::Floor),
        (
            "not a VIP (the hints say no)",
            NOT_A_VIP,
            Attached::SocketLb,
        ),
        (
            "shares a VIP's last two octets",
            SHARES_OCTETS,
            Attached::SocketLb,
        ),
        ("a VIP, not from a task", VIP, Attached::SocketLb),
    ];
    let mut samples: [Vec<f64>; 5] = Default::default();
    let mut attached: Option<(Attached, Dataplane)> = None;
    for _ in 0..ROUNDS {
        for (i, (case, dst, wanted)) in cases.iter().enumerate() {
            // The programs go with the dataplane that attached them (its links).
            if attached.as_ref().map(|(what, _)| what) != Some(wanted) {
                attached = None;
                if *wanted != Attached::Nothing {
                    attached = Some((*wanted, attach(*wanted, &root, &tasks, &table)?));
                }
            }
            let ns = run_in(Path::new(&client.path()), || connect_loop(*dst))?
                .with_context(|| format!("{case}: connect loop"))?;
            samples[i].push(ns);
        }
    }
    drop(attached);
    println!(
        "sock-lb-cost: UDP connect(2) in a loop, {CALLS} calls per round, median of {ROUNDS} \
         interleaved rounds, from a network namespace other than the node's"
    );
    println!("{:<34} {:>12} {:>12}", "case", "ns/connect", "over none");
    // Over none: the median of each round's difference, which drift on the machine moves less
    // than it moves the times themselves.
    for ((case, _, _), ns) in cases.iter().zip(&samples) {
        let over: Vec<f64> = ns.iter().zip(&samples[0]).map(|(a, b)| a - b).collect();
        println!(
            "{case:<34} {:>12.1} {:>12.1}",
            median(ns.clone()),
            median(over)
        );
    }
    Ok(())
}

/// What is attached to the cgroup v2 root for a case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attached {
    Nothing,
    Floor,
    SocketLb,
}

/// A dataplane with `what` attached at `root`: the socket-level balancer as an agent attaches
/// it (the VIP of `table`, serving `tasks`), or the do-nothing floor.
fn attach(
    what: Attached,
    root: &Path,
    tasks: &TaskSubtree,
    table: &LbTable,
) -> anyhow::Result<Dataplane> {
    let mut dataplane = Dataplane::load(None).context("loading the eBPF programs")?;
    if what == Attached::Floor {
        dataplane
            .attach_connect4_floor(root)
            .context("attaching the connect4 floor")?;
        return Ok(dataplane);
    }
    dataplane
        .lb_mut()
        .apply(table)
        .context("programming the VIP")?;
    dataplane
        .attach_socket_lb(root)
        .context("attaching the socket-level balancer")?;
    dataplane
        .serve_tasks_at_socket(&tasks.0)
        .context("serving the task subtree")?;
    Ok(dataplane)
}

/// The mean time of one UDP `connect(2)` to `dst:PORT` over `CALLS` calls, in ns, after
/// checking the socket's peer is `dst` (the programs balance nothing here).
fn connect_loop(dst: Ipv4Addr) -> anyhow::Result<f64> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")?;
    let to = SocketAddr::V4(SocketAddrV4::new(dst, PORT));
    socket
        .connect(to)
        .with_context(|| format!("connect to {to}"))?;
    let peer = socket.peer_addr().context("getpeername")?;
    ensure!(peer == to, "the socket's peer is {peer}, not {to}");
    // Warm up first: the first case after an attach would otherwise pay for the new
    // programs' cold caches.
    for _ in 0..CALLS / 10 {
        socket
            .connect(to)
            .with_context(|| format!("connect to {to}"))?;
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        socket
            .connect(to)
            .with_context(|| format!("connect to {to}"))?;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(CALLS))
}

/// A cgroup v2 directory standing for a node's task subtree, removed on drop.
struct TaskSubtree(PathBuf);

impl TaskSubtree {
    fn create(root: &Path) -> anyhow::Result<TaskSubtree> {
        let dir = root.join(format!("shoal-bench-sock-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TaskSubtree(dir))
    }
}

impl Drop for TaskSubtree {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("sock-lb-cost: removing {}: {e}", self.0.display());
        }
    }
}
