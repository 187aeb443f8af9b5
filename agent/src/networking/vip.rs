//! Service VIPs on this node: the task-facing eBPF programs on every task's veth, and the load
//! balancer's table (VIP -> running tasks' addresses) kept equal to what the network DB and
//! this node's own endpoints say, so a task starting or stopping anywhere, a scale, a drain or
//! a node's death reaches the maps as fast as gossip brings it. Every VIP of the joined
//! networks that the leader lists stays in the table with no backend when none runs, so its
//! connections are refused rather than lost.
//!
//! The table is handed over whole once (the full reconcile of a start, which re-adopts the
//! pinned maps); from then on only the services that differ from what was handed last go to
//! the data path, one `apply_service` or `remove_service` each, so a change costs its own
//! service's map writes whatever the size of the table. Each refresh also has the data path
//! compare a few VIPs' map entries with what it programmed and repair those that differ.
//! A backend that leaves for good (removed, not draining) also has the sockets the
//! socket-level balancer sent to it destroyed, in this node's tasks and the node itself: no
//! packet of theirs meets the tc path that resets its flows.
//!
//! After an agent restart the maps still hold the last table (they are pinned) while the
//! network DB starts empty. Until it has settled (merged a live member's whole table, or run for
//! [`SETTLE_AFTER`] alone), backends are only added, never removed: removing one resets its
//! flows, and a backend missing only because gossip has not caught up yet must not lose its
//! connections.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use shoal_dataplane::{
    LbTable, MeshTable,
    lb::{ApplyReport, CheckReport},
    sock_destroy::Destroyed,
};
use tracing::{debug, info, warn};

use shoal_control::error_chain::Chain;

use shoal_control::netdb::Endpoint;

use super::{
    NodeNetworking,
    visible::{Dirty, EndpointChange},
};

/// What the networking needs of the eBPF data path (VIPs and published ports): implemented
/// by the agent's shared [`shoal_dataplane::Dataplane`]; absent when the agent runs without
/// one (unit tests).
pub trait ServiceDataplane: Send + Sync {
    /// Attaches the task-facing programs to `interface` inside the namespace at `netns`.
    fn attach_task_veth(&self, netns: &Path, interface: &str) -> anyhow::Result<()>;
    /// Attaches the published ports' reply program to `interface` inside `netns`.
    fn attach_mesh_reply(&self, netns: &Path, interface: &str) -> anyhow::Result<()>;
    /// Makes the published ports' maps hold exactly `table`.
    fn apply_mesh(&self, table: &MeshTable) -> anyhow::Result<()>;
    /// Sets (or forgets, `None`) the VTEP of one ingress backend in the published ports'
    /// maps; writes nothing else.
    fn set_mesh_vtep(&self, ip: Ipv4Addr, vtep: Option<Ipv4Addr>) -> anyhow::Result<()>;
    /// What the published ports' maps hold now.
    fn mesh_table(&self) -> MeshTable;
    /// Makes the maps hold exactly `table`, with the backends of `draining` (per VIP) kept
    /// for their flows but out of the round robin: the full reconcile, on start.
    fn apply(&self, table: &LbTable, draining: &LbTable) -> anyhow::Result<ApplyReport>;
    /// Makes the maps hold `backends` for `vip` (added if new), `draining` kept for their
    /// flows; writes no other VIP's entries.
    fn apply_service(
        &self,
        vip: Ipv4Addr,
        backends: &BTreeSet<Ipv4Addr>,
        draining: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<ApplyReport>;
    /// Removes `vip` and its backends' entries; writes no other VIP's entries.
    fn remove_service(&self, vip: Ipv4Addr) -> anyhow::Result<ApplyReport>;
    /// Compares the maps' entries of up to `budget` VIPs after `after` with what was
    /// programmed and repairs those that differ (see `LoadBalancer::check`).
    fn check_vips(&self, after: Option<Ipv4Addr>, budget: usize) -> anyhow::Result<CheckReport>;
    /// What the maps hold now.
    fn table(&self) -> LbTable;
    /// Forgets flows that are over (closed TCP, idle UDP), VIP and published-port ones;
    /// returns how many entries went.
    fn expire_flows(&self) -> anyhow::Result<usize>;
    /// Destroys the TCP and connected UDP sockets in the network namespaces `netns` that the
    /// socket-level balancer sent to one of `backends`, which left the load balancer for
    /// good (`shoal_dataplane::sock_destroy`); a namespace that fails is skipped (a warning).
    fn destroy_balanced_sockets(
        &self,
        netns: &[PathBuf],
        backends: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<Destroyed>;
}

/// How long a network DB that has met nobody is waited for before backends may be removed.
pub const SETTLE_AFTER: Duration = Duration::from_secs(5);
/// How often the table is recomputed even without a change (applies what was deferred).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often flows that are over are removed from the flow table.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);
/// VIPs whose map entries each refresh compares with what was programmed (about a dozen
/// lookups each, under the data path's lock): 10,000 VIPs are gone round in 40 s.
const CHECK_BUDGET: usize = 256;

/// The load balancer as this node runs it.
pub struct Vips {
    dataplane: Option<Arc<dyn ServiceDataplane>>,
    state: Mutex<VipState>,
    /// What was handed to the data path, per VIP; `None` until the first full reconcile.
    programmed: Mutex<Option<BTreeMap<Ipv4Addr, ServiceBackends>>>,
}

#[derive(Default)]
struct VipState {
    /// When the network DB started in this agent's life.
    db_started: Option<Instant>,
    /// Latched once removals are allowed.
    settled: bool,
    /// Where the next background check of the maps starts (after this VIP).
    check_after: Option<Ipv4Addr>,
    /// `settled` as the last refresh saw it.
    settle_seen: bool,
    /// VIPs the data path failed to take: computed and handed again at the next refresh.
    retry: BTreeSet<Ipv4Addr>,
    /// The next refresh is a full reconcile (the last one failed half way).
    full_next: bool,
}

impl Vips {
    pub fn new(dataplane: Option<Arc<dyn ServiceDataplane>>) -> Vips {
        Vips {
            dataplane,
            state: Mutex::default(),
            programmed: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, VipState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn programmed(&self) -> MutexGuard<'_, Option<BTreeMap<Ipv4Addr, ServiceBackends>>> {
        self.programmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the task-facing programs on a task's veth (its sandbox end).
    pub fn attach(&self, sandbox: &Path, interface: &str) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.attach_task_veth(sandbox, interface),
            None => Ok(()),
        }
    }

    /// Puts the published ports' reply program on `interface` in `netns`.
    pub fn attach_mesh_reply(&self, netns: &Path, interface: &str) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.attach_mesh_reply(netns, interface),
            None => Ok(()),
        }
    }

