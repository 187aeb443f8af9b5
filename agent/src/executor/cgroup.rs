//! Task cgroups: every task runs in a cgroup of its own, `<task-id>` under a subtree this
//! agent owns, `shoal-tasks/<node-id>/`, which sits beside the agent's own cgroup in each
//! hierarchy (`/system.slice/shoal-tasks/...` for an agent in `/system.slice/shoal.service`).
//!
//! Beside, not below: stopping or restarting the agent's systemd unit kills the unit's cgroup,
//! and tasks must outlive the agent (they are re-adopted); yet a container or sandbox limit
//! placed around the agent still covers them. The node's ID in the path keeps several agents
//! on one host (the tests, the demo) apart.
//!
//! Which hierarchies: on a cgroup v2 host, the one unified hierarchy (the controllers
//! `memory`, `cpu` and `pids` enabled down the subtree). On a hybrid or v1 host, the v1
//! `memory`, `cpu` and `pids` hierarchies for the limits, plus the unified hierarchy and
//! systemd's named one where they are mounted, which is how systemd tracks a unit's processes.
//! Other v1 controllers (cpuset, blkio, ...) are left alone: the task stays where the agent is.
//!
//! The cgroup gives a task's whole process tree one identity: [`Cgroups::kill`] stops all of
//! it (a daemon that left the task's session included), and the memory controller's OOM
//! counter says whether the kernel killed the task for its `--limit-memory`.
//!
//! Where the node's subtree is, is recorded in the state dir (`<state>/cgroups`); a task's
//! cgroup is then found from its ID alone, so a restarted agent re-adopts a running task
//! together with its cgroup, wherever that agent itself runs.

use std::{
    fs::{self, OpenOptions},
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use shoal_control::{cluster::Resources, error_chain::Chain};
use tracing::{info, warn};

/// The directory, beside the agent's own cgroup, under which each node keeps its tasks'.
const SUBTREE: &str = "shoal-tasks";
/// `<state>/cgroups`: where this node's task subtree is, a `<kind> <dir>` line per hierarchy.
const RECORD: &str = "cgroups";
/// Swap limits, written where the host accounts swap: a `--limit-memory` task may not swap
/// its way past its limit.
const SWAP_FILES: [&str; 2] = ["memory.memsw.limit_in_bytes", "memory.swap.max"];
/// CFS period for `--limit-cpu`: Docker's (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// cgroup v2; `limits`: whether memory, cpu and pids could be enabled below it.
    Unified {
        limits: bool,
    },
    Memory,
    Cpu,
    Pids,
    /// systemd's `name=systemd` v1 hierarchy: membership only.
    Named,
}

/// One hierarchy the tasks are placed in: the node's directory there.
#[derive(Clone, Debug)]
struct Hierarchy {
    kind: Kind,
    node_dir: PathBuf,
}

/// The node's task subtree in every hierarchy the tasks are placed in. Empty when the host has
/// no cgroup file system the agent can use (then tasks run in the agent's cgroup, and limits
/// are refused).
#[derive(Clone, Debug, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
}

/// A task's cgroups before its process starts: `cgroup.procs` opened in each, for the child to
/// move itself into with one write(2) each (async-signal-safe: see `spawn`).
pub struct TaskCgroup {
    procs: Vec<OwnedFd>,
}

impl TaskCgroup {
    /// Moves process `pid` into the task's cgroups.
    fn add(&self, pid: i32) -> anyhow::Result<()> {
        for fd in &self.procs {
            nix::unistd::write(fd, pid.to_string().as_bytes())
                .with_context(|| format!("moving process {pid} into the task's cgroup"))?;
        }
        Ok(())
    }

