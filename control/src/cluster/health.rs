//! Health checks as Docker defines them (`--health-cmd`, compose `healthcheck:`, the Engine
//! API's `HealthConfig`): what the agent runs inside a task, how often, and what a task's
//! health is. The agent runs them (`agent/src/executor/health.rs`); a task with a check is
//! ready, and joins its service's backends, only once it is healthy.

use serde::{Deserialize, Serialize};

/// Docker's defaults, used where a duration or count is 0 (unset).
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;

/// A service's health check: Docker's `HealthConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// As Docker keeps it: `["CMD", argv...]`, `["CMD-SHELL", "command line"]` or `["NONE"]`
    /// (`--no-healthcheck`: none, which also overrides an inherited one).
    pub test: Vec<String>,
    /// 0: the default (30 s).
    pub interval_ms: u64,
    /// 0: the default (30 s).
    pub timeout_ms: u64,
    /// Failures during this time after the start do not count (a success still counts).
    pub start_period_ms: u64,
    /// Consecutive failures that make a task unhealthy; 0: the default (3).
    pub retries: u32,
}

/// What the agent runs for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    /// Run this program with these arguments.
    Exec(&'a [String]),
    /// Run this line with `/bin/sh -c`.
    Shell(&'a str),
}

impl HealthCheck {
    /// The command to run, or `None` when the check is disabled (`NONE`, or no test).
    pub fn probe(&self) -> Option<Probe<'_>> {
        match self.test.split_first() {
            Some((kind, argv)) if kind == "CMD" && !argv.is_empty() => Some(Probe::Exec(argv)),
            Some((kind, line)) if kind == "CMD-SHELL" && line.len() == 1 => {
                Some(Probe::Shell(&line[0]))
            }
            _ => None,
        }
    }

    pub fn interval_ms(&self) -> u64 {
        nonzero_or(self.interval_ms, DEFAULT_INTERVAL_MS)
    }

    pub fn timeout_ms(&self) -> u64 {
        nonzero_or(self.timeout_ms, DEFAULT_TIMEOUT_MS)
    }

    pub fn retries(&self) -> u32 {
        if self.retries == 0 {
            DEFAULT_RETRIES
        } else {
            self.retries
        }
    }

    /// Docker's checks on a `HealthConfig`'s test. (Durations are whole milliseconds here,
    /// so Docker's "cannot be less than 1ms" cannot arise.)
    pub fn validate(&self) -> Result<(), String> {
        match self.test.first().map(String::as_str) {
            None | Some("NONE") if self.test.len() <= 1 => {}
            Some("CMD") if self.test.len() > 1 => {}
            Some("CMD-SHELL") if self.test.len() == 2 => {}
            Some("CMD-SHELL") => {
                return Err("healthcheck CMD-SHELL takes exactly one command line".into());
            }
            _ => {
                return Err(format!(
                    "invalid healthcheck test {:?}: expected [\"CMD\", program, args...], \
                     [\"CMD-SHELL\", \"command\"] or [\"NONE\"]",
                    self.test
                ));
            }
        }
        Ok(())
    }
}

fn nonzero_or(value: u64, default: u64) -> u64 {
    if value == 0 { default } else { value }
}

/// A running task's health, as Docker's `State.Health.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Not yet healthy, and not failing enough to be unhealthy.
    Starting,
    Healthy,
    /// `retries` checks failed in a row; the task is stopped and counts as failed.
    Unhealthy,
}

impl Health {
    pub const ALL: [Health; 3] = [Health::Starting, Health::Healthy, Health::Unhealthy];

    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        Health::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(test: &[&str]) -> HealthCheck {
        HealthCheck {
            test: test.iter().map(ToString::to_string).collect(),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn the_test_forms_are_dockers() {
        let argv = ["test".to_string(), "-f".into(), "/ok".into()];
        assert_eq!(
            check(&["CMD", "test", "-f", "/ok"]).probe(),
            Some(Probe::Exec(&argv))
        );
        assert_eq!(
            check(&["CMD-SHELL", "curl -f localhost"]).probe(),
            Some(Probe::Shell("curl -f localhost"))
        );
        for off in [&["NONE"][..], &[]] {
            assert_eq!(check(off).probe(), None);
            assert_eq!(check(off).validate(), Ok(()));
        }
        for bad in [
            &["CMD"][..],
            &["CMD-SHELL"],
            &["CMD-SHELL", "a", "b"],
            &["SHELL", "x"],
            &["NONE", "x"],
        ] {
            assert!(check(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_means_dockers_default() {
        let c = check(&["CMD", "true"]);
        assert_eq!(
            (c.interval_ms(), c.timeout_ms(), c.retries()),
            (30_000, 30_000, 3)
        );
        let c = HealthCheck {
            interval_ms: 500,
            timeout_ms: 200,
            retries: 1,
            ..c
        };
        assert_eq!(
            (c.interval_ms(), c.timeout_ms(), c.retries()),
            (500, 200, 1)
        );
    }

    #[test]
    fn health_names_round_trip() {
        for h in Health::ALL {
            assert_eq!(Health::parse(h.as_str()), Some(h));
        }
        assert_eq!(Health::parse("sick"), None);
    }
}
