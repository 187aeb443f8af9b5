//! End-to-end tests of the executor: real processes in real namespaces (run as root).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::{
    sys::{
        signal::Signal,
        wait::{WaitPidFlag, waitpid},
    },
    unistd::Pid,
};
use shoal_control::cluster::{
    FailureAction, Mount, MountKind, PortConfig, PortProtocol, PublishMode, RestartCondition,
    RestartPolicy, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus, TmpfsOptions,
    UpdateConfig, UpdateOrder,
};

use std::sync::{Arc, Mutex};

use super::{
    Cgroups, Executor, TaskNetwork,
    proc::{Liveness, ProcessIdentity},
    store,
};
use crate::volumes::{ANONYMOUS_LABEL, VolumeError, Volumes};

/// The executor's side of networking, recorded: which task namespaces were handed over to be
/// attached and detached (these tests' tasks are on no network).
#[derive(Default)]
struct RecordedNetwork {
    calls: Mutex<Vec<String>>,
}

impl TaskNetwork for RecordedNetwork {
    fn attach(&self, task: &Task, netns: &Path) -> anyhow::Result<()> {
        assert!(netns.exists(), "attach gets an existing namespace");
        self.calls
            .lock()
            .unwrap()
            .push(format!("attach {}", task.id));
        Ok(())
    }
    fn detach(&self, task: &Task, _: &Path) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("detach {}", task.id));
    }
    fn publish(&self, task: &Task) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("publish {}", task.id));
    }
    /// Withdraws what was published: a task with ports stands for one with endpoints.
    fn withdraw(&self, task: &Task) -> bool {
        let mut calls = self.calls.lock().unwrap();
        let published = calls.contains(&format!("publish {}", task.id));
        calls.push(format!("withdraw {}", task.id));
        published && !task.spec.ports.is_empty()
    }
}

mod files;

const WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// A unique state dir; on drop (even after a failed assertion) kills every task process
/// recorded in it, reaps them, and removes the directory.
struct Harness {
    dir: PathBuf,
    network: Arc<RecordedNetwork>,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let dir = PathBuf::from(format!(
            "/tmp/shoal-executor-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("creating the state dir");
        Harness {
            dir,
            network: Arc::default(),
        }
    }

    fn open(&self) -> Executor {
        self.open_with_volumes().0
    }

    /// Opens the executor as an agent does, with a volume store of its own (in-memory users
    /// start empty, as after a restart).
    fn open_with_volumes(&self) -> (Executor, Arc<Volumes>) {
        let volumes = Arc::new(Volumes::open(&self.dir).expect("opening the volume store"));
        let ex = Executor::open(
            &self.dir,
            self.network.clone(),
            volumes.clone(),
            "testhost".to_owned(),
            &self.cgroup_name(),
        )
        .expect("opening the executor");
        (ex, volumes)
    }

    /// The node ID the task cgroups are named after: the state dir's own unique name.
    fn cgroup_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn network_calls(&self) -> Vec<String> {
        self.network.calls.lock().unwrap().clone()
    }

    /// A scratch directory (for mounts), removed with the state dir.
    fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.join("scratch").join(name);
        fs::create_dir_all(&path).expect("creating a scratch dir");
        path
    }