    /// Moves the calling process into the task's cgroups ("0" is the writer itself).
    ///
    /// # Safety
    /// Meant for a freshly forked child: only write(2) on descriptors opened before the fork.
    pub unsafe fn enter(&self) -> io::Result<()> {
        for fd in &self.procs {
            // SAFETY: a plain write of a static buffer to an open descriptor.
            if unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Cgroups {
    /// The node's task subtree: as recorded in `<state>/cgroups` by an earlier agent of this
    /// node (so tasks are found again wherever the restarted agent runs, and `--cleanup`
    /// from a shell finds them too), else found from the hierarchies this process is in
    /// (`/proc/self/cgroup`, `/proc/self/mountinfo`), created and recorded. What cannot be
    /// used is logged once and skipped.
    pub fn open(state_dir: &Path, node_id: &str) -> Cgroups {
        if let Some(cgroups) = Cgroups::load(state_dir) {
            return cgroups;
        }
        let found = match discover() {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %Chain(e.as_ref()), "no task cgroups: tasks run in the agent's cgroup, and resource limits are refused");
                return Cgroups::default();
            }
        };
        let mut hierarchies = Vec::new();
        for (kind, beside) in found {
            let node_dir = beside.join(SUBTREE).join(node_id);
            match create_subtree(kind, &beside, &node_dir) {
                Ok(kind) => hierarchies.push(Hierarchy { kind, node_dir }),
                Err(e) => {
                    warn!(dir = %node_dir.display(), error = %Chain(e.as_ref()), "cannot use this cgroup hierarchy for tasks")
                }
            }
        }
        let cgroups = Cgroups { hierarchies };
        let record = state_dir.join(RECORD);
        if let Err(e) = fs::write(&record, cgroups.to_record()) {
            warn!(file = %record.display(), error = %e, "recording where the task cgroups are");
        }
        info!(hierarchies = ?cgroups.describe(), "task cgroups");
        cgroups
    }

    /// The recorded subtree, if every directory in it still exists (a reboot empties the
    /// cgroup file systems: then it is found and created again).
    pub fn load(state_dir: &Path) -> Option<Cgroups> {
        let text = fs::read_to_string(state_dir.join(RECORD)).ok()?;
        let mut hierarchies = Vec::new();
        for line in text.lines() {
            let (kind, dir) = line.split_once(' ')?;
            let kind = match kind {
                "unified" => Kind::Unified { limits: false },
                "unified+limits" => Kind::Unified { limits: true },
                "memory" => Kind::Memory,
                "cpu" => Kind::Cpu,
                "pids" => Kind::Pids,
                "named" => Kind::Named,
                _ => return None,
            };
            let node_dir = PathBuf::from(dir);
            if !node_dir.is_dir() {
                return None;
            }
            hierarchies.push(Hierarchy { kind, node_dir });
        }
        Some(Cgroups { hierarchies })
    }

    fn to_record(&self) -> String {
        self.hierarchies
            .iter()
            .map(|h| {
                let kind = match h.kind {
                    Kind::Unified { limits: false } => "unified",
                    Kind::Unified { limits: true } => "unified+limits",
                    Kind::Memory => "memory",
                    Kind::Cpu => "cpu",
                    Kind::Pids => "pids",
                    Kind::Named => "named",
                };
                format!("{kind} {}\n", h.node_dir.display())
            })
            .collect()
    }

    fn describe(&self) -> Vec<String> {
        self.hierarchies
            .iter()
            .map(|h| format!("{:?} {}", h.kind, h.node_dir.display()))
            .collect()
    }

    /// Creates the task's cgroups with its limits and opens them for [`TaskCgroup::enter`].
    /// A limit the host cannot enforce is an error naming the missing controller.
    pub fn prepare(&self, task_id: &str, resources: &Resources) -> anyhow::Result<TaskCgroup> {
        self.check_limits(resources)?;
        let mut procs = Vec::new();
        for h in &self.hierarchies {
            let dir = h.node_dir.join(task_id);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
            for (file, value) in limit_files(h.kind, resources) {
                let path = dir.join(file);
                if SWAP_FILES.contains(&file) && !path.exists() {
                    // No swap accounting on this host (no swap, or the kernel's option off).
                    continue;
                }
                fs::write(&path, &value)
                    .with_context(|| format!("writing {value:?} to {}", path.display()))?;
            }
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            procs.push(OwnedFd::from(file));
        }
        Ok(TaskCgroup { procs })
    }

    /// Opens the cgroups of a running task, for another process to join them (`exec`, health
    /// checks: counted and limited with the task, and ended with it, as in Docker). Those that
    /// are gone are skipped.
    pub fn join(&self, task_id: &str) -> TaskCgroup {
        let procs = self
            .hierarchies
            .iter()
            .filter_map(|h| {
                let path = h.node_dir.join(task_id).join("cgroup.procs");
                OpenOptions::new().write(true).open(path).ok()
            })
            .map(OwnedFd::from)
            .collect();
        TaskCgroup { procs }
    }

    /// Refuses limits no hierarchy here can enforce (before anything is created).
    fn check_limits(&self, r: &Resources) -> anyhow::Result<()> {
        let has = |wanted: Kind| {
            self.hierarchies
                .iter()
                .any(|h| h.kind == wanted || matches!(h.kind, Kind::Unified { limits: true }))
        };
        for (asked, kind, flag, controller) in [
            (
                r.limit_memory_bytes,
                Kind::Memory,
                "--limit-memory",
                "memory",
            ),
            (
                r.reserve_memory_bytes,
                Kind::Memory,
                "--reserve-memory",
                "memory",
            ),
            (r.limit_nano_cpus, Kind::Cpu, "--limit-cpu", "cpu"),
            (r.limit_pids, Kind::Pids, "--limit-pids", "pids"),
        ] {
            if asked > 0 && !has(kind) {
                bail!(
                    "{flag} needs the {controller} cgroup controller, which this node does not \
                     offer to shoal (see the agent's log line \"task cgroups\")"
                );
            }
        }
        Ok(())
    }

    /// Moves a running task that has no cgroup yet (started by an agent without them, an
    /// older shoal) into one, with its process group: an upgrade brings every task under the
    /// same rules, and a later stop of the agent's unit does not reach it.
    pub fn adopt(&self, task_id: &str, resources: &Resources, leader: i32) {
        let Some(first) = self.hierarchies.first() else {
            return;
        };
        if first.node_dir.join(task_id).is_dir() {
            return;
        }
        let result = self.prepare(task_id, resources).and_then(|cgroup| {
            for pid in process_group(leader) {
                cgroup.add(pid)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => info!(
                task = task_id,
                "moved a task started without a cgroup into one"
            ),
            Err(e) => {
                warn!(task = task_id, error = %Chain(e.as_ref()), "moving a task into its cgroup")
            }
        }
    }

    /// The node's task subtree in the cgroup v2 (unified) hierarchy, when tasks are placed
    /// there: the socket-level balancer knows the node's tasks by it.
    pub fn unified_node_dir(&self) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| matches!(h.kind, Kind::Unified { .. }))
            .map(|h| h.node_dir.as_path())
    }

    /// The task's cgroup directories, one per hierarchy.
    #[cfg(test)]
    pub fn task_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.node_dir.join(task_id))
            .collect()
    }

    /// SIGKILLs every process in the task's cgroup and waits (briefly) until it is empty.
    pub fn kill(&self, task_id: &str) {
        for attempt in 0..50 {
            let mut left = false;
            for h in &self.hierarchies {
                let dir = h.node_dir.join(task_id);
                if matches!(h.kind, Kind::Unified { .. }) && attempt == 0 {
                    // cgroup.kill (Linux 5.14) kills the whole tree at once, forks included.
                    match fs::write(dir.join("cgroup.kill"), "1") {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            warn!(task = task_id, error = %e, "writing cgroup.kill");
                        }
                    }
                }
                for pid in members(&dir) {
                    left = true;
                    // SAFETY: a plain syscall on integers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !left {
                return;
            }
            thread::sleep(Duration::from_millis(10 * (attempt + 1).min(10)));
        }
        warn!(
            task = task_id,
            "processes of the task's cgroup survive SIGKILL"
        );
    }

    /// Whether the kernel's OOM killer killed a process of the task's cgroup.
    pub fn oom_killed(&self, task_id: &str) -> bool {
        self.hierarchies.iter().any(|h| {
            let file = match h.kind {
                Kind::Unified { limits: true } => "memory.events",
                Kind::Memory => "memory.oom_control",
                _ => return false,
            };
            let text = fs::read_to_string(h.node_dir.join(task_id).join(file)).unwrap_or_default();
            counter(&text, "oom_kill").is_some_and(|n| n > 0)
        })
    }

    /// Removes the task's cgroups (they must be empty: see [`Cgroups::kill`]). Missing ones
    /// are fine; failures are logged.
    pub fn remove(&self, task_id: &str) {
        for h in &self.hierarchies {
            let dir = h.node_dir.join(task_id);
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(dir = %dir.display(), error = %e, "removing a task's cgroup"),
            }
        }
    }

    /// Kills and removes the cgroups of tasks not in `known` (left by a task whose directory
    /// is gone).
    pub fn sweep(&self, known: &dyn Fn(&str) -> bool) {
        let mut stale = Vec::new();
        for h in &self.hierarchies {
            let Ok(entries) = fs::read_dir(&h.node_dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(id) = entry.file_name().to_str()
                    && !known(id)
                    && !stale.iter().any(|s: &String| s == id)
                {
                    stale.push(id.to_owned());
                }
            }
        }
        for id in stale {
            self.kill(&id);
            self.remove(&id);
        }
    }

    /// Kills what runs in the node's task cgroups and removes them: `--cleanup`.
    pub fn remove_node(&self) {
        self.sweep(&|_| false);
        for h in &self.hierarchies {
            let _ = fs::remove_dir(&h.node_dir);
            // The shared parent goes when the last node's is gone.
            if let Some(parent) = h.node_dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// What each hierarchy gets written for the task's resources.
fn limit_files(kind: Kind, r: &Resources) -> Vec<(&'static str, String)> {
    let mut files = Vec::new();
    let quota_us = |nano: u64| nano.saturating_mul(CPU_PERIOD_US) / 1_000_000_000;
    match kind {
        Kind::Unified { limits: true } => {
            if r.limit_memory_bytes > 0 {
                files.push(("memory.max", r.limit_memory_bytes.to_string()));
                // The limit is the limit: no swap on top (Docker's default allows as much
                // swap again, which shoal has no flag to ask for).
                files.push(("memory.swap.max", "0".to_owned()));
            }
            if r.reserve_memory_bytes > 0 {
                files.push(("memory.low", r.reserve_memory_bytes.to_string()));
            }
            if r.limit_nano_cpus > 0 {
                let quota = quota_us(r.limit_nano_cpus).max(1000);
                files.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            }
            if r.limit_pids > 0 {
                files.push(("pids.max", r.limit_pids.to_string()));
            }
        }
        Kind::Memory => {
            if r.limit_memory_bytes > 0 {
                files.push(("memory.limit_in_bytes", r.limit_memory_bytes.to_string()));
                // Memory + swap, the same: no swap on top (after the limit: it must be >= it).
                files.push((
                    "memory.memsw.limit_in_bytes",
                    r.limit_memory_bytes.to_string(),
                ));
            }
            if r.reserve_memory_bytes > 0 {
                files.push((
                    "memory.soft_limit_in_bytes",
                    r.reserve_memory_bytes.to_string(),
                ));
            }
        }
        Kind::Cpu if r.limit_nano_cpus > 0 => {
            files.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
            files.push((
                "cpu.cfs_quota_us",
                quota_us(r.limit_nano_cpus).max(1000).to_string(),
            ));
        }
        Kind::Pids if r.limit_pids > 0 => files.push(("pids.max", r.limit_pids.to_string())),
        _ => {}
    }
    files
}

/// `key N` from a flat keyed file (memory.events, memory.oom_control).
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The processes whose process group is `leader`'s (a task's tree, as signals reach it).
fn process_group(leader: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![leader];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // Field 5 of /proc/<pid>/stat, after the command name's closing parenthesis.
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(leader)
            })
        })
        .collect()
}

