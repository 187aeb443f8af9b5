//! One `shoal agent` process inside a node namespace, and the CLI pointed at its socket.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::wait::wait_until;

/// How long an agent gets to become ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `shoal` binary under test: `$SHOAL_BIN`, or `shoal` in the caller's target profile
/// directory (tests run from `target/<profile>/deps/`, benchmarks from `target/<profile>/`).
pub fn shoal_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let here = exe.parent().unwrap();
    let candidates = [here.join("shoal"), here.parent().unwrap().join("shoal")];
    candidates
        .iter()
        .find(|bin| bin.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} not found: build it first (cargo build), or set SHOAL_BIN",
                candidates[1].display()
            )
        })
}

/// Runs the `shoal` CLI with `args` against the agent listening on `socket`.
pub fn shoal_cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .output()
        .unwrap()
}

/// A node's agent. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    /// Hostname given to the agent (`node1`, ...).
    pub name: String,
    /// Underlay address, also the advertise and data-path address.
    pub address: Ipv4Addr,
    netns_path: String,
    /// This node's work dir: `state/`, `shoal.sock`, `agent.log`.
    dir: PathBuf,
    /// More `shoal agent` flags, for the next start (e.g. `--dns`).
    pub extra_args: Vec<String>,
    /// More environment variables for the next start, on top of the caller's (e.g.
    /// `SHOAL_INSTANT_STOP=1` for the zero-downtime benchmark's "before" row).
    pub extra_env: Vec<(String, String)>,
    /// Cgroups (directories, any hierarchy) the agent starts in, as systemd starts a unit's
    /// main process in the unit's cgroup; empty: the test's own.
    pub cgroups: Vec<PathBuf>,
    child: Option<Child>,
}

impl Agent {
    /// Describes an agent; nothing runs until [`Agent::start`].
    pub fn new(name: &str, address: Ipv4Addr, netns_path: &str, dir: PathBuf) -> Agent {
        std::fs::create_dir_all(&dir).unwrap();
        Agent {
            name: name.to_string(),
            address,
            netns_path: netns_path.to_string(),
            dir,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            cgroups: Vec::new(),
            child: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the agent in its namespace and waits until its API answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path))
            .arg("--")
            .arg(shoal_bin())
            .arg("agent")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .args(["--hostname", &self.name])
            .args(["--advertise-addr", &self.address.to_string()])
            .args(["--log-level", "debug"])
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let cgroup_procs: Vec<File> = self
            .cgroups
            .iter()
            .map(|dir| {
                File::options()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
                    .unwrap()
            })
            .collect();
        // SAFETY: prctl and write are async-signal-safe; nothing else runs between fork and
        // exec. The agent dies with the test (a SIGKILLed test cannot run Drop). nsenter execs
        // the agent, and the death signal survives exec. "0" moves the writer into the cgroup.
        unsafe {
            cmd.pre_exec(move || {
                for file in &cgroup_procs {
                    nix::unistd::write(file, b"0").map_err(std::io::Error::from)?;
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        self.child = Some(cmd.spawn().unwrap());
        let what = format!("{} to answer `shoal info`", self.name);
        wait_until(READY_TIMEOUT, &what, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            self.try_info()
        });
    }

    /// `shoal info --format json`, parsed.
    pub fn try_info(&self) -> Result<serde_json::Value, String> {
        let out = self.cli(&["info", "--format", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `shoal info`, panicking with the agent's log if it fails.
    pub fn info(&self) -> serde_json::Value {
        self.try_info().unwrap_or_else(|e| {
            panic!("{}: info failed: {e}; log:\n{}", self.name, self.log_tail())
        })
    }

    pub fn node_id(&self) -> String {
        self.info()["node_id"].as_str().unwrap().to_string()
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        shoal_cli(&self.socket(), args)
    }

    /// SIGKILL, and reap. The socket file and pins stay behind, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for the agent to exit; SIGKILL after the timeout. Returns how it
    /// exited, or `None` if it was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// The last 40 lines of the agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}
