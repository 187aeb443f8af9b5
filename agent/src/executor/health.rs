//! Health checks, as Docker runs them: the service's check command runs inside the task's
//! namespaces (with its environment, working directory and user) every `interval`, counting
//! as failed when it exits non-zero, cannot start, or runs past `timeout` (its process group is
//! killed then). A success makes the task healthy; `retries` failures in a row make it
//! unhealthy, except that failures during `start_period` do not count while it has not been
//! healthy yet. Swarm's rules on top, applied by the supervisor: a task with a check is ready
//! (joins its service) only once healthy, and an unhealthy one is stopped and fails
//! ("unhealthy container"), so its restart policy replaces it.
//!
//! The first check runs one interval after the start, as Docker's. Docker 25's
//! `--health-start-interval` (checks more often during the start period) is not offered.

use std::{
    fs::File,
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use shoal_control::cluster::health::{Health, HealthCheck, Probe};
use tracing::info;

use super::ExecutorError;

/// At most this much of a check's output is logged when it fails (Docker keeps 4 KiB too).
const MAX_LOGGED_OUTPUT: u64 = 4096;

/// One task's checks: when the next runs, the one running, and what they said so far.
pub struct HealthMonitor {
    check: HealthCheck,
    health: Health,
    /// Failures in a row that counted.
    failures: u32,
    /// Failures before this do not count, while the task is still starting.
    start_period_until: Instant,
    next_run: Instant,
    running: Option<RunningProbe>,
    /// Where each check's output goes (the task directory's `health.log`).
    log: PathBuf,
}

struct RunningProbe {
    child: Child,
    deadline: Instant,
}

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
}

impl HealthMonitor {
    /// The monitor of a task whose service has an enabled check, `None` otherwise.
    /// `started`: when its process started (`None`: re-adopted after an agent restart, long
    /// past its start period); `last`: the health recorded before that restart.
    pub fn new(
        check: Option<&HealthCheck>,
        started: Option<Instant>,
        last: Option<Health>,
        log: PathBuf,
        now: Instant,
    ) -> Option<HealthMonitor> {
        let check = check.filter(|c| c.probe().is_some())?.clone();
        let start_period_until = match started {
            Some(at) => at + Duration::from_millis(check.start_period_ms),
            None => now,
        };
        let next_run = started.unwrap_or(now) + interval(&check);
        Some(HealthMonitor {
            health: last.unwrap_or(Health::Starting),
            failures: 0,
            start_period_until,
            next_run,
            running: None,
            log,
            check,
        })
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// When [`HealthMonitor::poll`] next has something to do.
    pub fn due(&self) -> Instant {
        self.running.as_ref().map_or(self.next_run, |r| r.deadline)
    }

    /// Ends a check that finished or ran out of time, and starts the next one when it is due;
    /// `command` builds the check's command in the task (called only to start one). Returns
    /// the new health when it changed.
    pub fn poll(
        &mut self,
        now: Instant,
        command: impl FnOnce(&[String]) -> Result<Command, ExecutorError>,
        task_id: &str,
    ) -> Option<Health> {
        if let Some(outcome) = self.finish_probe(now, task_id) {
            return self.record(outcome, now);
        }
        if self.running.is_some() || now < self.next_run {
            return None;
        }
        match self.start_probe(command, now) {
            Ok(probe) => {
                self.running = Some(probe);
                None
            }
            Err(e) => {
                info!(task = task_id, error = %e, "health check could not start");
                self.next_run = now + interval(&self.check);
                self.record(Outcome::Failed, now)
            }
        }
    }

    /// Counts one check's outcome (Docker's `handleProbeResult`); the new health if changed.
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> Option<Health> {
        let before = self.health;
        match outcome {
            Outcome::Passed => {
                self.failures = 0;
                // Unhealthy is final here: the task is being replaced.
                if self.health == Health::Starting {
                    self.health = Health::Healthy;
                }
            }
            Outcome::Failed if self.health == Health::Starting && now < self.start_period_until => {
            }
            Outcome::Failed => {
                self.failures += 1;
                if self.failures >= self.check.retries() {
                    self.health = Health::Unhealthy;
                }
            }
        }
        (self.health != before).then_some(self.health)
    }

    fn start_probe(
        &self,
        command: impl FnOnce(&[String]) -> Result<Command, ExecutorError>,
        now: Instant,
    ) -> Result<RunningProbe, ExecutorError> {
        let argv: Vec<String> = match self.check.probe() {
            Some(Probe::Exec(argv)) => argv.to_vec(),
            Some(Probe::Shell(line)) => vec!["/bin/sh".into(), "-c".into(), line.into()],
            // `new` only builds monitors of enabled checks.
            None => return Err(ExecutorError::EmptyCommand),
        };
        let write = |source| ExecutorError::Write {
            path: self.log.clone(),
            source,
        };
        let output = File::create(&self.log).map_err(write)?;
        let errors = output.try_clone().map_err(write)?;
        let mut command = command(&argv)?;
        // A group of its own, so that a timeout kills what a shell line started too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|source| ExecutorError::Spawn {
                what: "the health check",
                source,
            })?;
        Ok(RunningProbe {
            child,
            deadline: now + Duration::from_millis(self.check.timeout_ms()),
        })
    }

    /// The running check's outcome if it is over (finished, or killed at its deadline).
    fn finish_probe(&mut self, now: Instant, task_id: &str) -> Option<Outcome> {
        let probe = self.running.as_mut()?;
        let outcome = match probe.child.try_wait() {
            Ok(Some(status)) if status.success() => Outcome::Passed,
            Ok(Some(status)) => {
                info!(task = task_id, %status, output = %self.output(), "health check failed");
                Outcome::Failed
            }
            Ok(None) if now < probe.deadline => return None,
            Ok(None) | Err(_) => {
                info!(task = task_id, "health check timed out");
                kill_probe(probe);
                Outcome::Failed
            }
        };
        self.running = None;
        self.next_run = now + interval(&self.check);
        Some(outcome)
    }

    /// The start of what the last check printed, for the log.
    fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(file) = File::open(&self.log) {
            let _ = file.take(MAX_LOGGED_OUTPUT).read_to_string(&mut text);
        }
        text.trim_end().to_owned()
    }
}