    /// Makes the published ports' maps hold exactly `table`.
    pub fn apply_mesh(&self, table: &MeshTable) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.apply_mesh(table),
            None => Ok(()),
        }
    }

    /// Sets (or forgets) one ingress backend's VTEP in the published ports' maps.
    pub fn set_mesh_vtep(&self, ip: Ipv4Addr, vtep: Option<Ipv4Addr>) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.set_mesh_vtep(ip, vtep),
            None => Ok(()),
        }
    }

    /// What the published ports' maps hold now.
    pub fn mesh_table(&self) -> MeshTable {
        self.dataplane
            .as_ref()
            .map(|dp| dp.mesh_table())
            .unwrap_or_default()
    }
}

/// Which VIPs a refresh computes again.
#[derive(Debug, PartialEq, Eq)]
enum Scope {
    /// Every one: the full reconcile.
    All,
    /// These only: those whose endpoints changed, and any other named dirty.
    Vips(BTreeSet<Ipv4Addr>),
}

/// Whether backends may be removed yet (see the module's comment), and whether that became
/// true since the last refresh (what was kept meanwhile is then reconciled).
#[derive(Clone, Copy, Debug)]
pub(super) struct Settle {
    pub settled: bool,
    pub newly: bool,
}

impl NodeNetworking {
    /// Hands the data path the VIPs whose backends `changes` touched (and those `dirty`
    /// names), each computed from the visible endpoints behind it alone; every VIP only for a
    /// full reconcile (a start or re-adoption, missed changes, a network joined or left, the
    /// leader's first word, the network DB settled). A change thus costs its own
    /// service's work, however many services there are. One refresh at a time: the record of
    /// what was handed is held throughout, so an older table never overwrites a newer one.
    pub(super) fn refresh_vips(&self, changes: &[EndpointChange], dirty: &Dirty, settle: Settle) {
        let Some(dp) = self.vips.dataplane.clone() else {
            return;
        };
        let mut programmed = self.vips.programmed();
        let scope = {
            let mut state = self.vips.state();
            let full_next = std::mem::take(&mut state.full_next);
            if programmed.is_none() || dirty.all || dirty.all_vips || settle.newly || full_next {
                state.retry.clear();
                Scope::All
            } else {
                let mut vips = std::mem::take(&mut state.retry);
                vips.extend(dirty.vips.iter().copied());
                vips.extend(changes.iter().flat_map(EndpointChange::vips));
                if vips.is_empty() {
                    return;
                }
                Scope::Vips(vips)
            }
        };
        let mut desired = self.desired_services(&scope);
        if !settle.settled {
            // Keep what the maps hold; only add.
            match (&scope, programmed.as_ref()) {
                (Scope::Vips(vips), Some(handed)) => {
                    for vip in vips {
                        if let Some(held) = handed.get(vip) {
                            desired.entry(*vip).or_default().keep(held);
                        }
                    }
                }
                _ => {
                    for (vip, backends) in dp.table() {
                        let held = ServiceBackends {
                            backends,
                            draining: BTreeSet::new(),
                        };
                        desired.entry(vip).or_default().keep(&held);
                    }
                }
            }
        }
        let mut gone = BTreeSet::new();
        let (report, failed) = match programmed.as_mut() {
            None => {
                let (wanted, draining) = tables(&desired);
                match dp.apply(&wanted, &draining) {
                    Ok(report) => {
                        *programmed = Some(desired);
                        (report, None)
                    }
                    // What did not take (a VIP past the node's capacity keeps its old
                    // backends) is handed over again, service by service, at the next refresh.
                    Err(e) => {
                        let held = dp.table();
                        let mut taken = desired;
                        taken.retain(|vip, s| held.get(vip) == Some(&s.backends));
                        // And a VIP that should have gone but is still there goes then.
                        for (vip, backends) in held {
                            if !wanted.contains_key(&vip) {
                                let draining = BTreeSet::new();
                                taken.insert(vip, ServiceBackends { backends, draining });
                            }
                        }
                        *programmed = Some(taken);
                        self.vips.state().full_next = true;
                        (ApplyReport::default(), Some((1, e)))
                    }
                }
            }
            Some(handed) => {
                let leaving = leaving(handed, &desired, &scope);
                let done = hand_over(dp.as_ref(), handed, &desired, &scope);
                self.vips.state().retry.extend(done.failed_vips);
                gone = gone_for_good(leaving, handed, &desired);
                (done.report, done.failed)
            }
        };
        drop(programmed);
        if !gone.is_empty() {
            self.destroy_balanced_sockets(dp.as_ref(), &gone);
        }
        if report != ApplyReport::default() {
            info!(
                vips_added = report.vips_added,
                vips_removed = report.vips_removed,
                backends_added = report.backends_added,
                backends_removed = report.backends_removed,
                "service VIPs updated"
            );
        }
        if let Some((services, e)) = failed {
            warn!(services, error = %Chain(e.as_ref()), "updating the service VIPs");
        }
    }