    fn pid_file(&self, id: &str) -> Option<ProcessIdentity> {
        store::TaskDir::new(&self.dir.join("tasks"), id)
            .read_pid()
            .expect("reading the pid file")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let tasks_dir = self.dir.join("tasks");
        let ids = store::list(&tasks_dir).unwrap_or_default();
        let processes: Vec<ProcessIdentity> = ids
            .iter()
            .filter_map(|id| {
                store::TaskDir::new(&tasks_dir, id)
                    .read_pid()
                    .ok()
                    .flatten()
            })
            .filter(|p| p.liveness() != Liveness::Gone)
            .collect();
        for p in &processes {
            let _ = nix::sys::signal::killpg(p.nix_pid(), Signal::SIGKILL);
        }
        // Reap those that are this test process's children and not reaped by a supervisor.
        for p in &processes {
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                match waitpid(p.nix_pid(), Some(WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(POLL),
                    _ => break,
                }
            }
        }
        // And the task cgroups, with anything still in them.
        if let Some(cgroups) = Cgroups::load(&self.dir) {
            cgroups.remove_node();
        }
        // Task namespaces are mounted under netns/ (itself a mount point).
        let _ = nix::mount::umount2(&self.dir.join("netns"), nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn task(id: &str, command: &[&str]) -> Task {
    let update = UpdateConfig {
        parallelism: 1,
        delay_ms: 0,
        failure_action: FailureAction::Pause,
        monitor_ms: 0,
        max_failure_ratio_milli: 0,
        order: UpdateOrder::StopFirst,
    };
    Task {
        id: id.to_owned(),
        service_id: "svc1".to_owned(),
        slot: 1,
        node_id: "node1".to_owned(),
        service_version: 1,
        spec: ServiceSpec {
            name: "web".to_owned(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![("FOO".to_owned(), "bar".to_owned())],
            mounts: vec![],
            mode: ServiceMode::Replicated { replicas: 1 },
            constraints: vec![],
            networks: vec![],
            endpoint_mode: Default::default(),
            restart: RestartPolicy {
                condition: RestartCondition::Any,
                delay_ms: 0,
                max_attempts: 0,
                window_ms: 0,
            },
            update,
            rollback: update,
            stop_grace_ms: 10_000,
            force_update: 0,
            ports: Vec::new(),
            labels: Default::default(),
            network_aliases: Default::default(),
            workdir: String::new(),
            user: String::new(),
            hostname: String::new(),
            stop_signal: String::new(),
            max_replicas_per_node: 0,
            secrets: Vec::new(),
            configs: Vec::new(),
            healthcheck: None,
            command_shape: None,
            resources: Default::default(),
        },
        networks: vec![],
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Assigned,
            message: String::new(),
            error: String::new(),
            exit_code: None,
            timestamp_ms: 0,
            health: None,
        },
        created_at_ms: 0,
    }
}

fn mount(kind: MountKind, source: &str, target: &Path, readonly: bool) -> Mount {
    Mount {
        kind,
        source: source.to_owned(),
        target: target.display().to_string(),
        readonly,
        tmpfs: TmpfsOptions::default(),
    }
}

fn shutdown(task: &Task) -> Task {
    Task {
        desired_state: TaskState::Shutdown,
        ..task.clone()
    }
}

/// Polls `check` every 20 ms for up to 5 s.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Collects reports as they come, so a test can wait for one and look at all of them.
struct Reports<'a> {
    executor: &'a Executor,
    seen: Vec<(String, TaskStatus)>,
}

impl<'a> Reports<'a> {
    fn new(executor: &'a Executor) -> Self {
        Reports {
            executor,
            seen: Vec::new(),
        }
    }

    fn wait(&mut self, id: &str, state: TaskState) -> TaskStatus {
        wait_for(&format!("{id} to report {state:?}"), || {
            self.seen.extend(self.executor.take_reports());
            self.seen
                .iter()
                .find(|(i, s)| i == id && s.state == state)
                .map(|(_, s)| s.clone())
        })
    }

    fn states(&mut self, id: &str) -> Vec<TaskState> {
        self.seen.extend(self.executor.take_reports());
        self.seen
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| s.state)
            .collect()
    }
}

fn wait_for_log(path: &Path, needle: &str) -> String {
    wait_for(&format!("{needle:?} in {}", path.display()), || {
        let text = fs::read_to_string(path).unwrap_or_default();
        text.contains(needle).then_some(text)
    })
}

fn wait_gone(process: ProcessIdentity) {
    wait_for("the process to exit", || {
        (process.liveness() != Liveness::Alive).then_some(())
    });
}

/// Live processes whose environment says they belong to task `id`.
fn processes_of(id: &str) -> Vec<u32> {
    let needle = format!("SHOAL_TASK_ID={id}\0");
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let alive = ProcessIdentity::of(*pid).is_some_and(|p| p.liveness() == Liveness::Alive);
            alive
                && environ
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
        })
        .collect();
    pids.sort();
    pids
}

