//! Task cgroups and resources, end to end: a task runs in a cgroup of its own, beside the
//! agent's cgroup, with its `--limit-*` written where the kernel enforces them; a task over its
//! memory limit is OOM-killed and `service ps` says so; removing a service ends the task's
//! whole process tree (a daemon that left its session included); reservations are set against
//! each node's capacity with Docker's "insufficient resources"; the docker CLI and compose's
//! `deploy.resources` give the same spec; `exec` joins the task's cgroup. And the systemd
//! case: the agent's own cgroup (its unit's) killed as `KillMode=control-group` does leaves the
//! tasks running, and the restarted agent re-adopts them.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use shoal_tests::{Cluster, wait_until};

use crate::support::{docker_ok, ok, running};

/// Where cgroup v1 controllers and the unified hierarchy are on this host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn is_v2_host() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The unified hierarchy: the root on a v2 host, `unified/` on a hybrid one.
fn unified_root() -> PathBuf {
    if is_v2_host() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        Path::new(CGROUP_ROOT).join("unified")
    }
}

/// The PID of a running task, from its node's state dir.
fn task_pid(cluster: &Cluster, node: usize, task: &str) -> i32 {
    let record = fs::read_to_string(
        cluster.nodes[node]
            .state_dir()
            .join("tasks")
            .join(task)
            .join("pid"),
    )
    .unwrap();
    record.split_whitespace().next().unwrap().parse().unwrap()
}

/// The process's cgroup directory in the hierarchy holding `controller` (`""`: the unified
/// one).
fn cgroup_of(pid: i32, controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let path = path.trim_start_matches('/');
        if controller.is_empty() && names.is_empty() {
            return unified_root().join(path);
        }
        if !controller.is_empty() && names.split(',').any(|n| n == controller) {
            return Path::new(CGROUP_ROOT).join(names).join(path);
        }
    }
    panic!("process {pid} is in no {controller:?} cgroup: {text}");
}

/// A limit as the kernel holds it: the v2 file on a v2 host, else the v1 controller's.
fn limit(pid: i32, v1: (&str, &str), v2: &str) -> String {
    let path = if is_v2_host() {
        cgroup_of(pid, "").join(v2)
    } else {
        cgroup_of(pid, v1.0).join(v1.1)
    };
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for this purpose: its parent (the agent or init) reaps it.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.starts_with(" Z"))
    })
}