    /// The VIPs of `scope` as they should be: a VIP the leader lists on a network this node
    /// has joined stays, with no backend if none runs (the programs then refuse its
    /// connections at once: reset, port unreachable); the visible endpoints behind each,
    /// withdrawn ones draining (their flows go on until they are gone, see
    /// `executor::stop`); and the host-mode frontends with this node's tasks behind them.
    fn desired_services(&self, scope: &Scope) -> BTreeMap<Ipv4Addr, ServiceBackends> {
        let filter = match scope {
            Scope::All => None,
            Scope::Vips(vips) => Some(vips),
        };
        let mut wanted = LbTable::new();
        let mut draining = LbTable::new();
        for vip in self.known_vips(filter) {
            wanted.entry(vip).or_default();
        }
        {
            let visible = self.visible();
            let mut add = |e: &Endpoint| {
                if let Some(vip) = e.vip {
                    let backends = wanted.entry(vip).or_default();
                    if e.draining {
                        draining.entry(vip).or_default().insert(e.ip);
                    } else {
                        backends.insert(e.ip);
                    }
                }
            };
            match filter {
                None => visible.all().for_each(&mut add),
                Some(vips) => vips
                    .iter()
                    .flat_map(|vip| visible.with_vip(*vip))
                    .for_each(&mut add),
            }
        }
        self.add_host_frontends(&mut wanted, &mut draining, filter);
        services(&wanted, &draining)
    }