fn ns_link(pid: &str, ns: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("reading a namespace link")
}

#[test]
fn task_runs_in_its_own_namespaces_with_hostname_logs_and_env() {
    let h = Harness::new("ns");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let t = task(
        "tns1",
        &[
            "sh",
            "-c",
            "hostname; echo out; echo err >&2; \
             echo \"name=$SHOAL_TASK_NAME id=$SHOAL_TASK_ID svc=$SHOAL_SERVICE_NAME foo=$FOO\"; \
             sleep 30",
        ],
    );
    ex.reconcile(std::slice::from_ref(&t));
    reports.wait("tns1", TaskState::Running);
    assert_eq!(
        reports.states("tns1"),
        [
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    let pid = ex.pid("tns1").expect("running task has a pid");
    for ns in ["net", "mnt", "uts"] {
        assert_ne!(
            ns_link("self", ns),
            ns_link(&pid.to_string(), ns),
            "{ns} namespace shared with the agent"
        );
    }
    // Not a pid namespace: the agent must see and signal the task's PID.
    assert_eq!(ns_link("self", "pid"), ns_link(&pid.to_string(), "pid"));
    // Its network namespace is the one prepared (and handed to the networking) before it ran.
    let netns = h.dir.join("netns").join("task-tns1");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).expect("stat"));
    assert_eq!(
        inode(&netns),
        inode(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    );
    // Ready at once: it has neither network nor port to wait for.
    assert_eq!(h.network_calls(), ["attach tns1", "publish tns1"]);

    let (stdout, stderr) = ex.log_paths("tns1").expect("log paths");
    let out = wait_for_log(&stdout, "foo=bar");
    assert_eq!(out.lines().next(), Some("tns1"), "hostname is the task id");
    assert!(out.contains("\nout\n"), "{out}");
    assert!(
        out.contains("name=web.1.tns1 id=tns1 svc=web foo=bar"),
        "{out}"
    );
    wait_for_log(&stderr, "err\n");

    // exec: inside the task's namespaces, with its env.
    let output = ex
        .exec_command(
            "tns1",
            &[
                "sh".into(),
                "-c".into(),
                "hostname; echo $SHOAL_TASK_ID".into(),
            ],
        )
        .expect("exec command")
        .stdin(Stdio::null())
        .output()
        .expect("running exec");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "tns1\ntns1\n");
    assert!(ex.exec_command("nope", &["true".into()]).is_err());

    // Desired Shutdown: SIGTERM ends it, reported as Shutdown.
    let process = h.pid_file("tns1").expect("pid file");
    assert_eq!(process.pid, pid);
    ex.reconcile(&[shutdown(&t)]);
    let status = reports.wait("tns1", TaskState::Shutdown);
    assert_eq!(status.exit_code, Some(128 + 15));
    wait_gone(process);
    assert_eq!(ex.pid("tns1"), None);
    assert!(ex.exec_command("tns1", &["true".into()]).is_err());
    // Exited: detached, and its namespace is gone.
    assert_eq!(
        h.network_calls(),
        [
            "attach tns1",
            "publish tns1",
            "withdraw tns1",
            "detach tns1"
        ]
    );
    assert!(!netns.exists(), "the task's netns mount is removed");
}

