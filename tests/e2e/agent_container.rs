//! The agent as a container (deploy/Dockerfile, deploy/docker-stack.yml, the Kubernetes
//! DaemonSet): `scripts/agent-rootfs.sh` assembles the image's root filesystem and a runc
//! config.json from the stack file, and three agents run under `runc`, each in a node
//! namespace of the cluster fixture, with exactly the stack's capabilities and mounts; they form
//! a swarm and serve a published port to the outside client. `docker stack config` must accept
//! the stack file and keep what the agent needs; an agent missing one need says which in one
//! line and exits non-zero.
//!
//! The bundle's mounts name the host's paths (`/var/lib/shoal`, `/run/shoal`, ...); each
//! container here gets its node's directories there instead (sources only: targets, options
//! and capabilities are the stack's).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use shoal_tests::{Cluster, Netns, agent::shoal_bin, names::unique_prefix, wait_until};

use crate::support::{ok, running, served_by, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stack_file() -> PathBuf {
    repo().join("deploy/docker-stack.yml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// YAML (a file, or `-` for `input`) as JSON, through python3's PyYAML, which
/// scripts/agent-rootfs.sh needs too (scripts/setup.sh installs it).
fn yaml_to_json(path: &str, input: &[u8]) -> Value {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             src = sys.stdin if sys.argv[1] == '-' else open(sys.argv[1])\n\
             json.dump(yaml.safe_load(src), sys.stdout)",
            path,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh installs it, with PyYAML)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML of {path}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Capability numbers (`include/uapi/linux/capability.h`) of the names a stack may add.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("the stack adds {other}, which this test does not know"),
    }
}

/// The stack file's `cap_add`, as `CAP_*` names.
fn stack_capabilities() -> Vec<String> {
    let stack = yaml_to_json(stack_file().to_str().unwrap(), b"");
    let agent = &stack["services"]["agent"];
    assert_eq!(agent["cap_drop"], serde_json::json!(["ALL"]), "{agent}");
    agent["cap_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect()
}

/// A directory under /tmp, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{}-{what}", unique_prefix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        shoal_tests::names::unmount_under(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The bundle scripts/agent-rootfs.sh makes from the binary under test and the stack file.
struct Bundle {
    dir: Scratch,
    /// Its config.json: the stack's settings, with the host's paths as bind sources.
    config: Value,
}

impl Bundle {
    fn assemble() -> Bundle {
        let dir = Scratch::new("agent-bundle");
        let out = Command::new("bash")
            .arg(repo().join("scripts/agent-rootfs.sh"))
            .arg(&dir.0)
            .arg("--binary")
            .arg(shoal_bin())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "agent-rootfs.sh: {}{}",
            text(&out.stdout),
            stderr(&out)
        );
        for file in [
            "usr/local/bin/shoal",
            "usr/bin/tini",
            "usr/sbin/nft",
            "bin/sh",
            "etc/passwd",
        ] {
            assert!(dir.0.join("rootfs").join(file).is_file(), "no {file}");
        }
        let config = serde_json::from_slice(&fs::read(dir.0.join("config.json")).unwrap()).unwrap();
        Bundle { dir, config }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.0.join("rootfs")
    }

    /// A config for one container: in the network namespace `netns`, each bind whose target
    /// is a key of `sources` taken from its value instead, `args` after the stack's command.
    fn config_for(&self, netns: &str, sources: &[(&str, &Path)], args: &[String]) -> Value {
        let mut config = self.config.clone();
        config["root"]["path"] = Value::from(self.rootfs().to_str().unwrap());
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        assert!(
            namespaces.iter().all(|n| n["type"] != "network"),
            "the stack's agent must be on the host network: {namespaces:?}"
        );
        namespaces.push(serde_json::json!({ "type": "network", "path": netns }));
        for mount in config["mounts"].as_array_mut().unwrap() {
            if let Some((_, source)) = sources.iter().find(|(t, _)| mount["destination"] == *t) {
                mount["source"] = Value::from(source.to_str().unwrap());
            }
        }
        let process_args = config["process"]["args"].as_array_mut().unwrap();
        process_args.extend(args.iter().map(|a| Value::from(a.as_str())));
        // dockerd may raise limits (it holds CAP_SYS_RESOURCE); this machine's root does not,
        // so runc gets no more open files than the test may have.
        let most = open_files_hard_limit();
        for limit in config["process"]["rlimits"].as_array_mut().unwrap() {
            if limit["type"] == "RLIMIT_NOFILE" {
                for key in ["soft", "hard"] {
                    let value = limit[key].as_u64().unwrap().min(most);
                    limit[key] = Value::from(value);
                }
            }
        }
        config
    }
}

/// "Max open files" hard limit of this process (/proc/self/limits).
fn open_files_hard_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).unwrap();
    hard.parse().unwrap_or(u64::MAX)
}