    /// Where backends may be removed yet (see [`Settle`]).
    pub(super) fn settle(&self) -> Settle {
        let settled = self.vips_settled();
        let mut state = self.vips.state();
        let newly = settled && !state.settle_seen;
        state.settle_seen |= settled;
        Settle { settled, newly }
    }

    /// Ends the connections the socket-level balancer gave to `gone`, backends that left
    /// the load balancer for good (not draining: removed): in every task's network
    /// namespace and the node's own (its clients of published ports), the sockets it sent to
    /// them are destroyed, as the tc path resets such flows. Nothing else would end them:
    /// their packets never meet the tc programs.
    fn destroy_balanced_sockets(&self, dp: &dyn ServiceDataplane, gone: &BTreeSet<Ipv4Addr>) {
        let mut netns = vec![self.config.node_netns.clone()];
        // The executor mounts each task's namespace there as `task-<task id>`.
        if let Ok(entries) = std::fs::read_dir(&self.config.netns_dir) {
            netns.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("task-"))
                    .map(|e| e.path()),
            );
        }
        match dp.destroy_balanced_sockets(&netns, gone) {
            Ok(d) if d.total() > 0 => info!(
                tcp = d.tcp,
                udp = d.udp,
                backends = ?gone,
                "sockets balanced to removed backends destroyed"
            ),
            Ok(_) => {}
            Err(e) => {
                warn!(error = %Chain(e.as_ref()), "destroying the sockets balanced to removed backends")
            }
        }
    }

    /// Compares the map entries of the next [`CHECK_BUDGET`] VIPs with what was programmed
    /// and has those that differ rewritten (a low-priority repair; the check goes round all
    /// VIPs in turn). Nothing before the first full reconcile.
    pub(super) fn check_vips(&self) {
        let Some(dp) = self.vips.dataplane.clone() else {
            return;
        };
        if self.vips.programmed().is_none() {
            return;
        }
        let after = self.vips.state().check_after;
        match dp.check_vips(after, CHECK_BUDGET) {
            Ok(report) => {
                self.vips.state().check_after = report.next;
                if report.repaired > 0 {
                    warn!(
                        repaired = report.repaired,
                        checked = report.checked,
                        "service VIP map entries differed from what was programmed: rewritten"
                    );
                }
            }
            Err(e) => warn!(error = %Chain(e.as_ref()), "checking the service VIP maps"),
        }
    }

    /// May backends be removed yet? See the module's comment. (The published ports' VTEPs
    /// follow the same rule.)
    pub(super) fn vips_settled(&self) -> bool {
        let mut state = self.vips.state();
        if state.settled {
            return true;
        }
        let Some(db) = self.db() else {
            return false;
        };
        let started = *state.db_started.get_or_insert_with(Instant::now);
        // A member alive is not enough: the table comes with the first push-pull, and a full
        // reconcile before it would remove every remote backend (resetting their flows).
        if db.has_synced() || started.elapsed() >= SETTLE_AFTER {
            debug!("network DB settled: stale VIP backends may be removed");
            state.settled = true;
        }
        state.settled
    }
}

/// One VIP as the agent hands it to the data path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceBackends {
    backends: BTreeSet<Ipv4Addr>,
    /// Withdrawn backends whose flows go on (see [`ServiceDataplane::apply`]).
    draining: BTreeSet<Ipv4Addr>,
}

/// The table and its draining backends, per VIP.
fn services(wanted: &LbTable, draining: &LbTable) -> BTreeMap<Ipv4Addr, ServiceBackends> {
    wanted
        .iter()
        .map(|(vip, backends)| {
            let service = ServiceBackends {
                backends: backends.clone(),
                draining: draining.get(vip).cloned().unwrap_or_default(),
            };
            (*vip, service)
        })
        .collect()
}

impl ServiceBackends {
    /// Does the data path keep `ip` for this VIP (in the round robin or draining)?
    fn holds(&self, ip: &Ipv4Addr) -> bool {
        self.backends.contains(ip) || self.draining.contains(ip)
    }