#[test]
fn bind_mounts_are_visible_inside_only() {
    let h = Harness::new("mounts");
    let (src_rw, dst_rw) = (h.scratch("src-rw"), h.scratch("dst-rw"));
    let (src_ro, dst_ro) = (h.scratch("src-ro"), h.scratch("dst-ro"));
    fs::write(src_rw.join("marker"), "hello from the host\n").expect("writing the marker");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let script = format!(
        "cat {rw}/marker; touch {rw}/written && echo rw-ok; \
         if touch {ro}/x 2>/dev/null; then echo ro-broken; else echo ro-ok; fi; sleep 30",
        rw = dst_rw.display(),
        ro = dst_ro.display()
    );
    let mut t = task("tmnt1", &["sh", "-c", &script]);
    t.spec.mounts = vec![
        mount(
            MountKind::Bind,
            &src_rw.display().to_string(),
            &dst_rw,
            false,
        ),
        mount(
            MountKind::Bind,
            &src_ro.display().to_string(),
            &dst_ro,
            true,
        ),
    ];
    ex.reconcile(std::slice::from_ref(&t));
    reports.wait("tmnt1", TaskState::Running);
    let (stdout, _) = ex.log_paths("tmnt1").expect("log paths");
    let out = wait_for_log(&stdout, "ro-");
    assert_eq!(out, "hello from the host\nrw-ok\nro-ok\n");
    // The write went through to the source; the host's target is untouched.
    assert!(src_rw.join("written").exists());
    assert!(!dst_rw.join("marker").exists());
    assert!(!dst_rw.join("written").exists());
    let pid = ex.pid("tmnt1").expect("pid");
    let inside = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let outside = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = dst_ro.display().to_string();
    assert!(inside.contains(&target));
    assert!(!outside.contains(&target));

    // A mount whose source is missing fails the task before anything runs.
    let mut bad = task("tmnt2", &["true"]);
    bad.spec.mounts = vec![mount(MountKind::Bind, "/nonexistent/shoal", &dst_rw, false)];
    // A directory cannot be mounted on a file: the kernel refuses in the child, and the
    // error says which step failed.
    let file_target = h.scratch("file-target").join("file");
    fs::write(&file_target, "").expect("writing the file target");
    let mut wrong = task("tmnt3", &["true"]);
    wrong.spec.mounts = vec![mount(
        MountKind::Bind,
        &src_rw.display().to_string(),
        &file_target,
        false,
    )];
    ex.reconcile(&[t, bad, wrong]);
    let failed = reports.wait("tmnt2", TaskState::Failed);
    assert!(failed.error.contains("does not exist"), "{}", failed.error);
    let failed = reports.wait("tmnt3", TaskState::Failed);
    assert!(
        failed
            .error
            .starts_with("starting task failed: bind-mounting")
            && failed.error.contains("Not a directory"),
        "{}",
        failed.error
    );
    assert_eq!(ex.pid("tmnt3"), None);
}

