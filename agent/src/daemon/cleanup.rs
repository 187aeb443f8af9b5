//! `shoal agent --cleanup` and `--purge`: remove what one node left on the host, for an agent
//! that is stopped or was killed (the data path and the tasks outlive their agent on purpose).
//!
//! A node is its state dir: its tasks are recorded under `<state>/tasks/*/pid`, its task and
//! overlay namespaces are bind mounts under `<state>/netns/`, its maps and XDP link are pinned
//! under `/sys/fs/bpf/shoal/<node-id>/` (`<state>/node-id`), and its gateway bridge and
//! nftables table live in the network namespace it ran in (`<state>/node-netns` says which).
//! Nothing outside those is touched, so several nodes on one host (the tests, the demo) are
//! cleaned one at a time. The state dir's lock is held throughout: a running agent makes
//! cleanup refuse, and no agent can start meanwhile.
//!
//! Order: processes first (tasks, and anything else inside the node's namespaces or the
//! node's task cgroups, `<state>/cgroups` says where), so that
//! unmounting the namespaces frees them, and the kernel deletes their links (the task veths,
//! the ingress endpoint's veth) with them; then the pins (removing the XDP link's pin detaches
//! the program); then the gateway bridge and its masquerade; then the sockets (the API's and
//! `docker.sock`).