    /// Adds what `held` has that this has not, as `held` has it (the network DB has not
    /// settled: nothing is removed yet).
    fn keep(&mut self, held: &ServiceBackends) {
        let kept = self.missing(&held.backends);
        self.backends.extend(kept);
        let kept = self.missing(&held.draining);
        self.draining.extend(kept);
    }

    /// What of `ips` this holds neither as a backend nor as draining.
    fn missing(&self, ips: &BTreeSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
        ips.iter().filter(|ip| !self.holds(ip)).copied().collect()
    }
}

/// The backends and the draining backends per VIP, as [`ServiceDataplane::apply`] takes
/// them.
fn tables(services: &BTreeMap<Ipv4Addr, ServiceBackends>) -> (LbTable, LbTable) {
    let wanted = services
        .iter()
        .map(|(vip, s)| (*vip, s.backends.clone()))
        .collect();
    let draining = services
        .iter()
        .filter(|(_, s)| !s.draining.is_empty())
        .map(|(vip, s)| (*vip, s.draining.clone()))
        .collect();
    (wanted, draining)
}

/// Per VIP of `handed` in `scope`, the backends it holds (in the round robin or draining)
/// that `desired` no longer has for it.
fn leaving(
    handed: &BTreeMap<Ipv4Addr, ServiceBackends>,
    desired: &BTreeMap<Ipv4Addr, ServiceBackends>,
    scope: &Scope,
) -> BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>> {
    scope
        .handed(handed)
        .filter(|(vip, old)| desired.get(vip) != Some(*old))
        .filter_map(|(vip, old)| {
            let new = desired.get(&vip);
            let left: BTreeSet<Ipv4Addr> = (old.backends.iter().chain(&old.draining))
                .filter(|ip| !new.is_some_and(|n| n.holds(ip)))
                .copied()
                .collect();
            (!left.is_empty()).then_some((vip, left))
        })
        .collect()
}

impl Scope {
    /// The VIPs of `handed` in this scope.
    fn handed<'a>(
        &'a self,
        handed: &'a BTreeMap<Ipv4Addr, ServiceBackends>,
    ) -> Box<dyn Iterator<Item = (Ipv4Addr, &'a ServiceBackends)> + 'a> {
        match self {
            Scope::All => Box::new(handed.iter().map(|(vip, s)| (*vip, s))),
            Scope::Vips(vips) => Box::new(
                vips.iter()
                    .filter_map(|vip| handed.get(vip).map(|s| (*vip, s))),
            ),
        }
    }
}

/// Of the backends `leaving` their VIPs, those gone for good once `handed` records what the
/// data path took: their VIP's change was applied, and no VIP holds them any more (an
/// address can back several host-mode frontends).
fn gone_for_good(
    leaving: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>,
    handed: &BTreeMap<Ipv4Addr, ServiceBackends>,
    desired: &BTreeMap<Ipv4Addr, ServiceBackends>,
) -> BTreeSet<Ipv4Addr> {
    let mut gone: BTreeSet<Ipv4Addr> = leaving
        .into_iter()
        .filter(|(vip, _)| handed.get(vip) == desired.get(vip))
        .flat_map(|(_, left)| left)
        .collect();
    if !gone.is_empty() {
        for service in handed.values().chain(desired.values()) {
            gone.retain(|ip| !service.holds(ip));
        }
    }
    gone
}

/// A change to hand the data path.
#[derive(Debug, PartialEq, Eq)]
enum Delta<'a> {
    Apply(Ipv4Addr, &'a ServiceBackends),
    Remove(Ipv4Addr),
}

/// The services of `desired` that differ from what was `handed`, and those that went (removals
/// first), within `scope`: what `desired` holds outside it is not looked at.
fn delta<'a>(
    handed: &BTreeMap<Ipv4Addr, ServiceBackends>,
    desired: &'a BTreeMap<Ipv4Addr, ServiceBackends>,
    scope: &Scope,
) -> Vec<Delta<'a>> {
    let gone = scope
        .handed(handed)
        .filter(|(vip, _)| !desired.contains_key(vip))
        .map(|(vip, _)| Delta::Remove(vip));
    let in_scope = |vip: &Ipv4Addr| match scope {
        Scope::All => true,
        Scope::Vips(vips) => vips.contains(vip),
    };
    let changed = desired
        .iter()
        .filter(|(vip, _)| in_scope(vip))
        .filter(|(vip, service)| handed.get(vip) != Some(service))
        .map(|(vip, service)| Delta::Apply(*vip, service));
    gone.chain(changed).collect()
}