/// runc's state directory for this test's containers, removed on drop after them.
fn runc_root(scratch: &Scratch) -> PathBuf {
    scratch.0.join("runc")
}

fn runc(root: &Path, args: &[&str]) -> Output {
    Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("runc (scripts/setup.sh installs it)")
}

/// One agent container, killed and deleted on drop (also when the test panics).
struct Container {
    root: PathBuf,
    id: String,
    log: PathBuf,
}

impl Container {
    /// `runc run --detach` with `config` in a bundle directory of its own under `dir`, the
    /// container's output going to `<dir>/<id>.log`.
    fn start(dir: &Path, root: &Path, id: &str, config: &Value) -> Container {
        let bundle = write_bundle(dir, id, config);
        let log = dir.join(format!("{id}.log"));
        let file = fs::File::create(&log).unwrap();
        let status = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .expect("runc (scripts/setup.sh installs it)");
        let container = Container {
            root: root.to_path_buf(),
            id: id.to_string(),
            log,
        };
        assert!(
            status.success(),
            "runc run {id}: {status}\n{}",
            container.log_tail()
        );
        container
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of its output, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `runc state`: its status and init PID.
    fn state(&self) -> Result<(String, u32), String> {
        let out = runc(&self.root, &["state", &self.id]);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let state: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok((
            state["status"].as_str().unwrap_or("").to_string(),
            state["pid"].as_u64().unwrap_or(0) as u32,
        ))
    }

    /// The agent's PID (tini's child), on the host.
    fn agent_pid(&self) -> u32 {
        let (_, init) = self.state().unwrap();
        let children = fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("tini ({init}) has no child; log:\n{}", self.log_tail()))
            .parse()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = runc(&self.root, &["kill", &self.id, "KILL"]);
        let _ = runc(&self.root, &["delete", "--force", &self.id]);
    }
}

fn write_bundle(dir: &Path, id: &str, config: &Value) -> PathBuf {
    let bundle = dir.join(id);
    fs::create_dir_all(&bundle).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    bundle
}