fn inspect(cluster: &Cluster, service: &str) -> serde_json::Value {
    let out = ok(cluster, 0, &["service", "inspect", service]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all[0]["Spec"]["TaskTemplate"]["Resources"].clone()
}

/// The error of the service's newest task that is not running, once it has one.
fn failed_error(cluster: &Cluster, service: &str) -> String {
    wait_until(Duration::from_secs(30), "a failed task", || {
        let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        tasks
            .iter()
            .find(|t| t["state"] == "failed")
            .map(|t| t["error"].as_str().unwrap_or("").to_string())
            .ok_or_else(|| format!("{tasks:?}"))
    })
}

/// The error of the service's pending task, once it has one.
fn pending_error(cluster: &Cluster, service: &str) -> String {
    wait_until(Duration::from_secs(20), "a pending task", || {
        let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        tasks
            .iter()
            .find(|t| t["state"] == "pending" && !t["error"].as_str().unwrap_or("").is_empty())
            .map(|t| t["error"].as_str().unwrap().to_string())
            .ok_or_else(|| format!("{tasks:?}"))
    })
}

#[test]
fn tasks_run_in_cgroups_with_their_limits() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let node_id = cluster.nodes[0].node_id();

    // --- 1. limits in the kernel's files; the task's cgroup is its own, in the node's subtree
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "limited",
            "--constraint",
            "node.role==manager",
            "--limit-cpu",
            "0.5",
            "--limit-memory",
            "64M",
            "--limit-pids",
            "20",
            "--reserve-memory",
            "32M",
            "--",
            "sh",
            "-c",
            // A daemon that leaves the task's session: only the cgroup still holds it.
            "setsid sleep 1000 & exec sleep 1001",
        ],
    );
    let task = running(&cluster, "limited", 1).remove(0);
    let pid = task_pid(&cluster, 0, &task.id);
    let own = cgroup_of(pid, "");
    assert!(
        own.ends_with(format!("shoal-tasks/{node_id}/{}", task.id)),
        "{}",
        own.display()
    );
    let mib = |n: u64| (n << 20).to_string();
    assert_eq!(
        limit(pid, ("memory", "memory.limit_in_bytes"), "memory.max"),
        mib(64)
    );
    assert_eq!(
        limit(pid, ("memory", "memory.soft_limit_in_bytes"), "memory.low"),
        mib(32)
    );
    let cpu = limit(pid, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    assert!(cpu == "50000" || cpu == "50000 100000", "{cpu}");
    assert_eq!(limit(pid, ("pids", "pids.max"), "pids.max"), "20");
    let resources = inspect(&cluster, "limited");
    assert_eq!(resources["Limits"]["MemoryBytes"], 64u64 << 20);
    assert_eq!(resources["Limits"]["NanoCPUs"], 500_000_000u64);
    assert_eq!(resources["Limits"]["Pids"], 20);
    assert_eq!(resources["Reservations"]["MemoryBytes"], 32u64 << 20);
    // `exec` (and health checks) run in the task's cgroup, as in Docker.
    let seen = ok(
        &cluster,
        0,
        &["exec", &task.id, "--", "cat", "/proc/self/cgroup"],
    );
    let unified = seen
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_default();
    assert!(unified.ends_with(&format!("/{}", task.id)), "{seen}");
    let pretty = ok(&cluster, 0, &["service", "inspect", "--pretty", "limited"]);
    assert!(pretty.contains("Resources:"), "{pretty}");
    assert!(pretty.contains("Memory:\t64MiB"), "{pretty}");

    // --- 2. the whole tree goes with the task, the daemon included, and so does the cgroup
    let members: Vec<i32> = wait_until(Duration::from_secs(5), "the daemon to start", || {
        let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap();
        let pids: Vec<i32> = procs.lines().map(|l| l.parse().unwrap()).collect();
        if pids.len() == 2 {
            Ok(pids)
        } else {
            Err(format!("{pids:?}"))
        }
    });
    ok(&cluster, 0, &["service", "rm", "limited"]);
    wait_until(
        Duration::from_secs(20),
        "the task's processes to end",
        || {
            let left: Vec<&i32> = members.iter().filter(|p| alive(**p)).collect();
            if left.is_empty() && !own.exists() {
                Ok(())
            } else {
                Err(format!("alive: {left:?}, cgroup there: {}", own.exists()))
            }
        },
    );

    // --- 3. over its memory limit, a task is OOM-killed, and `service ps` says so
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hog",
            "--restart-condition",
            "none",
            "--limit-memory",
            "16M",
            "--",
            "sh",
            "-c",
            // tail keeps a line without newline in memory: 200 MiB of it.
            "head -c 200m /dev/zero | tail",
        ],
    );
    let error = failed_error(&cluster, "hog");
    assert_eq!(
        error, "task: non-zero exit (137): OOM-killed at its memory limit",
        "{error}"
    );

    // --- 4. reservations against the nodes' capacity (both report this host's CPUs)
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = (cpus + 1).to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "big",
            "--reserve-cpu",
            &too_many,
            "--",
            "sleep",
            "1d",
        ],
    );
    assert_eq!(
        pending_error(&cluster, "big"),
        "no suitable node (insufficient resources on 2 nodes)"
    );
    // Each node can hold one task reserving more than half its CPUs: two run, one waits.
    let most = format!("{}", cpus as f64 * 0.6);
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--reserve-cpu",
            &most,
            "--replicas",
            "3",
            "big",
        ],
    );
    let placed = running(&cluster, "big", 2);
    assert_ne!(placed[0].node, placed[1].node);
    assert_eq!(
        pending_error(&cluster, "big"),
        "no suitable node (insufficient resources on 2 nodes)"
    );
    ok(&cluster, 0, &["service", "rm", "big"]);

    // --- 5. the docker CLI's flags and compose's deploy.resources give the same spec
    docker_ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "dk",
            "--limit-memory",
            "48M",
            "--reserve-cpu",
            "0.25",
            "/bin/sleep",
            "1d",
        ],
    );
    let resources = inspect(&cluster, "dk");
    assert_eq!(resources["Limits"]["MemoryBytes"], 48u64 << 20);
    assert_eq!(resources["Reservations"]["NanoCPUs"], 250_000_000u64);
    let dir = cluster.work_dir().join("resources-stack");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stack.yml");
    fs::write(
        &file,
        "services:\n  web:\n    image: sleeper\n    command: ['sleep', '1d']\n    deploy:\n      \
         resources:\n        limits: {cpus: '0.5', memory: 40M, pids: 10}\n        \
         reservations: {memory: 20M}\n",
    )
    .unwrap();
    let out = ok(
        &cluster,
        0,
        &["stack", "deploy", "-c", file.to_str().unwrap(), "st"],
    );
    assert!(!out.contains("Ignoring"), "{out}");
    let resources = inspect(&cluster, "st_web");
    assert_eq!(resources["Limits"]["MemoryBytes"], 40u64 << 20);
    assert_eq!(resources["Limits"]["NanoCPUs"], 500_000_000u64);
    assert_eq!(resources["Limits"]["Pids"], 10);
    assert_eq!(resources["Reservations"]["MemoryBytes"], 20u64 << 20);
    let task = running(&cluster, "st_web", 1).remove(0);
    let pid = task_pid(&cluster, task.node, &task.id);
    assert_eq!(
        limit(pid, ("memory", "memory.limit_in_bytes"), "memory.max"),
        mib(40)
    );
}