/// What [`hand_over`] did.
struct HandedOver {
    report: ApplyReport,
    /// The VIPs that failed (forgotten in `handed`: handed over again at the next refresh).
    failed_vips: BTreeSet<Ipv4Addr>,
    /// How many failed, and the first error.
    failed: Option<(usize, anyhow::Error)>,
}

/// Hands `dp` the services of `desired` that differ from `handed` within `scope`, one by
/// one, and records each one done in `handed`.
fn hand_over(
    dp: &dyn ServiceDataplane,
    handed: &mut BTreeMap<Ipv4Addr, ServiceBackends>,
    desired: &BTreeMap<Ipv4Addr, ServiceBackends>,
    scope: &Scope,
) -> HandedOver {
    let mut done = HandedOver {
        report: ApplyReport::default(),
        failed_vips: BTreeSet::new(),
        failed: None,
    };
    for change in delta(handed, desired, scope) {
        let (vip, result) = match change {
            Delta::Apply(vip, service) => {
                let result = dp.apply_service(vip, &service.backends, &service.draining);
                match &result {
                    Ok(_) => handed.insert(vip, service.clone()),
                    Err(_) => handed.remove(&vip),
                };
                (vip, result)
            }
            Delta::Remove(vip) => {
                let result = dp.remove_service(vip);
                if result.is_ok() {
                    handed.remove(&vip);
                }
                (vip, result)
            }
        };
        match result {
            Ok(r) => done.report.add(r),
            Err(e) => {
                done.failed_vips.insert(vip);
                match &mut done.failed {
                    Some((n, _)) => *n += 1,
                    None => done.failed = Some((1, e.context(format!("VIP {vip}")))),
                }
            }
        }
    }
    done
}