/// The PIDs in a cgroup (none if it does not exist).
fn members(dir: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Creates `node_dir` (and `shoal-tasks` above it) under `beside`; on cgroup v2, enables the
/// limit controllers down to it. Returns the kind, with whether v2 limits work.
fn create_subtree(kind: Kind, beside: &Path, node_dir: &Path) -> anyhow::Result<Kind> {
    fs::create_dir_all(node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
    let Kind::Unified { .. } = kind else {
        return Ok(kind);
    };
    let available = fs::read_to_string(beside.join("cgroup.controllers")).unwrap_or_default();
    let wanted = ["memory", "cpu", "pids"];
    if !wanted
        .iter()
        .all(|c| available.split_whitespace().any(|a| a == *c))
    {
        // A hybrid host's unified hierarchy has no controllers: membership only.
        return Ok(Kind::Unified { limits: false });
    }
    let enable = "+memory +cpu +pids";
    let subtree = node_dir.parent().unwrap_or(node_dir);
    for dir in [beside, subtree, node_dir] {
        let path = dir.join("cgroup.subtree_control");
        if let Err(e) = fs::write(&path, enable) {
            warn!(file = %path.display(), error = %e, "enabling the memory, cpu and pids controllers for tasks");
            return Ok(Kind::Unified { limits: false });
        }
    }
    Ok(Kind::Unified { limits: true })
}

/// The hierarchies to use and, in each, the directory beside which the subtree goes (the
/// parent of the agent's own cgroup).
fn discover() -> anyhow::Result<Vec<(Kind, PathBuf)>> {
    let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let mounts =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = parse_mountinfo(&mounts);
    let mut found = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let names: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let kind = if names.is_empty() {
            Kind::Unified { limits: false }
        } else if names.contains(&"memory") {
            Kind::Memory
        } else if names.contains(&"cpu") {
            Kind::Cpu
        } else if names.contains(&"pids") {
            Kind::Pids
        } else if names.contains(&"name=systemd") {
            Kind::Named
        } else {
            continue;
        };
        let Some(mount) = mounts.iter().find(|m| m.serves(&names)) else {
            continue;
        };
        // The agent's path is relative to the hierarchy's root; the mount may show a subtree.
        let relative = Path::new(path)
            .strip_prefix(&mount.root)
            .unwrap_or(Path::new(path).strip_prefix("/").unwrap_or(Path::new(path)));
        let beside = relative.parent().unwrap_or(Path::new(""));
        found.push((kind, mount.point.join(beside)));
    }
    if found.is_empty() {
        bail!("no cgroup hierarchy is mounted where this process is");
    }
    Ok(found)
}

struct CgroupMount {
    root: PathBuf,
    point: PathBuf,
    /// Empty for cgroup2; else the controllers (and `name=`) the v1 mount has.
    options: Vec<String>,
    v2: bool,
}

impl CgroupMount {
    fn serves(&self, names: &[&str]) -> bool {
        if names.is_empty() {
            return self.v2;
        }
        !self.v2 && names.iter().all(|n| self.options.iter().any(|o| o == n))
    }
}

/// The cgroup mounts of a mountinfo text: `id parent maj:min root point opts - fstype src
/// superopts`.
fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next();
            let superopts = right.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root: PathBuf::from(unescape(fields.get(3)?)),
                point: PathBuf::from(unescape(fields.get(4)?)),
                options: superopts.split(',').map(str::to_owned).collect(),
                v2,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_mounts_and_the_hierarchy_each_path_is_in() {
        let info = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let mounts = parse_mountinfo(info);
        assert_eq!(mounts.len(), 4);
        let memory = mounts.iter().find(|m| m.serves(&["memory"])).unwrap();
        assert_eq!(memory.point, Path::new("/sys/fs/cgroup/memory"));
        assert!(mounts.iter().all(|m| !m.serves(&["pids"])));
        let unified = mounts.iter().find(|m| m.serves(&[])).unwrap();
        assert_eq!(unified.root, Path::new("/docker/abc"));
        assert!(
            mounts
                .iter()
                .find(|m| m.serves(&["name=systemd"]))
                .is_some()
        );
    }

    #[test]
    fn limits_become_the_files_of_each_hierarchy() {
        let r = Resources {
            limit_nano_cpus: 500_000_000,
            limit_memory_bytes: 64 << 20,
            limit_pids: 20,
            reserve_nano_cpus: 0,
            reserve_memory_bytes: 32 << 20,
        };
        let v2 = limit_files(Kind::Unified { limits: true }, &r);
        assert!(v2.contains(&("cpu.max", "50000 100000".to_owned())));
        assert!(v2.contains(&("memory.max", (64u64 << 20).to_string())));
        assert!(v2.contains(&("memory.low", (32u64 << 20).to_string())));
        assert!(v2.contains(&("pids.max", "20".to_owned())));
        assert!(limit_files(Kind::Unified { limits: false }, &r).is_empty());
        assert_eq!(
            limit_files(Kind::Cpu, &r),
            [
                ("cpu.cfs_period_us", "100000".to_owned()),
                ("cpu.cfs_quota_us", "50000".to_owned())
            ]
        );
        assert!(limit_files(Kind::Named, &r).is_empty());
        assert!(limit_files(Kind::Pids, &Resources::default()).is_empty());
    }

    #[test]
    fn reads_the_oom_counter_of_either_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v1, "oom_kill"), Some(2));
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        assert_eq!(counter("oom 3\n", "oom_kill"), None);
    }
}
