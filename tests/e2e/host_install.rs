//! Installing on hosts: the systemd unit, `scripts/install.sh` into a temporary root, the
//! agent's `--config` file under the environment and the command line, READY=1 on
//! `$NOTIFY_SOCKET`, `--xdp-mode auto`, and `shoal agent --cleanup` after a SIGKILL.
//!
//! Agents started by hand here run in a namespace of their own (as the harness's do, through
//! `nsenter --net`), each with its own state dir, socket and pins, removed with `--purge`.

use std::{
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::sys::signal::{Signal, kill};
use shoal_tests::{
    Cluster, Netns,
    agent::{shoal_bin, shoal_cli},
    names::{BPFFS_ROOT, unique_prefix},
    wait_until,
};

use crate::support::{create_whoami, ok, running};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn pin_dir(node_id: &str) -> PathBuf {
    Path::new(BPFFS_ROOT).join("shoal").join(node_id)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory under /tmp, removed on drop (after its mounts, if a test failed early).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{}-{what}", unique_prefix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        shoal_tests::names::unmount_under(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `systemd-analyze verify` on `unit`, whose ExecStart must exist: clean means success and
/// nothing said.
fn assert_verifies(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .current_dir(unit.parent().unwrap())
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}: {}\n{}{}",
        unit.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A copy of `unit` in `dir` whose ExecStart runs `binary` (verify needs it to exist).
fn unit_running(unit: &Path, binary: &Path, dir: &Path) -> PathBuf {
    let original = fs::read_to_string(unit).unwrap();
    let exec = original
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    let program = exec["ExecStart=".len()..].split(' ').next().unwrap();
    let rewritten = original.replace(
        exec,
        &exec.replacen(program, &binary.display().to_string(), 1),
    );
    let copy = dir.join("shoal.service");
    fs::write(&copy, rewritten).unwrap();
    copy
}

#[test]
fn the_systemd_unit_verifies_clean_and_says_what_the_host_needs() {
    let scratch = Scratch::new("unit");
    let unit = repo().join("deploy/shoal.service");
    assert_verifies(&unit_running(&unit, &shoal_bin(), scratch.path()));
    let text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "KillMode=mixed",
        "EnvironmentFile=-/etc/shoal/agent.env",
        "ExecStart=/usr/local/bin/shoal agent --config /etc/shoal/agent.toml",
        "RestartPreventExitStatus=2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in the unit");
    }
    // Nothing that would hide /run/netns, bpffs or the host's files from the agent.
    for sandboxing in [
        "PrivateTmp",
        "PrivateMounts",
        "PrivateNetwork",
        "ProtectSystem",
        "ProtectKernel",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(sandboxing)),
            "{sandboxing} in the unit"
        );
    }
}