/// Refreshes every [`REFRESH_EVERY`] (changes are applied as they come by the network DB
/// follower; this catches what was deferred while the DB settled, and retries what failed),
/// and checks the next [`CHECK_BUDGET`] VIPs' map entries.
/// Also removes the flows that are over every [`EXPIRE_EVERY`], so churn of short connections
/// never makes the flow table's LRU evict a quiet live one.
pub async fn refresh_periodically(networking: Arc<NodeNetworking>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    let mut last_expiry = Instant::now();
    loop {
        tick.tick().await;
        let n = networking.clone();
        let expire = last_expiry.elapsed() >= EXPIRE_EVERY;
        if expire {
            last_expiry = Instant::now();
        }
        let done = tokio::task::spawn_blocking(move || {
            n.ensure_ingress_endpoint();
            n.refresh_services();
            n.check_vips();
            if expire && let Some(dp) = &n.vips.dataplane {
                match dp.expire_flows() {
                    Ok(0) => {}
                    Ok(removed) => debug!(removed, "flows that are over forgotten"),
                    Err(e) => warn!(error = %Chain(e.as_ref()), "expiring flows"),
                }
            }
        })
        .await;
        if let Err(e) = done {
            warn!(error = %Chain(&e), "refreshing the service VIPs failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::Ipv4Addr,
        path::Path,
        sync::Mutex,
    };

    use shoal_dataplane::{LbTable, MeshTable, lb::ApplyReport, lb::CheckReport};

    use super::{
        Delta, Destroyed, Scope, ServiceBackends, ServiceDataplane, delta, gone_for_good,
        hand_over, leaving, services,
    };

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn service(backends: &[u8], draining: &[u8]) -> ServiceBackends {
        ServiceBackends {
            backends: backends.iter().map(|b| ip(*b)).collect(),
            draining: draining.iter().map(|b| ip(*b)).collect(),
        }
    }

    #[test]
    fn only_services_that_changed_or_went_are_handed_over() {
        let handed: BTreeMap<Ipv4Addr, ServiceBackends> = [
            (ip(100), service(&[1, 2], &[])),
            (ip(101), service(&[3], &[])),
            (ip(102), service(&[5], &[])),
            (ip(103), service(&[6], &[])),
        ]
        .into();
        let desired: BTreeMap<Ipv4Addr, ServiceBackends> = [
            (ip(100), service(&[1, 2], &[])),
            (ip(101), service(&[3, 4], &[])),
            (ip(103), service(&[], &[6])),
            (ip(104), service(&[], &[])),
        ]
        .into();
        assert_eq!(
            delta(&handed, &desired, &Scope::All),
            vec![
                Delta::Remove(ip(102)),
                Delta::Apply(ip(101), &desired[&ip(101)]),
                Delta::Apply(ip(103), &desired[&ip(103)]),
                Delta::Apply(ip(104), &desired[&ip(104)]),
            ]
        );
        assert_eq!(delta(&desired, &desired, &Scope::All), vec![]);

        // A refresh of some VIPs only: what differs outside them is not looked at (desired
        // holds only the VIPs computed: 102 is gone, 103 not computed).
        let scope = Scope::Vips([ip(101), ip(102), ip(104)].into());
        let computed: BTreeMap<Ipv4Addr, ServiceBackends> = [
            (ip(101), service(&[3, 4], &[])),
            (ip(104), service(&[], &[])),
        ]
        .into();
        assert_eq!(
            delta(&handed, &computed, &scope),
            vec![
                Delta::Remove(ip(102)),
                Delta::Apply(ip(101), &computed[&ip(101)]),
                Delta::Apply(ip(104), &computed[&ip(104)]),
            ]
        );
    }

    #[test]
    fn backends_removed_for_good_are_those_no_applied_vip_holds_any_more() {
        let handed: BTreeMap<Ipv4Addr, ServiceBackends> = [
            // 2 removed, 3 draining: only 2 goes.
            (ip(100), service(&[1, 2, 3], &[])),
            // The VIP goes with its backends, the draining one too.
            (ip(101), service(&[4], &[5])),
            // 6 goes from this VIP but another still holds it (host-mode frontends).
            (ip(102), service(&[6], &[])),
            (ip(103), service(&[6], &[])),
            // A draining backend that is then removed.
            (ip(104), service(&[], &[7])),
            // A change that fails: 8 stays in the maps.
            (ip(105), service(&[8, 9], &[])),
        ]
        .into();
        let mut desired: BTreeMap<Ipv4Addr, ServiceBackends> = [
            (ip(100), service(&[1], &[3])),
            (ip(102), service(&[], &[])),
            (ip(103), service(&[6], &[])),
            (ip(104), service(&[], &[])),
            (ip(105), service(&[9], &[])),
        ]
        .into();
        let left = leaving(&handed, &desired, &Scope::All);
        assert_eq!(
            left,
            [
                (ip(100), [ip(2)].into()),
                (ip(101), [ip(4), ip(5)].into()),
                (ip(102), [ip(6)].into()),
                (ip(104), [ip(7)].into()),
                (ip(105), [ip(8)].into()),
            ]
            .into()
        );
        // What the data path took: all but 105's change (forgotten, applied again later).
        let mut after = desired.clone();
        after.remove(&ip(105));
        let gone = gone_for_good(left, &after, &desired);
        assert_eq!(gone, [ip(2), ip(4), ip(5), ip(7)].into());
        // Nothing changed: nothing goes.
        desired.clear();
        assert_eq!(leaving(&desired, &desired, &Scope::All), BTreeMap::new());

        // Scoped: only the VIPs computed are looked at.
        let computed: BTreeMap<Ipv4Addr, ServiceBackends> = [(ip(100), service(&[1], &[3]))].into();
        let scope = Scope::Vips([ip(100), ip(101)].into());
        assert_eq!(
            leaving(&handed, &computed, &scope),
            [(ip(100), [ip(2)].into()), (ip(101), [ip(4), ip(5)].into())].into()
        );
    }

    #[test]
    fn until_settled_what_was_handed_is_kept_as_it_was() {
        let mut wanted = service(&[1], &[2]);
        wanted.keep(&service(&[2, 3], &[4, 1]));
        // 3 stays in the round robin, 4 draining; 1 and 2 stay as wanted.
        assert_eq!(wanted, service(&[1, 3], &[2, 4]));
    }

    #[test]
    fn draining_backends_go_with_their_vip() {
        let wanted: LbTable = [(ip(100), [ip(1)].into()), (ip(101), BTreeSet::new())].into();
        let draining: LbTable = [(ip(101), [ip(2)].into())].into();
        assert_eq!(
            services(&wanted, &draining),
            [(ip(100), service(&[1], &[])), (ip(101), service(&[], &[2]))].into()
        );
    }

    /// Records the per-service calls; fails `apply_service` for the VIPs in `failing`.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        failing: Mutex<BTreeSet<Ipv4Addr>>,
    }

    impl ServiceDataplane for Recorder {
        fn attach_task_veth(&self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn attach_mesh_reply(&self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn apply_mesh(&self, _: &MeshTable) -> anyhow::Result<()> {
            Ok(())
        }
        fn set_mesh_vtep(&self, ip: Ipv4Addr, vtep: Option<Ipv4Addr>) -> anyhow::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("vtep {ip} {vtep:?}"));
            Ok(())
        }
        fn mesh_table(&self) -> MeshTable {
            MeshTable::default()
        }
        fn apply(&self, _: &LbTable, _: &LbTable) -> anyhow::Result<ApplyReport> {
            self.calls.lock().unwrap().push("apply".into());
            Ok(ApplyReport::default())
        }
        fn apply_service(
            &self,
            vip: Ipv4Addr,
            backends: &BTreeSet<Ipv4Addr>,
            _: &BTreeSet<Ipv4Addr>,
        ) -> anyhow::Result<ApplyReport> {
            self.calls.lock().unwrap().push(format!("apply {vip}"));
            if self.failing.lock().unwrap().contains(&vip) {
                anyhow::bail!("full");
            }
            Ok(ApplyReport {
                backends_added: backends.len(),
                ..ApplyReport::default()
            })
        }
        fn remove_service(&self, vip: Ipv4Addr) -> anyhow::Result<ApplyReport> {
            self.calls.lock().unwrap().push(format!("remove {vip}"));
            Ok(ApplyReport {
                vips_removed: 1,
                ..ApplyReport::default()
            })
        }
        fn check_vips(&self, _: Option<Ipv4Addr>, _: usize) -> anyhow::Result<CheckReport> {
            Ok(CheckReport::default())
        }
        fn table(&self) -> LbTable {
            LbTable::new()
        }
        fn expire_flows(&self) -> anyhow::Result<usize> {
            Ok(0)
        }
        fn destroy_balanced_sockets(
            &self,
            _: &[std::path::PathBuf],
            _: &BTreeSet<Ipv4Addr>,
        ) -> anyhow::Result<Destroyed> {
            Ok(Destroyed::default())
        }
    }

    #[test]
    fn a_service_that_fails_is_handed_over_again_at_the_next_refresh() {
        let dp = Recorder::default();
        dp.failing.lock().unwrap().insert(ip(101));
        let mut handed: BTreeMap<Ipv4Addr, ServiceBackends> =
            [(ip(100), service(&[1], &[])), (ip(102), service(&[5], &[]))].into();
        let desired: BTreeMap<Ipv4Addr, ServiceBackends> = [
            (ip(100), service(&[1], &[])),
            (ip(101), service(&[3, 4], &[])),
        ]
        .into();

        let done = hand_over(&dp, &mut handed, &desired, &Scope::All);
        assert_eq!(
            *dp.calls.lock().unwrap(),
            vec!["remove 10.0.0.102", "apply 10.0.0.101"]
        );
        assert_eq!(done.report.vips_removed, 1);
        assert_eq!(done.failed_vips, [ip(101)].into());
        let (count, error) = done.failed.expect("the failure is reported");
        assert_eq!(count, 1);
        assert!(format!("{error:#}").contains("10.0.0.101"), "{error:#}");
        assert_eq!(handed.keys().copied().collect::<Vec<_>>(), vec![ip(100)]);

        // --- the next refresh: the same desired table, the data path no longer failing
        dp.calls.lock().unwrap().clear();
        dp.failing.lock().unwrap().clear();
        // (a refresh of the VIPs that failed: what the agent does next)
        let done = hand_over(&dp, &mut handed, &desired, &Scope::Vips(done.failed_vips));
        assert!(done.failed.is_none());
        assert_eq!(done.report.backends_added, 2);
        assert_eq!(*dp.calls.lock().unwrap(), vec!["apply 10.0.0.101"]);
        assert_eq!(handed, desired);
    }
}