/// Docker and Kubernetes nodes forward IPv4; a container (read-only /proc/sys) cannot turn it
/// on, so the node does it, as theirs have.
fn enable_forwarding(ns: &Netns) {
    let out = ns.exec("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    assert!(out.status.success(), "ip_forward: {}", stderr(&out));
}

/// The manager API's port the config's environment gives the agent (`SHOAL_LISTEN_ADDR`).
fn manager_port(config: &Value) -> u16 {
    config["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.as_str()?.strip_prefix("SHOAL_LISTEN_ADDR="))
        .map_or(2377, |addr| {
            addr.rsplit(':').next().unwrap().parse().unwrap()
        })
}

/// `CapEff` of a process, as a bit mask.
fn effective_caps(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn three_agents_under_runc_with_the_stacks_needs_form_a_swarm_and_serve_a_published_port() {
    // --- 1. the netns cluster without agents, the bundle, and the stack's settings
    let cluster = Cluster::build(3);
    let bundle = Bundle::assemble();
    let caps = stack_capabilities();
    let config_caps: BTreeSet<String> = bundle.config["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        config_caps,
        caps.iter().cloned().collect::<BTreeSet<_>>(),
        "config.json's capabilities are the stack's"
    );
    let port = manager_port(&bundle.config);
    let etc = Scratch::new("etc-shoal");
    let root = runc_root(&bundle.dir);

    // --- 2. an agent container in each node namespace, its directories where the stack's are
    let mut containers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        enable_forwarding(cluster.node_ns(i));
        let node_dir = node.socket().parent().unwrap().to_path_buf();
        let state = node.state_dir();
        fs::create_dir_all(&state).unwrap();
        let config = bundle.config_for(
            &cluster.node_ns(i).path(),
            &[
                ("/var/lib/shoal", &state),
                ("/run/shoal", &node_dir),
                ("/etc/shoal", &etc.0),
            ],
            &[
                "--hostname".into(),
                node.name.clone(),
                // With its port: `--advertise-addr IP` alone takes 2377, not the listen port.
                "--advertise-addr".into(),
                format!("{}:{port}", node.address),
                "--log-level".into(),
                "debug".into(),
            ],
        );
        let id = format!("{}-{}", cluster.prefix(), node.name);
        containers.push(Container::start(&bundle.dir.0, &root, &id, &config));
    }
    for (node, container) in cluster.nodes.iter().zip(&containers) {
        wait_until(
            Duration::from_secs(30),
            &format!("{} (under runc) to answer `shoal info`", node.name),
            || {
                match container.state() {
                    Ok((status, _)) if status == "running" => {}
                    other => panic!(
                        "{}'s container is not running ({other:?}); log:\n{}",
                        node.name,
                        container.log_tail()
                    ),
                }
                node.try_info()
            },
        );
        // It runs with the stack's capabilities and nothing more.
        let want = caps.iter().fold(0u64, |m, c| m | (1 << cap_bit(c)));
        let pid = container.agent_pid();
        assert_eq!(
            effective_caps(pid),
            want,
            "{}: the agent's CapEff is not the stack's {caps:?}",
            node.name
        );
    }

    // --- 3. a swarm on the stack's manager port (Docker's own swarm holds 2377)
    assert_ne!(
        port, 2377,
        "the stack must move shoal off Docker's swarm port"
    );
    let manager_addr = format!("{}:{port}", cluster.nodes[0].address);
    ok(&cluster, 0, &["swarm", "init"]);
    let manager = cluster.join_token(0, "manager");
    let worker = cluster.join_token(0, "worker");
    for (i, token) in [(1, &manager), (2, &worker)] {
        let out = cluster.nodes[i].cli(&["swarm", "join", "--token", token, &manager_addr]);
        assert!(
            out.status.success(),
            "node{} join: {}\nnode1:\n{}\nnode{}:\n{}",
            i + 1,
            stderr(&out),
            containers[0].log_tail(),
            i + 1,
            containers[i].log_tail()
        );
    }
    wait_until(Duration::from_secs(30), "3 nodes Ready", || {
        let nodes = cluster.node_ls(0)?;
        let ready = nodes.iter().filter(|n| n["status"] == "ready").count();
        if nodes.len() == 3 && ready == 3 {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    });

    // --- 4. a published port, served on every node to the outside client
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--",
            "/usr/local/bin/shoal",
            "whoami",
            "--port",
            "80",
        ],
    );
    let tasks = running(&cluster, "web", 2);
    let task_ids: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    for (node, container) in cluster.nodes.iter().zip(&containers) {
        let url = format!("http://{}:8080/", node.address);
        let answer = wait_until(
            Duration::from_secs(30),
            &format!("{url} to answer the outside client"),
            || {
                let out = cluster.client_ns().exec("curl", &["-fsS", "-m", "2", &url]);
                if out.status.success() {
                    Ok(text(&out.stdout))
                } else {
                    Err(format!("{}\n{}", stderr(&out), container.log_tail()))
                }
            },
        );
        let by = served_by(&answer);
        assert!(
            task_ids.contains(&by),
            "{url} answered by {by}, not a task of web"
        );
    }

    // --- 5. a task of another user, with a secret it owns, stopped by `service rm`
    let secret = etc.0.join("secret");
    fs::write(&secret, "s3cret\n").unwrap();
    ok(
        &cluster,
        0,
        &["secret", "create", "token", secret.to_str().unwrap()],
    );
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nobody",
            "--user",
            "nobody",
            "--secret",
            "source=token,target=token,uid=65534,gid=65534,mode=0400",
            "--constraint",
            "node.hostname==node1",
            "--",
            "/usr/local/bin/shoal",
            "whoami",
            "--port",
            "8081",
        ],
    );
    running(&cluster, "nobody", 1);
    let agent = containers[0].agent_pid();
    let task = wait_until(
        Duration::from_secs(20),
        "the task running as nobody",
        || {
            descendants(agent)
                .into_iter()
                .find(|p| uid_of(*p) == Some(65534))
                .ok_or_else(|| format!("agent {agent}'s processes: {:?}", descendants(agent)))
        },
    );
    let in_task = PathBuf::from(format!("/proc/{task}/root/run/secrets/token"));
    let meta = fs::metadata(&in_task).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o400),
        "{}",
        in_task.display()
    );
    ok(&cluster, 0, &["service", "rm", "nobody"]);
    wait_until(Duration::from_secs(20), "the task of nobody to end", || {
        if descendants(agent).contains(&task) {
            Err(format!("{task} still runs"))
        } else {
            Ok(())
        }
    });
}