#[test]
fn volumes_outlive_their_tasks_and_tmpfs_is_the_tasks_own() {
    let h = Harness::new("volumes");
    let (ex, volumes) = h.open_with_volumes();
    let mut reports = Reports::new(&ex);
    let (dst_vol, dst_anon, dst_tmp) = (
        h.scratch("dst-vol"),
        h.scratch("dst-anon"),
        h.scratch("dst-tmp"),
    );
    let script = format!(
        "echo one >> {vol}/log; echo anon > {anon}/f; echo tmp > {tmp}/f; echo ready; sleep 30",
        vol = dst_vol.display(),
        anon = dst_anon.display(),
        tmp = dst_tmp.display()
    );
    let mut t = task("tvol1", &["sh", "-c", &script]);
    t.spec.mounts = vec![
        // Created on first use.
        mount(MountKind::Volume, "data", &dst_vol, false),
        // Anonymous: named here, for this task.
        mount(MountKind::Volume, "", &dst_anon, false),
        Mount {
            tmpfs: TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o700,
            },
            ..mount(MountKind::Tmpfs, "", &dst_tmp, false)
        },
    ];
    ex.reconcile(std::slice::from_ref(&t));
    reports.wait("tvol1", TaskState::Running);
    let (stdout, _) = ex.log_paths("tvol1").expect("log paths");
    wait_for_log(&stdout, "ready");
    let data = h.dir.join("volumes/data/_data");
    assert_eq!(fs::read_to_string(data.join("log")).unwrap(), "one\n");

    // The anonymous volume: 64 hex characters, Docker's label, the task's file.
    let all = volumes.list().unwrap();
    let anonymous = all
        .iter()
        .find(|v| v.name != "data")
        .expect("an anonymous volume");
    assert_eq!(all.len(), 2);
    assert_eq!(anonymous.name.len(), 64);
    assert!(anonymous.labels.contains_key(ANONYMOUS_LABEL));
    assert_eq!(anonymous.used_by, ["tvol1"]);
    assert_eq!(
        fs::read_to_string(anonymous.mountpoint.join("f")).unwrap(),
        "anon\n"
    );
    let anonymous = anonymous.name.clone();

    // The tmpfs is in the task's mount namespace only, with the options asked for.
    let pid = ex.pid("tvol1").expect("pid");
    let inside = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let target = dst_tmp.display().to_string();
    let line = inside
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .unwrap_or_else(|| panic!("no tmpfs on {target}:\n{inside}"));
    assert!(
        line.contains(" - tmpfs tmpfs ")
            && line.contains("size=1024k")
            && line.contains("mode=700"),
        "{line}"
    );
    assert!(line.contains("nosuid,nodev,noexec"), "{line}");
    let outside = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!outside.contains(&target));
    assert!(!dst_tmp.join("f").exists());

    // In use: not removed.
    assert!(matches!(
        volumes.remove("data"),
        Err(VolumeError::InUse { tasks }) if tasks == ["tvol1"]
    ));

    // Stopped: no longer in use; the anonymous volume stays while the task is known here.
    ex.reconcile(&[shutdown(&t)]);
    reports.wait("tvol1", TaskState::Shutdown);
    assert!(volumes.inspect("data").unwrap().used_by.is_empty());
    assert!(volumes.inspect(&anonymous).is_ok());

    // A later task mounts the same named volume (read-only) and reads what the first wrote.
    let script = format!(
        "cat {vol}/log; if touch {vol}/x 2>/dev/null; then echo ro-broken; else echo ro-ok; fi; \
         sleep 30",
        vol = dst_vol.display()
    );
    let mut t2 = task("tvol2", &["sh", "-c", &script]);
    t2.spec.mounts = vec![mount(MountKind::Volume, "data", &dst_vol, true)];
    ex.reconcile(&[shutdown(&t), t2.clone()]);
    reports.wait("tvol2", TaskState::Running);
    let (stdout, _) = ex.log_paths("tvol2").expect("log paths");
    assert_eq!(wait_for_log(&stdout, "ro-"), "one\nro-ok\n");

    // The first task forgotten by the leader: its anonymous volume goes, the named one stays.
    ex.reconcile(std::slice::from_ref(&t2));
    assert!(matches!(
        volumes.inspect(&anonymous),
        Err(VolumeError::NotFound)
    ));
    assert!(volumes.inspect("data").is_ok());

    // After an agent restart, the re-adopted task still holds its volume.
    drop(ex);
    let (ex, volumes) = h.open_with_volumes();
    assert!(matches!(
        volumes.remove("data"),
        Err(VolumeError::InUse { tasks }) if tasks == ["tvol2"]
    ));
    let mut reports = Reports::new(&ex);
    ex.reconcile(&[shutdown(&t2)]);
    reports.wait("tvol2", TaskState::Shutdown);
    volumes.remove("data").unwrap();
    assert!(!h.dir.join("volumes/data").exists());
}