use std::{
    collections::HashSet,
    fs::{self, File},
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    fcntl::{Flock, FlockArg},
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use shoal_control::identity::NodeId;
use shoal_dataplane::{
    bpffs,
    overlay::{GatewaySpec, remove_gateway_bridge},
};

use crate::{cli::AgentArgs, executor::Cgroups};

/// The node's identity file (`shoal_control::identity`); read here, never created.
const NODE_ID_FILE: &str = "node-id";
/// Which network namespace the agent last ran in: `<st_dev> <st_ino>` of its `ns/net`.
const NODE_NETNS_FILE: &str = "node-netns";
/// How long killed processes get to go away.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes which network namespace this agent runs in, for a later cleanup to find its gateway
/// bridge (a cleanup elsewhere must leave another namespace's bridge alone).
pub fn record_node_netns(state_dir: &Path) -> anyhow::Result<()> {
    let (dev, ino) = current_netns()?;
    let path = state_dir.join(NODE_NETNS_FILE);
    fs::write(&path, format!("{dev} {ino}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// `--cleanup` (`purge == false`) or `--purge`.
pub fn run(args: &AgentArgs, purge: bool) -> anyhow::Result<()> {
    let state = &args.state_dir;
    if state == Path::new("/") {
        bail!("--state-dir / is not a node's state dir: give the agent's --state-dir");
    }
    let is_node = state.join(NODE_ID_FILE).is_file() || state.join("lock").is_file();
    if !is_node {
        // An empty directory (made by an installer, never used) is no node, and no loss.
        let empty = fs::read_dir(state).is_ok_and(|mut entries| entries.next().is_none());
        if empty && purge {
            fs::remove_dir(state).with_context(|| format!("removing {}", state.display()))?;
            say(format!("removed the empty state dir {}", state.display()));
        } else if state.exists() && purge {
            bail!(
                "{} does not look like a shoal state dir (no node-id or lock file): not \
                 removing it",
                state.display()
            );
        } else {
            say(format!("no node state in {}", state.display()));
        }
        remove_sockets(args)?;
        return Ok(());
    }
    let state =
        fs::canonicalize(state).with_context(|| format!("resolving {}", state.display()))?;
    let _lock = lock(&state)?;
    let node_id = read_node_id(&state);

    let killed = kill_node_processes(&state);
    if killed > 0 {
        say(format!("killed {killed} processes of the node's tasks"));
    }
    // Also what a task left outside its namespaces (a daemon it forked, in its cgroup).
    if let Some(cgroups) = Cgroups::load(&state) {
        cgroups.remove_node();
        say("removed the task cgroups".to_owned());
    }
    let unmounted = unmount_under(&state)?;
    if unmounted > 0 {
        say(format!(
            "unmounted {unmounted} network namespaces and mounts under {}",
            state.display()
        ));
    }
    remove_netns_files(&state);
    if let Some(id) = &node_id {
        let root = Path::new(bpffs::DEFAULT_ROOT);
        let pins = bpffs::node_pin_dir(root, id.as_str());
        if pins.exists() {
            bpffs::remove_node_pins(root, id.as_str())?;
            say(format!(
                "removed the pinned maps and XDP link {}",
                pins.display()
            ));
        }
        // The shared parent stays: another node's agent may be creating its directory there.
    }
    remove_gateway(&state)?;
    remove_sockets(args)?;
    if purge {
        let left = mounts_under(&state)?;
        if !left.is_empty() {
            bail!(
                "{} still has mounts ({}): not removing it",
                state.display(),
                left.join(", ")
            );
        }
        fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
        say(format!("removed state dir {}", state.display()));
    }
    say(match &node_id {
        Some(id) => format!("node {id} cleaned up"),
        None => format!("{} cleaned up", state.display()),
    });
    Ok(())
}

fn say(line: String) {
    println!("cleanup: {line}");
}

/// The state dir's lock, as the agent takes it: held means an agent runs there.
fn lock(state: &Path) -> anyhow::Result<Flock<File>> {
    let path = state.join("lock");
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "a shoal agent is running on state dir {}: stop it first (systemctl stop shoal), \
             then clean up",
            state.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

fn read_node_id(state: &Path) -> Option<NodeId> {
    let text = fs::read_to_string(state.join(NODE_ID_FILE)).ok()?;
    NodeId::parse(text.trim())
}

/// SIGKILLs every recorded task's process group and every process inside one of the node's
/// namespaces (a task's children that left its group, a health check), then waits (bounded)
/// until they are gone. Returns how many processes were signalled.
fn kill_node_processes(state: &Path) -> usize {
    let me = std::process::id() as i32;
    let mut killed: HashSet<i32> = HashSet::new();
    for group in recorded_task_groups(state) {
        if group > 1 && group != me && kill(Pid::from_raw(-group), Signal::SIGKILL).is_ok() {
            killed.insert(group);
        }
    }
    let namespaces = node_namespaces(state);
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let inside: Vec<i32> = processes_in(&namespaces)
            .into_iter()
            .filter(|pid| *pid > 1 && *pid != me)
            .collect();
        let waiting_for_group = killed
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if (inside.is_empty() && !waiting_for_group) || Instant::now() >= deadline {
            if !inside.is_empty() {
                say(format!(
                    "processes still inside the node's namespaces after {KILL_TIMEOUT:?}: {inside:?}"
                ));
            }
            break;
        }
        for pid in inside {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    killed.len()
}

/// The process groups of the tasks recorded in `<state>/tasks/*/pid` (`PID START_TIME`), where
/// the recorded process still runs: a PID whose start time differs was recycled.
fn recorded_task_groups(state: &Path) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(state.join("tasks")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let record = fs::read_to_string(task.path().join("pid")).ok()?;
            let mut fields = record.split_whitespace();
            let pid: i32 = fields.next()?.parse().ok()?;
            let start = fields.next()?;
            (start_time(pid).as_deref() == Some(start)).then_some(pid)
        })
        .collect()
}

/// Field 22 of `/proc/<pid>/stat`, the start time in clock ticks.
fn start_time(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(19).map(str::to_string)
}

/// (device, inode) of every network namespace mounted under `<state>/netns/`.
fn node_namespaces(state: &Path) -> HashSet<(u64, u64)> {
    let Ok(entries) = fs::read_dir(state.join("netns")) else {
        return HashSet::new();
    };
    let own = current_netns().ok();
    entries
        .flatten()
        .filter_map(|e| fs::metadata(e.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        // An unmounted file is not a namespace, and never treat our own as the node's.
        .filter(|id| Some(*id) != own)
        .collect()
}

/// PIDs whose network namespace is one of `namespaces`.
fn processes_in(namespaces: &HashSet<(u64, u64)>) -> Vec<i32> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| namespaces.contains(&(m.dev(), m.ino())))
        })
        .collect()
}

fn current_netns() -> anyhow::Result<(u64, u64)> {
    let meta = fs::metadata("/proc/self/ns/net").context("reading this process's netns")?;
    Ok((meta.dev(), meta.ino()))
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    Ok(points)
}

/// Detaches every mount under `dir` (namespaces, the netns directory's own bind mount),
/// deepest first, until none is left. Returns how many were unmounted.
fn unmount_under(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    // A point may be mounted more than once; each pass takes the top one.
    for _ in 0..16 {
        let points = mounts_under(dir)?;
        if points.is_empty() {
            return Ok(count);
        }
        for point in points {
            match umount2(point.as_str(), MntFlags::MNT_DETACH) {
                Ok(()) => count += 1,
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("unmounting {point}")),
            }
        }
    }
    Ok(count)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The namespace files, empty once unmounted.
fn remove_netns_files(state: &Path) {
    if let Ok(entries) = fs::read_dir(state.join("netns")) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The gateway bridge and its nftables table, when this is the namespace the agent ran in.
fn remove_gateway(state: &Path) -> anyhow::Result<()> {
    let Ok(recorded) = fs::read_to_string(state.join(NODE_NETNS_FILE)) else {
        return Ok(());
    };
    let (dev, ino) = current_netns()?;
    if recorded.trim() != format!("{dev} {ino}") {
        say(
            "the agent ran in another network namespace: its gateway bridge there was left \
             (run this inside it, e.g. nsenter --net=NETNS shoal agent --cleanup ...)"
                .to_string(),
        );
        return Ok(());
    }
    let spec = crate::networking::gateway_subnet::recorded(state)
        .map_or_else(GatewaySpec::default, GatewaySpec::with_subnet);
    let here = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    let existed = link_exists(&spec.bridge);
    remove_gateway_bridge(&here, &spec).context("removing the gateway bridge")?;
    if existed {
        say(format!(
            "removed the gateway bridge {} and its masquerade",
            spec.bridge
        ));
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Removes the API socket and the Engine API socket (`docker.sock`) beside it.
fn remove_sockets(args: &AgentArgs) -> anyhow::Result<()> {
    remove_socket(&args.socket)?;
    let engine = args
        .engine_socket
        .clone()
        .unwrap_or_else(|| crate::engine::default_path(&args.socket));
    remove_socket(&engine)
}

/// Removes a socket file, unless something answers on it.
fn remove_socket(socket: &Path) -> anyhow::Result<()> {
    let Ok(meta) = fs::symlink_metadata(socket) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => {
            say(format!("{} answers: left in place", socket.display()));
            Ok(())
        }
        Err(_) => match fs::remove_file(socket) {
            Ok(()) => {
                say(format!("removed socket {}", socket.display()));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", socket.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn a_directory_that_is_no_state_dir_is_never_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("precious"), "x").expect("write");
        let args = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "shoal",
            "agent",
            "--purge",
            "--state-dir",
            dir.path().to_str().expect("utf-8"),
            "--socket",
            dir.path().join("none.sock").to_str().expect("utf-8"),
        ])
        .expect("args");
        let crate::cli::Command::Agent(args) = args.command else {
            panic!("not agent");
        };
        let err = run(&args, true).expect_err("refused");
        assert!(
            err.to_string()
                .contains("does not look like a shoal state dir"),
            "{err}"
        );
        assert!(dir.path().join("precious").exists());
    }
}