fn install_sh(destdir: &Path, args: &[&str]) -> String {
    let out = Command::new(repo().join("scripts/install.sh"))
        .args(args)
        .env("DESTDIR", destdir)
        .env_remove("PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {args:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every file under `root` with its mode and content, for comparing two runs.
fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            let name = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            if meta.is_dir() {
                out.push((name, meta.permissions().mode(), Vec::new()));
                dirs.push(entry.path());
            } else {
                out.push((
                    name,
                    meta.permissions().mode(),
                    fs::read(entry.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_sh_into_a_temporary_root_is_idempotent_and_uninstall_and_purge_remove_it() {
    let scratch = Scratch::new("install");
    let root = scratch.path().join("root");
    let bin = shoal_bin();
    let bin_arg = bin.display().to_string();

    // --- 1. install: binary, unit, config, state dir; nothing enabled in a staging root
    let said = install_sh(&root, &["--binary", &bin_arg]);
    assert!(
        said.contains("not enabling or starting shoal.service"),
        "{said}"
    );
    let installed = root.join("usr/local/bin/shoal");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&bin).unwrap());
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let unit = root.join("etc/systemd/system/shoal.service");
    let unit_text = fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text
            .contains("\nExecStart=/usr/local/bin/shoal agent --config /etc/shoal/agent.toml\n"),
        "{unit_text}"
    );
    assert_eq!(
        fs::read(root.join("etc/shoal/agent.toml")).unwrap(),
        fs::read(repo().join("deploy/agent.toml.example")).unwrap()
    );
    assert!(root.join("etc/shoal/agent.env").is_file());
    let state = root.join("var/lib/shoal");
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The installed unit verifies, pointed at the installed binary.
    assert_verifies(&unit_running(&unit, &installed, scratch.path()));

    // --- 2. again: nothing changes, and the operator's config is kept
    let mut config = fs::OpenOptions::new()
        .append(true)
        .open(root.join("etc/shoal/agent.toml"))
        .unwrap();
    writeln!(config, "hostname = \"kept-by-install\"").unwrap();
    let before = snapshot(&root);
    let said = install_sh(&root, &["--binary", &bin_arg]);
    assert!(said.contains("shoal is up to date"), "{said}");
    assert!(said.contains("shoal.service is up to date"), "{said}");
    assert!(said.contains("agent.toml exists: kept"), "{said}");
    assert_eq!(snapshot(&root), before, "a second install changed files");

    // --- 3. --prefix moves the binary, and the unit follows it
    let other = scratch.path().join("prefixed");
    install_sh(&other, &["--binary", &bin_arg, "--prefix", "/opt/shoal"]);
    assert!(other.join("opt/shoal/bin/shoal").is_file());
    let prefixed_unit = fs::read_to_string(other.join("etc/systemd/system/shoal.service")).unwrap();
    assert!(
        prefixed_unit.contains("\nExecStart=/opt/shoal/bin/shoal agent --config"),
        "{prefixed_unit}"
    );

    // --- 4. --uninstall: binary and unit go, config and state stay
    let said = install_sh(&root, &["--uninstall"]);
    assert!(!installed.exists() && !unit.exists(), "{said}");
    assert!(
        root.join("etc/shoal/agent.toml").is_file() && state.is_dir(),
        "{said}"
    );
    assert!(said.contains("--purge removes them"), "{said}");

    // --- 5. reinstall, run the installed agent from the root, SIGKILL it, --purge
    install_sh(&root, &["--binary", &bin_arg]);
    let ns = Netns::create(&format!("{}-inst", unique_prefix()));
    let socket = root.join("run/shoal/shoal.sock");
    let mut agent = HandAgent::spawn(
        &ns,
        &installed,
        &[
            "--config",
            root.join("etc/shoal/agent.toml").to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        &[],
        &scratch.path().join("agent.log"),
    );
    let info = agent.wait_info(&socket);
    // The file's hostname, with the command line's paths.
    assert_eq!(info["hostname"], "kept-by-install", "{info}");
    let id = info["node_id"].as_str().unwrap().to_string();
    assert!(pin_dir(&id).exists());
    agent.kill();
    let said = install_sh(&root, &["--purge"]);
    assert!(said.contains(&format!("node {id} cleaned up")), "{said}");
    assert!(!pin_dir(&id).exists(), "pins of {id} left: {said}");
    for gone in [
        installed.clone(),
        unit.clone(),
        root.join("etc/shoal"),
        state.clone(),
        socket.clone(),
    ] {
        assert!(
            !gone.exists(),
            "{} left after --purge: {said}",
            gone.display()
        );
    }
    // And once more: nothing to do is no error.
    install_sh(&root, &["--purge"]);
}

/// `shoal agent` started by hand in `ns`, its output in `log`; killed on drop.
struct HandAgent {
    child: Option<Child>,
    log: PathBuf,
}

impl HandAgent {
    fn spawn(
        ns: &Netns,
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> HandAgent {
        let file = fs::File::create(log).unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path()))
            .arg("--")
            .arg(binary)
            .arg("agent")
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("SHOAL_HOSTNAME")
            .env_remove("SHOAL_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        // SAFETY: prctl is async-signal-safe; the agent dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        HandAgent {
            child: Some(cmd.spawn().unwrap()),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent answers `shoal info` on `socket`, and returns the answer.
    fn wait_info(&mut self, socket: &Path) -> serde_json::Value {
        wait_until(Duration::from_secs(20), "the agent to answer", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("agent exited ({status}):\n{}", self.log());
            }
            info(socket)
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status (SIGKILL after 10 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGTERM,
        );
        let status = wait_until(Duration::from_secs(10), "the agent to stop", || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_string())
        });
        Some(status)
    }
}

impl Drop for HandAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn info(socket: &Path) -> Result<serde_json::Value, String> {
    let out = shoal_cli(socket, &["info", "--format", "json"]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// `shoal agent --purge` for a hand-started node, in its namespace.
fn purge(ns: &Netns, state: &Path, socket: &Path) {
    let out = ns
        .command(shoal_bin().to_str().unwrap())
        .args(["agent", "--purge", "--state-dir"])
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--purge: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_config_file_is_under_the_environment_which_is_under_the_command_line() {
    let scratch = Scratch::new("config");
    let ns = Netns::create(&format!("{}-cfg", unique_prefix()));
    let state = scratch.path().join("state");
    let socket = scratch.path().join("from-file.sock");
    let file = scratch.path().join("agent.toml");
    fs::write(
        &file,
        format!(
            "# every key is a flag's long name\nhostname = \"from-file\"\nstate-dir = \"{}\"\n\
             socket = \"{}\"\nlog-format = \"json\"\nmetrics-addr = \"127.0.0.1:19323\"\n\
             dns = [\"192.0.2.53\"]\n",
            state.display(),
            socket.display()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let log = scratch.path().join("agent.log");

    // --- 1. the file alone: its hostname, socket, state dir, log format and metrics address
    let mut agent = HandAgent::spawn(&ns, &shoal_bin(), &["--config", config], &[], &log);
    let info1 = agent.wait_info(&socket);
    assert_eq!(info1["hostname"], "from-file", "{info1}");
    assert!(state.join("node-id").is_file(), "state dir from the file");
    let first = agent.log().lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with('{'),
        "log-format json from the file: {first}"
    );
    let metrics = ns.exec("curl", &["-sf", "http://127.0.0.1:19323/metrics"]);
    assert!(metrics.status.success(), "metrics-addr from the file");
    assert!(agent.stop().unwrap().success(), "{}", agent.log());

    // --- 2. the environment over the file (SHOAL_CONFIG names the file too)
    let mut agent = HandAgent::spawn(
        &ns,
        &shoal_bin(),
        &[],
        &[("SHOAL_CONFIG", config), ("SHOAL_HOSTNAME", "from-env")],
        &log,
    );
    assert_eq!(agent.wait_info(&socket)["hostname"], "from-env");
    agent.stop();

    // --- 3. the command line over the environment
    let mut agent = HandAgent::spawn(
        &ns,
        &shoal_bin(),
        &["--config", config, "--hostname", "from-cli"],
        &[("SHOAL_HOSTNAME", "from-env")],
        &log,
    );
    assert_eq!(agent.wait_info(&socket)["hostname"], "from-cli");
    agent.stop();
    purge(&ns, &state, &socket);
    assert!(!state.exists(), "--purge left the state dir");

    // --- 4. an unknown key: one line naming it and the file, exit 2, nothing created
    let bad = scratch.path().join("bad.toml");
    fs::write(
        &bad,
        format!(
            "state-dir = \"{}\"\nadvertize-addr = \"192.0.2.1\"\n",
            state.display()
        ),
    )
    .unwrap();
    let out = ns
        .command(shoal_bin().to_str().unwrap())
        .args(["agent", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("unknown key `advertize-addr`") && stderr.contains(bad.to_str().unwrap()),
        "{stderr}"
    );
    assert!(!state.exists(), "a refused agent created its state dir");
}

#[test]
fn bad_host_input_is_one_line_naming_the_fix() {
    let scratch = Scratch::new("bad-host");
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Not root.
    let out = Command::new(shoal_bin())
        .args(["agent", "--state-dir"])
        .arg(scratch.path().join("state"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("must run as root") && stderr.contains("sudo"),
        "{stderr}"
    );
    // A config file that is not there.
    let out = Command::new(shoal_bin())
        .args(["agent", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
    // A value the flag's parser refuses, named by its key.
    let file = scratch.path().join("agent.toml");
    fs::write(&file, "data-path-port = 0\n").unwrap();
    let out = Command::new(shoal_bin())
        .args(["agent", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("key `data-path-port`"), "{stderr}");
}

#[test]
fn ready_arrives_on_the_notify_socket_once_the_api_answers() {
    let scratch = Scratch::new("notify");
    let ns = Netns::create(&format!("{}-ntf", unique_prefix()));
    let notify = scratch.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let state = scratch.path().join("state");
    let socket = scratch.path().join("shoal.sock");
    let mut agent = HandAgent::spawn(
        &ns,
        &shoal_bin(),
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
        &scratch.path().join("agent.log"),
    );
    let mut buf = [0u8; 512];
    let n = listener
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}); log:\n{}", agent.log()));
    let message = text(&buf[..n]);
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    // At once, without a retry: the API answers as soon as READY=1 is sent.
    let answer = info(&socket).unwrap_or_else(|e| panic!("info right after READY=1: {e}"));
    assert!(answer["node_id"].is_string(), "{answer}");
    assert!(
        answer["dataplane"]["pin_dir"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "the data path is loaded at READY=1: {answer}"
    );
    let id = answer["node_id"].as_str().unwrap().to_string();

    // SIGTERM says STOPPING=1 before the agent goes.
    let status = agent.stop().unwrap();
    assert!(status.success(), "{status:?}: {}", agent.log());
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    assert!(text(&buf[..n]).lines().any(|l| l == "STOPPING=1"));
    purge(&ns, &state, &socket);
    assert!(!pin_dir(&id).exists());
}

/// `ip -d link show DEV` in `ns`.
fn link_details(ns: &Netns, dev: &str) -> String {
    ns.ip(&["-d", "link", "show", dev])
}

/// iproute2 names the XDP mode among the link's flags (` xdp ` or ` xdpgeneric `) and lists
/// the program as `prog/xdp` in both modes.
fn is_native(link: &str) -> bool {
    link.contains(" xdp ") && link.contains("prog/xdp")
}

fn is_generic(link: &str) -> bool {
    link.contains(" xdpgeneric ") && link.contains("prog/xdp")
}

#[test]
fn xdp_mode_auto_is_native_where_the_peer_runs_xdp_and_generic_where_it_cannot() {
    // --- 1. the harness's underlay: every bridge port runs the XDP floor -> native
    let cluster = Cluster::start(1);
    let link = link_details(cluster.node_ns(0), "eth0");
    assert!(is_native(&link), "native XDP expected: {link}");

    // --- 2. a veth whose peer runs nothing -> generic, with one line saying why
    let scratch = Scratch::new("xdp");
    let node = Netns::create(&format!("{}-xn", unique_prefix()));
    let wire = Netns::create(&format!("{}-xw", unique_prefix()));
    node.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "p0",
        "netns",
        wire.name(),
    ]);
    node.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]);
    node.ip(&["link", "set", "eth0", "up"]);
    wire.ip(&["link", "set", "p0", "up"]);
    let run = |mode: Option<&str>, name: &str| {
        let state = scratch.path().join(name).join("state");
        let socket = scratch.path().join(name).join("shoal.sock");
        let log = scratch.path().join(format!("{name}.log"));
        let mut args = vec![
            "--state-dir",
            state.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--advertise-addr",
            "192.0.2.11",
        ];
        if let Some(mode) = mode {
            args.extend(["--xdp-mode", mode]);
        }
        fs::create_dir_all(scratch.path().join(name)).unwrap();
        let mut agent = HandAgent::spawn(&node, &shoal_bin(), &args, &[], &log);
        agent.wait_info(&socket);
        let link = link_details(&node, "eth0");
        let log_text = agent.log();
        agent.stop();
        purge(&node, &state, &socket);
        (link, log_text)
    };
    let (link, log) = run(None, "auto");
    assert!(is_generic(&link), "generic XDP expected: {link}");
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("XDP in generic mode"))
        .collect();
    assert_eq!(why.len(), 1, "one line saying why: {log}");
    assert!(why[0].contains("peer runs no XDP program"), "{}", why[0]);
    // Purged: the pinned link (and its generic program) went with the pins.
    assert!(!link_details(&node, "eth0").contains("prog/xdp"));

    // --- 3. native stays an explicit choice, and so does generic
    let (link, log) = run(Some("native"), "native");
    assert!(is_native(&link), "native asked for: {link}");
    assert!(!log.contains("generic mode"), "{log}");
    let (link, _) = run(Some("generic"), "generic");
    assert!(is_generic(&link), "{link}");

    // --- 4. the peer gets an XDP program: auto goes native
    let mut floor = shoal_dataplane::Dataplane::load(None).unwrap();
    shoal_dataplane::netns::run_in(Path::new(&wire.path()), || floor.attach_xdp_floor("p0"))
        .unwrap()
        .unwrap();
    let (link, log) = run(None, "auto-floor");
    assert!(
        is_native(&link),
        "native expected once the peer runs XDP: {link}\n{log}"
    );
    drop(floor);
}

#[test]
fn cleanup_after_a_sigkilled_agent_leaves_no_pins_namespaces_or_mounts_of_that_node() {
    let mut cluster = Cluster::start(1);
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "appnet"],
    );
    create_whoami(
        &cluster,
        "web",
        80,
        &["--network", "appnet", "-p", "8080:80"],
    );
    let task = running(&cluster, "web", 1).remove(0);
    let node = &cluster.nodes[0];
    let id = node.node_id();
    let state = fs::canonicalize(node.state_dir()).unwrap();
    let socket = node.socket();
    let task_pid: i32 = fs::read_to_string(state.join("tasks").join(&task.id).join("pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mounts = || -> Vec<String> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| Path::new(p).starts_with(&state))
            .collect()
    };
    // By name and path: the cluster is borrowed mutably below (kill, start).
    let ns_name = cluster.node_ns(0).name().to_string();
    let ns_path = cluster.node_ns(0).path();
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&ns_name)
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let links = || ip(&["-o", "link", "show"]);
    // The node's task cgroups, one directory per hierarchy, as the agent recorded them.
    let cgroups: Vec<PathBuf> = fs::read_to_string(state.join("cgroups"))
        .unwrap()
        .lines()
        .map(|l| PathBuf::from(l.split_once(' ').unwrap().1))
        .collect();
    assert!(!cgroups.is_empty());

    // --- 1. SIGKILL: the tasks, their namespaces, the pins and the gateway stay behind
    cluster.nodes[0].kill();
    assert!(pin_dir(&id).join("xdp_link").exists());
    assert!(
        mounts().len() >= 3,
        "task, sandbox and ingress namespaces: {:?}",
        mounts()
    );
    assert!(Path::new(&format!("/proc/{task_pid}")).exists());
    assert!(cgroups.iter().all(|c| c.join(&task.id).is_dir()));
    assert!(links().contains("shoal_gwbridge"), "{}", links());
    assert!(socket.exists());
    let engine_socket = socket.with_file_name("docker.sock");
    assert!(engine_socket.exists());

    // --- 2. --cleanup, in the node's namespace
    let cleanup = || {
        Command::new("nsenter")
            .arg(format!("--net={ns_path}"))
            .arg("--")
            .arg(shoal_bin())
            .args(["agent", "--cleanup", "--state-dir"])
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap()
    };
    let out = cleanup();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains(&format!("node {id} cleaned up")), "{said}");
    assert!(!pin_dir(&id).exists(), "pins left: {said}");
    assert_eq!(mounts(), Vec::<String>::new(), "mounts left: {said}");
    assert_eq!(
        fs::read_dir(state.join("netns")).unwrap().count(),
        0,
        "namespace files left"
    );
    assert!(
        !Path::new(&format!("/proc/{task_pid}")).exists(),
        "task still runs"
    );
    let left: Vec<&PathBuf> = cgroups.iter().filter(|c| c.exists()).collect();
    assert!(left.is_empty(), "task cgroups left: {left:?}");
    assert!(!socket.exists(), "socket left");
    assert!(!engine_socket.exists(), "docker.sock left");
    let eth0 = ip(&["-d", "link", "show", "eth0"]);
    assert!(!eth0.contains("prog/xdp"), "XDP left on eth0: {eth0}");
    // The namespaces are freed with their last reference, and their veths with them: the
    // ingress endpoint's and the gateway bridge's ports. The bridge itself is removed.
    wait_until(Duration::from_secs(10), "the node's links to go", || {
        let l = links();
        if ["shoal_gwbridge", "shoal_ingress"]
            .iter()
            .any(|n| l.contains(n))
        {
            Err(l)
        } else {
            Ok(())
        }
    });
    assert!(
        state.join("node-id").is_file(),
        "--cleanup keeps the identity"
    );

    // --- 3. again: nothing left is no error
    let out = cleanup();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // --- 4. while an agent runs on the state dir: refused, one line
    cluster.nodes[0].start();
    let out = cleanup();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("a shoal agent is running"), "{stderr}");
    assert_eq!(
        cluster.nodes[0].node_id(),
        id,
        "the identity survived --cleanup"
    );
}