/// A cgroup the test made (the agent's "unit" and its slice), removed on drop.
struct Unit {
    slice: PathBuf,
    service: PathBuf,
}

impl Unit {
    fn new(prefix: &str) -> Unit {
        let slice = unified_root().join(format!("{prefix}.slice"));
        let service = slice.join("shoal.service");
        fs::create_dir_all(&service).unwrap();
        Unit { slice, service }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = fs::write(self.service.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if fs::remove_dir(&self.service).is_ok() || !self.service.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The task subtree beside it goes with the cluster (its record is in the state dir).
        let _ = fs::remove_dir(self.slice.join("shoal-tasks"));
        let _ = fs::remove_dir(&self.slice);
    }
}

#[test]
fn killing_the_agents_cgroup_leaves_its_tasks_running() {
    // Before the cluster: dropped after it, once the task subtree beside it is gone.
    let unit = Unit::new(&format!("shoal-test-{}", std::process::id()));
    let mut cluster = Cluster::build(1);
    // As systemd starts the unit's main process: in the unit's cgroup.
    cluster.nodes[0].cgroups = vec![unit.service.clone()];
    cluster.nodes[0].start();
    cluster.form_swarm(1);
    let node_id = cluster.nodes[0].node_id();
    let agent_pid = cluster.nodes[0].pid().unwrap() as i32;
    assert_eq!(cgroup_of(agent_pid, ""), unit.service);

    ok(
        &cluster,
        0,
        &[
            "service", "create", "--detach", "--name", "keep", "--", "sleep", "1d",
        ],
    );
    let task = running(&cluster, "keep", 1).remove(0);
    let pid = task_pid(&cluster, 0, &task.id);
    // Beside the unit, in the slice: not in the cgroup systemd kills when the unit stops.
    assert_eq!(
        cgroup_of(pid, ""),
        unit.slice.join("shoal-tasks").join(&node_id).join(&task.id)
    );

    // KillMode=control-group: everything in the unit's cgroup is killed.
    fs::write(unit.service.join("cgroup.kill"), "1").unwrap();
    wait_until(Duration::from_secs(5), "the agent to die", || {
        if alive(agent_pid) {
            Err("still alive".to_string())
        } else {
            Ok(())
        }
    });
    cluster.nodes[0].kill();
    assert!(alive(pid), "the task died with the agent's cgroup");

    // The restarted agent (in the unit again) re-adopts it: same task, same process.
    cluster.nodes[0].start();
    let again = running(&cluster, "keep", 1).remove(0);
    assert_eq!(again.id, task.id);
    assert_eq!(task_pid(&cluster, 0, &task.id), pid);
    ok(&cluster, 0, &["service", "rm", "keep"]);
    wait_until(Duration::from_secs(20), "the task to end", || {
        if alive(pid) {
            Err("still alive".to_string())
        } else {
            Ok(())
        }
    });
    cluster.nodes[0].stop();
}
