//! The nftables peer of shoal's VIP load balancer, written the way kube-proxy's nftables mode
//! writes services, for the benchmarks that compare the two (`vip-throughput`,
//! `lb-map-update`).
//!
//! ```text
//! table ip shoal_bench_lb
//!   map vips       { type ipv4_addr : verdict }          VIP -> goto svc-<VIP>
//!   chain output   { type nat hook output priority -100 } jump services
//!   chain services { ip daddr vmap @vips }
//!   chain svc-<VIP> { dnat to numgen inc mod N map { 0 : <backend 0>, ... } }   one per VIP
//! ```
//!
//! One verdict-map lookup per packet and one chain (one rule, with its own anonymous map) per
//! service: kube-proxy's `service-ips` map and per-service chains. kube-proxy jumps from the
//! service chain through one more chain per endpoint (for masquerade marks and affinity), and
//! picks with `numgen random`; neither is needed here, so this is the leaner form, with
//! `numgen inc` for the same round robin shoal does. A VIP balances every port and protocol
//! (`dnat to <address>` keeps the port), as a Swarm VIP does; conntrack keeps each flow on
//! its backend and undoes the NAT on replies. A change to one service is written as kube-proxy
//! writes it: that service's chain flushed and its rule added again, in one transaction.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_dataplane::LbTable;
use shoal_tests::task_net::in_netns;

pub(crate) const TABLE: &str = "shoal_bench_lb";

/// The whole table, created from nothing, for `nft -f`.
pub(crate) fn ruleset(table: &LbTable) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {TABLE}");
    let _ = writeln!(
        s,
        "add map ip {TABLE} vips {{ type ipv4_addr : verdict ; }}"
    );
    let _ = writeln!(s, "add chain ip {TABLE} services");
    let _ = writeln!(s, "add rule ip {TABLE} services ip daddr vmap @vips");
    let _ = writeln!(
        s,
        "add chain ip {TABLE} output {{ type nat hook output priority -100 ; policy accept ; }}"
    );
    let _ = writeln!(s, "add rule ip {TABLE} output jump services");
    for (vip, backends) in table {
        let _ = writeln!(s, "add chain ip {TABLE} {}", chain(*vip));
        add_rule(&mut s, *vip, backends);
    }
    for vip in table.keys() {
        let _ = writeln!(
            s,
            "add element ip {TABLE} vips {{ {vip} : goto {} }}",
            chain(*vip)
        );
    }
    s
}

/// One service's new backends, for `nft -f` on a table [`ruleset`] created.
pub(crate) fn set_service(vip: Ipv4Addr, backends: &BTreeSet<Ipv4Addr>) -> String {
    let mut s = format!("flush chain ip {TABLE} {}\n", chain(vip));
    add_rule(&mut s, vip, backends);
    s
}

/// Removes the table (and with it every rule, map and chain).
pub(crate) fn delete() -> String {
    format!("delete table ip {TABLE}\n")
}

/// The chain of one service's rule, named after its VIP.
pub(crate) fn chain(vip: Ipv4Addr) -> String {
    format!("svc-{vip}")
}

fn add_rule(s: &mut String, vip: Ipv4Addr, backends: &BTreeSet<Ipv4Addr>) {
    let _ = write!(s, "add rule ip {TABLE} {} ", chain(vip));
    if backends.is_empty() {
        // As shoal (a TCP reset) and kube-proxy (a reject) do for a service with no endpoint.
        let _ = writeln!(s, "reject with tcp reset");
        return;
    }
    let _ = write!(s, "dnat to numgen inc mod {} map {{ ", backends.len());
    for (i, backend) in backends.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(s, "{sep}{i} : {backend}");
    }
    let _ = writeln!(s, " }}");
}

/// Runs `nft -f -` with `script` on its stdin inside the network namespace at `netns` (nft
/// started from a thread in that namespace, so no `nsenter` process is timed), and returns
/// how long it took from spawning nft until it exited: what kube-proxy pays for each sync.
pub(crate) fn apply(netns: &Path, script: &str) -> anyhow::Result<Duration> {
    in_netns(netns, || {
        let started = Instant::now();
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft (is nftables installed? run scripts/setup.sh)")?;
        let written = child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(script.as_bytes());
        let out = child.wait_with_output().context("waiting for nft")?;
        let elapsed = started.elapsed();
        if !out.status.success() {
            let first = script.lines().next().unwrap_or_default();
            bail!(
                "nft -f ({} lines, starting `{first}`): {}: {}",
                script.lines().count(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.context("writing the script to nft")?;
        Ok(elapsed)
    })
}

/// `nft list chain` of one service, to check that a change took effect.
pub(crate) fn list_service(netns: &Path, vip: Ipv4Addr) -> anyhow::Result<String> {
    in_netns(netns, || {
        let out = Command::new("nft")
            .args(["list", "chain", "ip", TABLE, &chain(vip)])
            .output()
            .context("running nft list chain")?;
        if !out.status.success() {
            bail!(
                "nft list chain {}: {}",
                chain(vip),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}