#[test]
fn a_task_refused_for_a_missing_path_creates_no_volume() {
    let h = Harness::new("volume-refused");
    let (ex, volumes) = h.open_with_volumes();
    let mut reports = Reports::new(&ex);
    let mut t = task("tvolbad", &["true"]);
    t.spec.mounts = vec![
        mount(MountKind::Volume, "early", &h.scratch("dst"), false),
        mount(MountKind::Volume, "", &h.scratch("dst2"), false),
        mount(
            MountKind::Volume,
            "late",
            Path::new("/nonexistent/shoal"),
            false,
        ),
    ];
    ex.reconcile(std::slice::from_ref(&t));
    let failed = reports.wait("tvolbad", TaskState::Failed);
    assert_eq!(
        failed.error,
        "starting task failed: invalid mount: target \"/nonexistent/shoal\" does not exist"
    );
    assert!(volumes.list().unwrap().is_empty());
}

#[test]
fn task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let h = Harness::new("grace");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let mut t = task(
        "tgrace1",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 30"],
    );
    t.spec.stop_grace_ms = 300;
    ex.reconcile(std::slice::from_ref(&t));
    reports.wait("tgrace1", TaskState::Running);
    let (stdout, _) = ex.log_paths("tgrace1").expect("log paths");
    // The trap is set once "ready" is printed.
    wait_for_log(&stdout, "ready");
    let process = h.pid_file("tgrace1").expect("pid file");

    let asked = Instant::now();
    ex.reconcile(&[shutdown(&t)]);
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "reconcile blocked for the grace period"
    );
    let status = reports.wait("tgrace1", TaskState::Shutdown);
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "killed before the grace period"
    );
    assert_eq!(status.exit_code, Some(128 + 9));
    wait_gone(process);
}

#[test]
fn a_task_runs_once_it_listens_and_is_withdrawn_before_its_signal() {
    let h = Harness::new("ready");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    // Binds its port a moment after it starts; says when SIGTERM comes.
    let listen = "import signal, socket, sys, time\n\
                  signal.signal(signal.SIGTERM, lambda *_: (print('term', flush=True), sys.exit(0)))\n\
                  time.sleep(0.5)\n\
                  s = socket.socket(); s.bind(('0.0.0.0', 8099)); s.listen()\n\
                  print('listening', flush=True)\n\
                  time.sleep(30)";
    let mut t = task("tready", &["/usr/bin/python3", "-c", listen]);
    t.spec.ports = vec![PortConfig {
        protocol: PortProtocol::Tcp,
        target: 8099,
        published: 8099,
        mode: PublishMode::Ingress,
        source: Default::default(),
    }];
    ex.reconcile(std::slice::from_ref(&t));
    reports.wait("tready", TaskState::Starting);
    let (stdout, _) = ex.log_paths("tready").expect("log paths");

    // --- Running, and published, only once it listens
    reports.wait("tready", TaskState::Running);
    let log = fs::read_to_string(&stdout).unwrap_or_default();
    assert!(
        log.contains("listening"),
        "running before it listened: {log:?}"
    );
    assert!(
        h.network
            .calls
            .lock()
            .unwrap()
            .contains(&"publish tready".to_owned())
    );

    // --- stopped: withdrawn at once, signalled only after the withdrawal has spread
    let asked = Instant::now();
    ex.reconcile(&[shutdown(&t)]);
    assert!(
        h.network
            .calls
            .lock()
            .unwrap()
            .contains(&"withdraw tready".to_owned())
    );
    assert!(
        !fs::read_to_string(&stdout)
            .unwrap_or_default()
            .contains("term"),
        "signalled with the withdrawal"
    );
    wait_for_log(&stdout, "term");
    assert!(
        asked.elapsed() >= super::stop::WITHDRAW_SPREAD,
        "signalled before the withdrawal could spread"
    );
    let status = reports.wait("tready", TaskState::Shutdown);
    assert_eq!(status.exit_code, Some(0));
}

