//! Unique names for fixture resources, the work directory, and sweeping leftovers.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Every fixture resource name starts with this.
pub const PREFIX_ROOT: &str = "shoal-t";
/// Agents' state dirs, sockets and logs live under here, one directory per fixture prefix.
pub const WORK_ROOT: &str = "/tmp/shoal-tests";
/// bpffs root where agents pin maps (`<root>/shoal/<node-id>`).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A prefix unique on this machine: `shoal-t<pid>-<n>`.
pub fn unique_prefix() -> String {
    format!(
        "{PREFIX_ROOT}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid a prefix was made by, if it is one of ours.
fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX_ROOT)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The work directory of one fixture.
pub fn work_dir(prefix: &str) -> PathBuf {
    Path::new(WORK_ROOT).join(prefix)
}

/// Removes the pins of every node whose state dir lies under `dir` (`*/state/node-id`).
pub fn remove_pins_under(dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return;
    };
    for node in nodes.flatten() {
        if let Ok(id) = std::fs::read_to_string(node.path().join("state/node-id")) {
            let id = id.trim();
            if !id.is_empty() && !id.contains('/') {
                let _ = std::fs::remove_dir_all(Path::new(BPFFS_ROOT).join("shoal").join(id));
            }
        }
    }
}

/// Kills the task processes of every node under `dir` (`*/state/tasks/*/pid`). Tasks outlive
/// their agent on purpose (a restarted agent re-adopts them), so a fixture must end them itself.
/// A recorded PID is killed only while its start time still matches, so a recycled PID is safe.
pub fn kill_tasks_under(dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return;
    };
    for node in nodes.flatten() {
        let Ok(tasks) = std::fs::read_dir(node.path().join("state/tasks")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(record) = std::fs::read_to_string(task.path().join("pid")) else {
                continue;
            };
            let mut fields = record.split_whitespace();
            let (Some(Ok(pid)), Some(start)) =
                (fields.next().map(str::parse::<i32>), fields.next())
            else {
                continue;
            };
            if process_start_time(pid).as_deref() == Some(start) {
                // The task leads its own process group (setsid): end the whole tree.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(-pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Removes the task cgroups of every node under `dir`, with whatever still runs in them: each
/// agent records where its node's are (`*/state/cgroups`, a `<kind> <dir>` line per
/// hierarchy). The shared `shoal-tasks` parent goes once empty.
pub fn remove_task_cgroups_under(dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return;
    };
    for node in nodes.flatten() {
        let Ok(record) = std::fs::read_to_string(node.path().join("state/cgroups")) else {
            continue;
        };
        for node_dir in record
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(_, d)| Path::new(d))
        {
            let tasks = std::fs::read_dir(node_dir).into_iter().flatten().flatten();
            for task in tasks.filter(|t| t.file_type().is_ok_and(|t| t.is_dir())) {
                remove_cgroup(&task.path());
            }
            let _ = std::fs::remove_dir(node_dir);
            if let Some(parent) = node_dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// SIGKILLs what is in a cgroup until it is empty (briefly), then removes it.
fn remove_cgroup(cgroup: &Path) {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir(cgroup);
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), as text.
fn process_start_time(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Detaches every mount under `dir`: the agents' sandbox and task network namespaces
/// (`<state>/netns/*`, and the directory's own bind mount). Deepest first, so nothing is busy.
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // Field 5 is the mount point (octal escapes for spaces, which our paths never contain).
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Deletes namespaces, pins and work dirs left by fixtures whose process no longer exists.
pub fn sweep_stale() {
    let netns = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(out) = netns {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if owner_pid(name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir(WORK_ROOT) {
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(|pid| !pid_alive(pid)) {
                kill_tasks_under(&dir.path());
                remove_task_cgroups_under(&dir.path());
                unmount_under(&dir.path());
                remove_pins_under(&dir.path());
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
    }
}