impl Drop for HealthMonitor {
    /// A check still running when its task stops (or the agent drops the monitor) is killed
    /// and reaped, never left behind.
    fn drop(&mut self) {
        if let Some(probe) = &mut self.running {
            kill_probe(probe);
        }
    }
}

fn kill_probe(probe: &mut RunningProbe) {
    // The probe leads its own process group (pgid = its PID, held until reaped below).
    if let Ok(pid) = i32::try_from(probe.child.id()) {
        // SAFETY: a plain syscall on integers.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
    let _ = probe.child.wait();
}

fn interval(check: &HealthCheck) -> Duration {
    Duration::from_millis(check.interval_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(check: HealthCheck, now: Instant) -> HealthMonitor {
        HealthMonitor::new(
            Some(&check),
            Some(now),
            None,
            PathBuf::from("/dev/null"),
            now,
        )
        .unwrap()
    }

    fn shell(line: &str) -> HealthCheck {
        HealthCheck {
            test: vec!["CMD-SHELL".into(), line.into()],
            interval_ms: 10,
            timeout_ms: 5_000,
            retries: 2,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn a_disabled_check_has_no_monitor() {
        let now = Instant::now();
        let none = HealthCheck {
            test: vec!["NONE".into()],
            ..HealthCheck::default()
        };
        let log = PathBuf::from("/dev/null");
        assert!(HealthMonitor::new(Some(&none), Some(now), None, log.clone(), now).is_none());
        assert!(HealthMonitor::new(None, Some(now), None, log, now).is_none());
    }

    #[test]
    fn transitions_follow_dockers_rules() {
        let t0 = Instant::now();
        let mut m = monitor(shell("true"), t0);
        assert_eq!(m.health(), Health::Starting);
        // One failure of two allowed: still starting.
        assert_eq!(m.record(Outcome::Failed, t0), None);
        // A success resets the streak and makes it healthy.
        assert_eq!(m.record(Outcome::Passed, t0), Some(Health::Healthy));
        assert_eq!(m.record(Outcome::Failed, t0), None);
        assert_eq!(m.record(Outcome::Passed, t0), None);
        assert_eq!(m.record(Outcome::Failed, t0), None);
        // Two in a row: unhealthy, and it stays so.
        assert_eq!(m.record(Outcome::Failed, t0), Some(Health::Unhealthy));
        assert_eq!(m.record(Outcome::Passed, t0), None);
        assert_eq!(m.health(), Health::Unhealthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_healthy() {
        let t0 = Instant::now();
        let mut m = monitor(
            HealthCheck {
                start_period_ms: 1_000,
                retries: 1,
                ..shell("true")
            },
            t0,
        );
        for _ in 0..5 {
            assert_eq!(
                m.record(Outcome::Failed, t0 + Duration::from_millis(500)),
                None
            );
        }
        assert_eq!(m.health(), Health::Starting);
        // After the start period the first failure counts.
        let later = t0 + Duration::from_millis(1_001);
        assert_eq!(m.record(Outcome::Failed, later), Some(Health::Unhealthy));
        // Healthy within the period: from then on failures count at once.
        let mut m = monitor(
            HealthCheck {
                start_period_ms: 1_000,
                retries: 1,
                ..shell("true")
            },
            t0,
        );
        assert_eq!(m.record(Outcome::Passed, t0), Some(Health::Healthy));
        assert_eq!(m.record(Outcome::Failed, t0), Some(Health::Unhealthy));
    }

    /// Real processes: exit status, a timeout (the check's whole group killed), a program
    /// that cannot start.
    #[test]
    fn checks_run_as_processes() {
        let dir = tempfile::tempdir().unwrap();
        let run = |check: HealthCheck| -> Health {
            let t0 = Instant::now();
            let log = dir.path().join("health.log");
            let mut m = HealthMonitor::new(Some(&check), Some(t0), None, log, t0).unwrap();
            let deadline = t0 + Duration::from_secs(10);
            while m.health() == Health::Starting && Instant::now() < deadline {
                m.poll(
                    Instant::now(),
                    |argv| {
                        let mut c = Command::new(&argv[0]);
                        c.args(&argv[1..]);
                        Ok(c)
                    },
                    "t",
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            m.health()
        };
        assert_eq!(run(shell("exit 0")), Health::Healthy);
        assert_eq!(run(shell("echo sick; exit 1")), Health::Unhealthy);
        // Past its timeout, what the check started is killed with it.
        let pid_file = dir.path().join("background.pid");
        let line = format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display());
        assert_eq!(
            run(HealthCheck {
                timeout_ms: 100,
                ..shell(&line)
            }),
            Health::Unhealthy
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // Gone, or a zombie waiting for whoever adopted it.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            assert!(stat.contains(") Z "), "{stat}");
        }
        let exec = HealthCheck {
            test: vec!["CMD".into(), "/nonexistent/probe".into()],
            ..shell("")
        };
        assert_eq!(run(exec), Health::Unhealthy);
    }
}