#[test]
fn exit_codes_and_start_failures() {
    let h = Harness::new("exit");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let ok = task("tok", &["sh", "-c", "exit 0"]);
    let three = task("tthree", &["sh", "-c", "exit 3"]);
    let missing = task("tmissing", &["no-such-program-shoal", "x"]);
    ex.reconcile(&[ok.clone(), three.clone(), missing.clone()]);

    let complete = reports.wait("tok", TaskState::Complete);
    assert_eq!(
        (complete.message.as_str(), complete.exit_code),
        ("finished", Some(0))
    );
    let failed = reports.wait("tthree", TaskState::Failed);
    assert_eq!(failed.error, "task: non-zero exit (3)");
    assert_eq!(failed.exit_code, Some(3));
    let failed = reports.wait("tmissing", TaskState::Failed);
    assert_eq!(
        failed.error,
        "starting task failed: executable \"no-such-program-shoal\" not found"
    );
    assert_eq!(
        reports.states("tmissing"),
        [TaskState::Preparing, TaskState::Starting, TaskState::Failed]
    );

    // Finished tasks are never started again, whatever the leader still says.
    ex.reconcile(&[ok, three, missing]);
    assert!(ex.take_reports().is_empty());
    assert_eq!(ex.pid("tok"), None);
}

#[test]
fn running_task_is_readopted_after_an_agent_restart() {
    let h = Harness::new("adopt");
    let a = task("tadopt1", &["sleep", "30"]);
    let b = task("tadopt2", &["sleep", "30"]);
    let (pid_a, pid_b) = {
        let ex = h.open();
        let mut reports = Reports::new(&ex);
        ex.reconcile(&[a.clone(), b.clone()]);
        reports.wait("tadopt1", TaskState::Running);
        reports.wait("tadopt2", TaskState::Running);
        (
            ex.pid("tadopt1").expect("pid"),
            ex.pid("tadopt2").expect("pid"),
        )
        // Dropped here, as if the agent were killed: the tasks keep running.
    };
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    assert_eq!(ex.pid("tadopt1"), Some(pid_a));
    assert_eq!(ex.pid("tadopt2"), Some(pid_b));
    // The last status is reported again, in case the old agent never sent it.
    reports.wait("tadopt1", TaskState::Running);

    // The same assignments do not start anything.
    ex.reconcile(&[a.clone(), b.clone()]);
    assert_eq!(ex.pid("tadopt1"), Some(pid_a));
    assert_eq!(ex.pid("tadopt2"), Some(pid_b));
    assert_eq!(reports.states("tadopt1"), [TaskState::Running]);
    assert_eq!(h.pid_file("tadopt1").map(|p| p.pid), Some(pid_a));
    assert_eq!(
        processes_of("tadopt1"),
        [pid_a],
        "a second process was started"
    );

    // Killed behind the agent's back: noticed, exit status unknown.
    let process_a = h.pid_file("tadopt1").expect("pid file");
    nix::sys::signal::killpg(Pid::from_raw(pid_a as i32), Signal::SIGKILL).expect("killing");
    let failed = reports.wait("tadopt1", TaskState::Failed);
    assert!(
        failed.error.contains("exit status is unknown"),
        "{}",
        failed.error
    );
    assert_eq!(ex.pid("tadopt1"), None);
    wait_gone(process_a);

    // An adopted task is stopped like any other.
    let process_b = h.pid_file("tadopt2").expect("pid file");
    ex.reconcile(&[a, shutdown(&b)]);
    reports.wait("tadopt2", TaskState::Shutdown);
    wait_gone(process_b);
}

#[test]
fn a_task_started_without_a_cgroup_gets_one_when_adopted() {
    let h = Harness::new("cgadopt");
    let a = task("tcgadopt", &["sleep", "30"]);
    let pid = {
        let ex = h.open();
        let mut reports = Reports::new(&ex);
        ex.reconcile(std::slice::from_ref(&a));
        reports.wait("tcgadopt", TaskState::Running);
        ex.pid("tcgadopt").expect("pid")
    };
    // As an agent without cgroups left it: beside the node's subtree, no cgroup of its own.
    let cgroups = Cgroups::load(&h.dir).expect("the node's cgroups");
    let dirs = cgroups.task_dirs("tcgadopt");
    assert!(!dirs.is_empty());
    for dir in &dirs {
        let beside = dir.ancestors().nth(3).expect("the subtree's parent");
        fs::write(beside.join("cgroup.procs"), pid.to_string()).expect("moving the task out");
        fs::remove_dir(dir).expect("removing its cgroup");
    }
    let ex = h.open();
    assert_eq!(ex.pid("tcgadopt"), Some(pid));
    for dir in &dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).expect("its cgroup again");
        assert_eq!(procs.trim(), pid.to_string(), "{}", dir.display());
    }
}