/// Every process below `pid` (all its threads' children, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// The real uid of a process, if it still runs.
fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_stack_file_renders_with_docker_and_keeps_the_agents_needs() {
    let out = Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(stack_file())
        .env("DOCKER_CLI_HINTS", "false")
        .output()
        .expect("the docker CLI");
    assert!(
        out.status.success(),
        "docker stack config: {}",
        stderr(&out)
    );
    let rendered = yaml_to_json("-", &out.stdout);
    let agent = &rendered["services"]["agent"];
    assert_eq!(agent["deploy"]["mode"], "global", "{agent}");
    assert_eq!(agent["cap_drop"], serde_json::json!(["ALL"]), "{agent}");
    let caps: Vec<String> = agent["cap_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    assert_eq!(caps, stack_capabilities());
    for needed in ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] {
        assert!(
            caps.iter().any(|c| c == needed),
            "{needed} missing: {caps:?}"
        );
    }
    // Host networking is the external network named `host`.
    let network = agent["networks"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    assert_eq!(rendered["networks"][network]["name"], "host", "{rendered}");
    assert_eq!(rendered["networks"][network]["external"], true);
    let mounts: Vec<(String, String, bool, String)> = agent["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap().to_string(),
                v["target"].as_str().unwrap().to_string(),
                v["read_only"].as_bool().unwrap_or(false),
                v["bind"]["propagation"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (path, read_only, propagation) in [
        ("/sys/fs/bpf", false, ""),
        ("/var/lib/shoal", false, "rshared"),
        ("/run/netns", false, "rshared"),
        ("/run/shoal", false, ""),
        ("/etc/shoal", true, ""),
        ("/sys/fs/cgroup", false, ""),
    ] {
        let want = (
            path.to_string(),
            path.to_string(),
            read_only,
            propagation.to_string(),
        );
        assert!(mounts.contains(&want), "{want:?} not in {mounts:?}");
    }

    // The DaemonSet asks for the same capabilities and host paths.
    let daemonset = yaml_to_json(
        repo()
            .join("deploy/kubernetes/shoal-daemonset.yaml")
            .to_str()
            .unwrap(),
        b"",
    );
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(daemonset["kind"], "DaemonSet");
    assert_eq!(pod["hostNetwork"], true);
    let security = &pod["containers"][0]["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let k8s_caps: Vec<String> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    assert_eq!(k8s_caps, stack_capabilities());
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["hostPath"]["path"].as_str().unwrap())
        .collect();
    let stack_paths: BTreeSet<&str> = mounts.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(host_paths, stack_paths);
}

/// Runs an agent container in the foreground; its exit status and output (runc passes the
/// container's stdio through). Killed if it is still running after a minute.
fn run_to_exit(dir: &Path, root: &Path, id: &str, config: &Value) -> (bool, String) {
    let bundle = write_bundle(dir, id, config);
    let log = dir.join(format!("{id}.log"));
    let file = fs::File::create(&log).unwrap();
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("runc (scripts/setup.sh installs it)");
    let guard = Container {
        root: root.to_path_buf(),
        id: id.to_string(),
        log: log.clone(),
    };
    let status = wait_until(
        Duration::from_secs(60),
        &format!("{id} to exit"),
        || match child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => Err(guard.log()),
        },
    );
    let output = guard.log();
    drop(guard);
    (status.success(), output)
}

#[test]
fn an_agent_without_one_of_the_stacks_needs_says_which_in_one_line() {
    let bundle = Bundle::assemble();
    let ns = Netns::create(&format!("{}-lack", unique_prefix()));
    enable_forwarding(&ns);
    let state = Scratch::new("lack-state");
    let run = Scratch::new("lack-run");
    let etc = Scratch::new("lack-etc");
    let root = runc_root(&bundle.dir);
    let config = |drop_cap: Option<&str>, drop_mount: Option<&str>| {
        let mut config = bundle.config_for(
            &ns.path(),
            &[
                ("/var/lib/shoal", &state.0),
                ("/run/shoal", &run.0),
                ("/etc/shoal", &etc.0),
            ],
            &["--hostname".into(), "lack".into()],
        );
        if let Some(cap) = drop_cap {
            for set in ["bounding", "effective", "permitted"] {
                let list = config["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap();
                list.retain(|c| c != cap);
            }
        }
        if let Some(target) = drop_mount {
            let mounts = config["mounts"].as_array_mut().unwrap();
            let before = mounts.len();
            mounts.retain(|m| m["destination"] != target);
            assert_eq!(mounts.len() + 1, before, "the stack mounts {target}");
        }
        config
    };
    let expect_one_line = |id: &str, config: Value, expected: &str| {
        let (success, output) = run_to_exit(&bundle.dir.0, &root, id, &config);
        assert!(
            !success,
            "{id}: the agent must refuse to start; output:\n{output}"
        );
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{id}: one line, got:\n{output}");
        assert!(lines[0].contains(expected), "{id}: {:?}", lines[0]);
    };

    // --- 1. each of the stack's capabilities, removed alone, is named
    let prefix = unique_prefix();
    for cap in stack_capabilities() {
        let id = format!("{prefix}-no-{}", cap.to_lowercase().replace('_', "-"));
        expect_one_line(
            &id,
            config(Some(&cap), None),
            &format!("lacks the capabilities {cap} ("),
        );
    }
    // --- 2. without the host's bpffs (the container's /sys is read-only)
    expect_one_line(
        &format!("{prefix}-no-bpffs"),
        config(None, Some("/sys/fs/bpf")),
        "no bpffs at /sys/fs/bpf",
    );
    // --- 3. on a node that does not forward IPv4 (the container's /proc/sys is read-only)
    let out = ns.exec("sh", &["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect_one_line(
        &format!("{prefix}-no-forwarding"),
        config(None, None),
        "net.ipv4.ip_forward is 0",
    );
    // Every refusal came before the agent touched its state.
    assert!(
        !state.0.join("node-id").exists(),
        "a refused agent made a node identity"
    );
}
