//! Health checks: a task with a check takes traffic only once healthy (listening is not
//! enough), shows its health in `service ps` and the metrics, is replaced when it turns
//! unhealthy, and a rolling update waits for the new task to be healthy.
//!
//! The checks test for a file in a directory of this test's (tasks see the node's file
//! system), so the test decides when a task is healthy.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use shoal_tests::{
    Cluster,
    task_net::{http_from, tcp_connect},
    wait_until,
};

use crate::support::{create_whoami, metric, ok, served_by};

/// A directory for the checks' files, removed when dropped.
struct CheckDir(PathBuf);

impl CheckDir {
    fn new(name: &str) -> CheckDir {
        let dir = std::env::temp_dir().join(format!("shoal-e2e-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        CheckDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for CheckDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The service's tasks as `service ps --format json` gives them.
fn tasks(cluster: &Cluster, service: &str) -> Vec<serde_json::Value> {
    let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
    serde_json::from_str(&out).unwrap()
}

/// The one task of `service` that is meant to run and is in `state` with `health`: its ID.
fn wait_for_task(cluster: &Cluster, service: &str, state: &str, health: &str) -> String {
    wait_until(
        Duration::from_secs(30),
        &format!("a {state} ({health}) task of {service}"),
        || {
            let tasks = tasks(cluster, service);
            tasks
                .iter()
                .find(|t| {
                    t["desired_state"] == "running" && t["state"] == state && t["health"] == health
                })
                .map(|t| t["id"].as_str().unwrap().to_string())
                .ok_or_else(|| format!("{tasks:#?}"))
        },
    )
}

fn task_field(cluster: &Cluster, service: &str, id: &str, field: &str) -> String {
    tasks(cluster, service)
        .iter()
        .find(|t| t["id"] == id)
        .and_then(|t| t[field].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn one_node() -> Cluster {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    cluster
}

fn health_flags(check: &Path) -> Vec<String> {
    [
        "--health-cmd",
        &format!("test -f {}", check.display()),
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "--health-timeout",
        "2s",
    ]
    .map(str::to_string)
    .to_vec()
}

#[test]
fn a_task_takes_traffic_only_while_healthy_and_is_replaced_when_unhealthy() {
    let cluster = one_node();
    let dir = CheckDir::new("health");
    let ok_file = dir.file("ok");
    let flags = health_flags(&ok_file);
    let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The start period keeps phase 1's failures from counting however slowly the test runs
    // (without it, 2 failures at 200 ms end the task before the file appears); once healthy,
    // failures count whatever the period says.
    extra.extend_from_slice(&[
        "-p",
        "8080:80",
        "--restart-delay",
        "1s",
        "--health-start-period",
        "10m",
    ]);
    create_whoami(&cluster, "hc", 80, &extra);
    let published = SocketAddr::new(cluster.nodes[0].address.into(), 8080);
    let outside = PathBuf::from(cluster.client_ns().path());

    // --- 1. the check fails (no file) within the start period: starting, and although the
    //        task listens, the published port refuses (no backend) for as long as it lasts
    let first = wait_for_task(&cluster, "hc", "starting", "starting");
    let table = ok(&cluster, 0, &["service", "ps", "hc"]);
    assert!(table.contains("(health: starting)"), "{table}");
    // Failures keep coming every 200 ms; a few intervals in, it is still not serving.
    for _ in 0..3 {
        let refused = tcp_connect(&outside, published);
        assert!(
            refused.is_err(),
            "a starting task got a connection: {refused:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // --- 2. the file appears: healthy, running, serving, counted
    fs::write(&ok_file, "").unwrap();
    let healthy = wait_for_task(&cluster, "hc", "running", "healthy");
    assert_eq!(healthy, first, "the same task, from starting to healthy");
    let table = ok(&cluster, 0, &["service", "ps", "hc"]);
    assert!(table.contains("(healthy)"), "{table}");
    let report = wait_until(Duration::from_secs(10), "an answer on :8080", || {
        http_from(&outside, published).map_err(|e| e.to_string())
    });
    assert_eq!(served_by(&report), healthy);
    let series = "shoal_task_health{service=\"hc\",state=\"healthy\"}";
    wait_until(Duration::from_secs(10), series, || {
        match metric(&cluster, 0, series) {
            1 => Ok(()),
            n => Err(n.to_string()),
        }
    });

    // --- 3. the file goes: unhealthy after 2 failures, stopped, failed, replaced
    fs::remove_file(&ok_file).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the unhealthy task failed",
        || match task_field(&cluster, "hc", &healthy, "state").as_str() {
            "failed" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    assert_eq!(
        task_field(&cluster, "hc", &healthy, "error"),
        "unhealthy container"
    );
    let replacement = wait_for_task(&cluster, "hc", "starting", "starting");
    assert_ne!(replacement, healthy);
    // It got no traffic while unhealthy, nor does its replacement while starting.
    assert!(tcp_connect(&outside, published).is_err());
}

#[test]
fn a_rolling_update_waits_for_the_new_task_to_be_healthy() {
    let cluster = one_node();
    let dir = CheckDir::new("health-update");
    let old_ok = dir.file("old");
    let new_ok = dir.file("new");
    fs::write(&old_ok, "").unwrap();
    let flags = health_flags(&old_ok);
    let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    extra.extend_from_slice(&["--update-order", "start-first"]);
    create_whoami(&cluster, "up", 80, &extra);
    let old = wait_for_task(&cluster, "up", "running", "healthy");

    // The new version checks another file; failures during its start period do not count,
    // so it stays starting (not replaced) until the file is there.
    let cmd = format!("test -f {}", new_ok.display());
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--health-cmd",
            &cmd,
            "--health-start-period",
            "5m",
            "up",
        ],
    );
    let new = wait_for_task(&cluster, "up", "starting", "starting");
    assert_ne!(new, old);
    // Several checks later: still starting, the old task still serves, the update goes on.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(task_field(&cluster, "up", &new, "state"), "starting");
    assert_eq!(task_field(&cluster, "up", &old, "state"), "running");
    let inspect = ok(&cluster, 0, &["service", "inspect", "up"]);
    let service: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(service[0]["UpdateStatus"]["State"], "updating", "{inspect}");
    assert_eq!(
        service[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", cmd])
    );

    // Healthy: the update completes and the old task is shut down.
    fs::write(&new_ok, "").unwrap();
    wait_until(Duration::from_secs(30), "the update to complete", || {
        let inspect = ok(&cluster, 0, &["service", "inspect", "up"]);
        let service: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        match service[0]["UpdateStatus"]["State"].as_str() {
            Some("completed") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(task_field(&cluster, "up", &new, "state"), "running");
    assert_eq!(task_field(&cluster, "up", &new, "health"), "healthy");
    // Withdrawn, drained and stopped (that takes the withdrawal's spread, ~2 s).
    wait_until(
        Duration::from_secs(20),
        "the old task shut down",
        || match task_field(&cluster, "up", &old, "state").as_str() {
            "shutdown" => Ok(()),
            other => Err(other.to_string()),
        },
    );
}

#[test]
fn an_update_whose_tasks_turn_unhealthy_rolls_back() {
    let cluster = one_node();
    let dir = CheckDir::new("health-rollback");
    let ok_file = dir.file("ok");
    fs::write(&ok_file, "").unwrap();
    let flags = health_flags(&ok_file);
    let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    extra.extend_from_slice(&[
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "10s",
    ]);
    create_whoami(&cluster, "rb", 80, &extra);
    let old = wait_for_task(&cluster, "rb", "running", "healthy");

    // The new version's check never passes: its task turns unhealthy (retries 2 at 200 ms),
    // fails, and the failure action applies: back to the previous spec.
    let never = format!("test -f {}", dir.file("never").display());
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--health-cmd",
            &never,
            "rb",
        ],
    );
    let inspect = || -> serde_json::Value {
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "rb"])).unwrap()
    };
    wait_until(Duration::from_secs(60), "the rollback to complete", || {
        let service = inspect();
        match service[0]["UpdateStatus"]["State"].as_str() {
            Some("rollback_completed") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let check = format!("test -f {}", ok_file.display());
    assert_eq!(
        inspect()[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", check])
    );
    let failed: Vec<String> = tasks(&cluster, "rb")
        .iter()
        .filter(|t| t["state"] == "failed")
        .map(|t| t["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        failed.iter().any(|e| e == "unhealthy container"),
        "{failed:?}"
    );
    let serving = wait_for_task(&cluster, "rb", "running", "healthy");
    // Stop-first: the old task made way for the new one; the rollback's task serves now.
    assert_ne!(serving, old);
}