#[test]
fn task_that_died_while_the_agent_was_down_is_reported_failed() {
    let h = Harness::new("down");
    let t = task("tdown1", &["sleep", "30"]);
    {
        let ex = h.open();
        let mut reports = Reports::new(&ex);
        ex.reconcile(std::slice::from_ref(&t));
        reports.wait("tdown1", TaskState::Running);
    }
    let process = h.pid_file("tdown1").expect("pid file");
    nix::sys::signal::killpg(process.nix_pid(), Signal::SIGKILL).expect("killing");
    wait_gone(process);

    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let failed = reports.wait("tdown1", TaskState::Failed);
    assert_eq!(failed.error, "task exited while the agent was down");
    // Still assigned with desired Running: not started again.
    ex.reconcile(&[t]);
    assert_eq!(ex.pid("tdown1"), None);
    assert_eq!(reports.states("tdown1"), [TaskState::Failed]);
}

#[test]
fn orphan_is_stopped_then_forgotten() {
    let h = Harness::new("orphan");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    ex.reconcile(&[task("torphan1", &["sleep", "30"])]);
    reports.wait("torphan1", TaskState::Running);
    let process = h.pid_file("torphan1").expect("pid file");

    ex.reconcile(&[]);
    reports.wait("torphan1", TaskState::Shutdown);
    wait_gone(process);
    assert!(
        ex.log_paths("torphan1").is_some(),
        "logs kept until the next reconcile"
    );

    ex.reconcile(&[]);
    assert!(ex.log_paths("torphan1").is_none());
    assert!(!h.dir.join("tasks/torphan1").exists());
}

#[test]
fn stop_all_stops_everything_and_shutdown_before_start_starts_nothing() {
    let h = Harness::new("stopall");
    let ex = h.open();
    let mut reports = Reports::new(&ex);
    let never = shutdown(&task("tnever", &["sleep", "30"]));
    ex.reconcile(&[
        task("tall1", &["sleep", "30"]),
        task("tall2", &["sleep", "30"]),
        never,
    ]);
    reports.wait("tall1", TaskState::Running);
    reports.wait("tall2", TaskState::Running);
    assert_eq!(reports.states("tnever"), [TaskState::Shutdown]);
    assert_eq!(ex.pid("tnever"), None);

    assert!(ex.stop_all());
    reports.wait("tall1", TaskState::Shutdown);
    reports.wait("tall2", TaskState::Shutdown);
    assert_eq!((ex.pid("tall1"), ex.pid("tall2")), (None, None));
}

#[test]
fn requeued_reports_come_back_first() {
    let h = Harness::new("requeue");
    let ex = h.open();
    ex.reconcile(&[task("tq1", &["sh", "-c", "exit 0"])]);
    let mut reports = Reports::new(&ex);
    reports.wait("tq1", TaskState::Complete);
    let taken = std::mem::take(&mut reports.seen);
    ex.requeue(taken.clone());
    assert_eq!(ex.take_reports(), taken);
    assert!(ex.take_reports().is_empty());
}

#[test]
fn invalid_task_ids_are_rejected_once() {
    let h = Harness::new("badid");
    let ex = h.open();
    let bad = task("../escape", &["true"]);
    ex.reconcile(std::slice::from_ref(&bad));
    let reports = ex.take_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].1.state, TaskState::Rejected);
    ex.reconcile(&[bad]);
    assert!(ex.take_reports().is_empty());
    assert!(!h.dir.join("escape").exists());
}

#[test]
fn executor_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Executor>();
}
