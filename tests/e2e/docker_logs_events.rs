//! `docker service logs` and `docker events` against a shoal swarm, with the real docker CLI
//! (28.x) on a manager's `docker.sock`: the lines of every task across both nodes, stdout and
//! stderr apart, `--tail`, `-t` timestamps, `--since`, a task's logs by its ID, `-f` picking up
//! new output; then the service events of a create, an update and a removal, in order, between
//! `--since` and `--until`, and a filter that matches nothing.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shoal_tests::{Cluster, wait_until};

use crate::support::{docker, docker_ok, docker_sock, running, stderr};

/// stdout and stderr of `docker ARGS`, which must succeed.
fn docker_split(cluster: &Cluster, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = docker(cluster, 0, args);
    assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
    let lines = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (lines(&out.stdout), lines(&out.stderr))
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Docker's `--since`/`--until` form for a unix time.
fn timestamp(at: Duration) -> String {
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

/// `2024-05-06T07:08:09.123456789Z` for a unix time (Docker's RFC3339NanoFixed, UTC).
fn rfc3339_nano(at: Duration) -> String {
    let secs = at.as_secs();
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        at.subsec_nanos()
    )
}

/// The message of a `docker service logs` line: what follows its `name.slot.id@node |`.
fn message(line: &str) -> &str {
    line.split_once(" | ").map_or("", |(_, m)| m)
}

#[test]
fn docker_service_logs_and_events() {
    // --- 1. two nodes, node1 manages; a ticking service for `-f`, created before `since`
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    docker_ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "ticker",
            "/bin/sh",
            "-c",
            "while true; do echo tick; sleep 0.5; done",
        ],
    );
    let since = unix_now();

    // --- 2. two replicas that each say hello on stdout and oops on stderr, one per node
    docker_ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "greeter",
            "--replicas",
            "2",
            "/bin/sh",
            "-c",
            "echo hello; echo oops >&2; sleep 1000",
        ],
    );
    let placed = running(&cluster, "greeter", 2);
    let (out, err) = wait_until(Duration::from_secs(20), "both tasks' output", || {
        let (out, err) = docker_split(&cluster, &["service", "logs", "greeter"]);
        if out.len() == 2 && err.len() == 2 {
            Ok((out, err))
        } else {
            Err(format!("stdout {out:?}, stderr {err:?}"))
        }
    });
    let written = unix_now();

    // --- 3. every task's lines, streams apart, prefixed with name.slot.id@node as swarm's
    assert!(out.iter().all(|l| message(l) == "hello"), "{out:?}");
    assert!(err.iter().all(|l| message(l) == "oops"), "{err:?}");
    let mut prefixes: Vec<String> = out
        .iter()
        .map(|l| l.split_once(' ').unwrap().0.to_string())
        .collect();
    prefixes.sort();
    assert!(prefixes[0].starts_with("greeter.1."), "{prefixes:?}");
    assert!(prefixes[1].starts_with("greeter.2."), "{prefixes:?}");
    let mut nodes: Vec<&str> = prefixes
        .iter()
        .map(|p| p.rsplit_once('@').unwrap().1)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2"], "one task per node, both read");

    // --- 4. --tail 1: each task's last line, which is its stderr's
    let (out, err) = docker_split(&cluster, &["service", "logs", "--tail", "1", "greeter"]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(err.len(), 2, "{err:?}");

    // --- 5. -t: an RFC 3339 timestamp first, between the creation and the logs' reading
    let (out, _) = docker_split(&cluster, &["service", "logs", "-t", "greeter"]);
    let (low, high) = (rfc3339_nano(since), rfc3339_nano(written));
    for line in &out {
        let stamp = line.split(' ').next().unwrap();
        assert_eq!(stamp.len(), low.len(), "{line}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
        assert!(
            low.as_str() <= stamp && stamp <= high.as_str(),
            "{stamp} not within {low}..{high}"
        );
        assert_eq!(message(line), "hello", "{line}");
    }

    // --- 6. --since: everything since a minute ago, nothing since after it was written
    let (out, err) = docker_split(&cluster, &["service", "logs", "--since", "1m", "greeter"]);
    assert_eq!((out.len(), err.len()), (2, 2), "{out:?} {err:?}");
    let after = timestamp(written + Duration::from_millis(500));
    let (out, err) = docker_split(&cluster, &["service", "logs", "--since", &after, "greeter"]);
    assert!(out.is_empty() && err.is_empty(), "{out:?} {err:?}");

    // --- 7. one task's logs by its ID
    let task = &placed[0].id;
    let (out, err) = docker_split(&cluster, &["service", "logs", task]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].contains(&task[..12]) || out[0].contains(task.as_str()),
        "{out:?}"
    );
    assert_eq!(err.len(), 1, "{err:?}");

    // --- 8. -f --tail 0: a line written after the call shows up
    let mut follow = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", docker_sock(&cluster, 0).display()))
        .args(["service", "logs", "-f", "--tail", "0", "ticker"])
        .env("DOCKER_CONFIG", cluster.work_dir().join("docker-config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(15));
    follow.kill().unwrap();
    follow.wait().unwrap();
    let line = line.expect("docker service logs -f showed no new line within 15 s");
    assert_eq!(message(&line), "tick", "{line}");

    // --- 9. events: update (a scale restarts nothing: one update), remove; then the window
    docker_ok(&cluster, 0, &["service", "scale", "-d", "greeter=1"]);
    docker_ok(&cluster, 0, &["service", "rm", "greeter"]);
    let until = unix_now() + Duration::from_millis(200);
    std::thread::sleep(Duration::from_millis(300));
    let (since, until) = (timestamp(since), timestamp(until));
    let window = ["--since", since.as_str(), "--until", until.as_str()];
    let format = [
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ];
    let args: Vec<&str> = ["events"]
        .into_iter()
        .chain(window)
        .chain(["--filter", "type=service"])
        .chain(format)
        .collect();
    let seen = docker_ok(&cluster, 0, &args);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            "service create greeter",
            "service update greeter",
            "service remove greeter"
        ],
        "events between {since} and {until}"
    );
    let json_args: Vec<&str> = ["events"]
        .into_iter()
        .chain(window)
        .chain(["--filter", "event=update", "--format", "{{json .}}"])
        .collect();
    let update: serde_json::Value =
        serde_json::from_str(&docker_ok(&cluster, 0, &json_args)).unwrap();
    assert_eq!(update["scope"], "swarm");
    assert_eq!(
        update["Actor"]["Attributes"]["replicas.new"], "1",
        "{update}"
    );
    let none: Vec<&str> = ["events"]
        .into_iter()
        .chain(window)
        .chain([
            "--filter",
            "type=service",
            "--filter",
            "service=nosuchservice",
        ])
        .collect();
    assert_eq!(docker_ok(&cluster, 0, &none), "");
}
