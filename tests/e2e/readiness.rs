//! Readiness and stop order, with no health check: a task joins its service (DNS
//! `tasks.<svc>`, the VIP and published-port maps) only once it listens on its service's ports
//! and is reported Running only then; a stopping task leaves its service first, gets its stop
//! signal once its clients' connections have closed (or its grace period has run out), and
//! SIGKILL a grace period after the signal. And the measure of it all: a start-first rolling
//! update under a stream of requests.

use std::{
    fs,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shoal_tests::{
    Cluster,
    agent::shoal_bin,
    task_net::{http_from, http_get, in_netns, task_netns, tcp_connect},
    wait_until,
};

use crate::support::{Placed, ok, running, served_by};

/// A one-node swarm with overlay network `rnet` and a `client` task on it (for `dig`).
fn one_node() -> (Cluster, Placed) {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.10.41.0/24",
            "rnet",
        ],
    );
    let bin = shoal_bin().display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "client",
            "--network",
            "rnet",
            "--",
            &bin,
            "whoami",
            "--port",
            "81",
        ],
    );
    let client = running(&cluster, "client", 1).remove(0);
    (cluster, client)
}

/// The addresses the embedded DNS gives `client` for `name` (empty: none).
fn dig(cluster: &Cluster, client: &Placed, name: &str) -> Vec<String> {
    let out = ok(
        cluster,
        0,
        &[
            "exec",
            &client.id,
            "--",
            "dig",
            "@127.0.0.11",
            "+tries=1",
            "+timeout=5",
            "+short",
            name,
        ],
    );
    out.lines().map(str::to_string).collect()
}

/// Does anything in the namespace at `netns` listen on TCP `port`?
fn listens(netns: &Path, port: u16) -> bool {
    let tcp = in_netns(netns, || {
        fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default()
    });
    let wanted = format!(":{port:04X}");
    tcp.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
    })
}

/// The service's one task in the state `state`, with its address on `rnet`.
fn task_in_state(cluster: &Cluster, service: &str, state: &str) -> Placed {
    wait_until(
        Duration::from_secs(20),
        &format!("a {state} task of {service}"),
        || {
            let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
            let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
            tasks
                .iter()
                .find(|t| t["state"] == state && t["desired_state"] == "running")
                .map(|t| Placed {
                    node: 0,
                    id: t["id"].as_str().unwrap().to_string(),
                    ip: t["networks"][0]["addr"]
                        .as_str()
                        .and_then(|a| a.split('/').next())
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                })
                .ok_or_else(|| format!("{tasks:?}"))
        },
    )
}

fn task_state(cluster: &Cluster, service: &str, id: &str) -> String {
    let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    tasks
        .iter()
        .find(|t| t["id"] == id)
        .map_or_else(String::new, |t| {
            t["state"].as_str().unwrap_or("").to_string()
        })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A `sh -c` script that runs whoami on port 80 and, on SIGTERM, appends the time (ns since
/// the epoch) to `mark`; `then` is what the shell does after that.
fn trapping_whoami(mark: &Path, then: &str) -> String {
    let bin = shoal_bin().display().to_string();
    format!(
        "trap 'date +%s%N >> {mark}; {then}' TERM; {bin} whoami --port 80 & \
         while true; do sleep 0.1; done",
        mark = mark.display()
    )
}

/// The first time written to `mark`, once it is there.
fn signalled_at(mark: &Path) -> u128 {
    wait_until(Duration::from_secs(20), "the stop signal's mark", || {
        fs::read_to_string(mark)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .ok_or_else(|| format!("{} not written", mark.display()))
    })
}

#[test]
fn a_task_joins_its_service_only_once_it_listens() {
    let (cluster, client) = one_node();
    let bin = shoal_bin().display().to_string();

    // --- 1. a published service whose program binds its port 3 s after it starts
    let script = format!("sleep 3; exec {bin} whoami --port 80");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "slow",
            "--network",
            "rnet",
            "-p",
            "8080:80",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let slow = task_in_state(&cluster, "slow", "starting");
    let netns = task_netns(&cluster.nodes[0].state_dir(), &slow.id);
    let published = SocketAddr::new(cluster.nodes[0].address.into(), 8080);
    let outside = PathBuf::from(cluster.client_ns().path());

    // --- 2. until it listens: absent from tasks.slow, reported starting, and the published
    //        port refuses at once (no backend) instead of sending clients to it
    let mut observed = 0;
    loop {
        let before = listens(&netns, 80);
        let answers = dig(&cluster, &client, "tasks.slow");
        let state = task_state(&cluster, "slow", &slow.id);
        let attempt = tcp_connect(&outside, published);
        if before || listens(&netns, 80) {
            break;
        }
        observed += 1;
        assert!(
            !answers.contains(&slow.ip.to_string()),
            "tasks.slow answers {answers:?} before {} listens",
            slow.ip
        );
        assert_eq!(state, "starting", "reported before it listens");
        match attempt {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => panic!("port 8080 before the task listens: {other:?}, not a refusal"),
        }
    }
    assert!(
        observed > 0,
        "the task listened before it could be observed"
    );

    // --- 3. once it listens: in DNS, served on the published port, reported running
    wait_until(Duration::from_secs(10), "tasks.slow to answer", || {
        let answers = dig(&cluster, &client, "tasks.slow");
        if answers == [slow.ip.to_string()] {
            Ok(())
        } else {
            Err(format!("{answers:?}"))
        }
    });
    wait_until(Duration::from_secs(10), "8080 to be served", || {
        let report = http_from(&outside, published).map_err(|e| e.to_string())?;
        if served_by(&report) == slow.id {
            Ok(())
        } else {
            Err(report)
        }
    });
    assert_eq!(running(&cluster, "slow", 1)[0].id, slow.id);
}

#[test]
fn a_stopping_task_leaves_dns_first_and_is_signalled_when_its_connections_close() {
    let (cluster, client) = one_node();
    let mark = cluster.work_dir().join("drain-term");

    // --- 1. a dnsrr service (clients connect to the task itself), 60 s grace period
    let script = trapping_whoami(&mark, "exit 0");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "drain",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "rnet",
            "--stop-grace-period",
            "60s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let task = running(&cluster, "drain", 1).remove(0);
    wait_until(Duration::from_secs(10), "tasks.drain to answer", || {
        let answers = dig(&cluster, &client, "tasks.drain");
        if answers == [task.ip.to_string()] {
            Ok(())
        } else {
            Err(format!("{answers:?}"))
        }
    });

    // --- 2. a client holds a connection to it
    let client_ns = client.netns(&cluster);
    let mut held = wait_until(Duration::from_secs(10), "a connection to the task", || {
        let mut stream = tcp_connect(&client_ns, task.addr(80)).map_err(|e| e.to_string())?;
        let report = http_get(&mut stream, "/").map_err(|e| e.to_string())?;
        if served_by(&report) == task.id {
            Ok(stream)
        } else {
            Err(report)
        }
    });

    // --- 3. scaled to 0: its address leaves DNS before it gets any signal
    ok(&cluster, 0, &["service", "scale", "--detach", "drain=0"]);
    wait_until(Duration::from_secs(10), "tasks.drain to drop it", || {
        let answers = dig(&cluster, &client, "tasks.drain");
        if answers.contains(&task.ip.to_string()) {
            Err(format!("{answers:?}"))
        } else {
            Ok(())
        }
    });
    let gone_at = now_ns();
    assert!(!mark.exists(), "signalled before its address left DNS");

    // --- 4. while the connection is open (well past the withdrawal's spread), it is served
    //        and no signal comes: a fixed number of requests, the time they take does not
    //        matter
    for _ in 0..20 {
        assert_eq!(
            served_by(&http_get(&mut held, "/").unwrap()),
            task.id,
            "the held connection while draining"
        );
        assert!(!mark.exists(), "signalled while a connection is open");
        std::thread::sleep(Duration::from_millis(150));
    }

    // --- 5. the connection closes: the signal follows (long before the 60 s grace period)
    drop(held);
    let signalled = signalled_at(&mark);
    assert!(
        gone_at <= signalled,
        "signalled at {signalled}, its address left DNS by {gone_at}"
    );
    wait_until(
        Duration::from_secs(20),
        "the task to be shut down",
        || match task_state(&cluster, "drain", &task.id).as_str() {
            "shutdown" => Ok(()),
            other => Err(other.to_string()),
        },
    );
}

#[test]
fn the_grace_period_bounds_the_drain_and_sigkill_follows_the_signal() {
    let (cluster, client) = one_node();
    let mark = cluster.work_dir().join("stubborn-term");

    // --- 1. a task that ignores SIGTERM (the trap only writes the mark), grace 5 s
    let script = trapping_whoami(&mark, "true");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "stubborn",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "rnet",
            "--stop-grace-period",
            "5s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let task = running(&cluster, "stubborn", 1).remove(0);
    let netns = task.netns(&cluster);
    let client_ns = client.netns(&cluster);
    let held = wait_until(Duration::from_secs(10), "a connection to the task", || {
        tcp_connect(&client_ns, task.addr(80)).map_err(|e| e.to_string())
    });

    // --- 2. stopped with a connection that never closes: the drain ends at the grace
    //        period, the signal comes, the shell ignores it, and SIGKILL ends it
    ok(&cluster, 0, &["service", "scale", "--detach", "stubborn=0"]);
    signalled_at(&mark);
    // The shell outlives its SIGTERM (the grace period is 5 s): only SIGKILL ends it.
    assert!(netns.exists(), "the task ended at its SIGTERM");
    assert_eq!(task_state(&cluster, "stubborn", &task.id), "running");
    wait_until(
        Duration::from_secs(20),
        "the task to be shut down",
        || match task_state(&cluster, "stubborn", &task.id).as_str() {
            "shutdown" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    assert!(!netns.exists(), "its network namespace outlived it");
    drop(held);
}

/// `GET /` over a new connection from inside `netns`, with 10 s timeouts.
fn patient_request(netns: &Path, to: SocketAddr) -> std::io::Result<String> {
    let patience = Some(Duration::from_secs(10));
    let mut stream = in_netns(netns, || {
        let stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        stream.set_read_timeout(patience)?;
        stream.set_write_timeout(patience)?;
        Ok::<_, std::io::Error>(stream)
    })?;
    http_get(&mut stream, "/")
}

#[test]
fn a_start_first_rolling_update_sends_no_request_to_a_task_not_serving() {
    // --- 1. 3 nodes, `-p 8080:80` with 3 replicas of whoami, rolled start-first
    let mut cluster = Cluster::build(3);
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.form_swarm(1);
    let bin = shoal_bin().display().to_string();
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
            "3",
            "-p",
            "8080:80",
            "--update-order",
            "start-first",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    );
    let before = running(&cluster, "web", 3);
    let outside = PathBuf::from(cluster.client_ns().path());
    let nodes: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::new(cluster.nodes[i].address.into(), 8080))
        .collect();
    wait_until(Duration::from_secs(10), "8080 served on every node", || {
        for to in &nodes {
            http_from(&outside, *to).map_err(|e| format!("{to}: {e}"))?;
        }
        Ok(())
    });

    // --- 2. a client sends requests, one after the other, to every node in turn while the
    //        update replaces each task (the CLI waits until it has converged); a request
    //        counts as lost when it is refused, reset or never answered, not when it is slow
    //        (a busy test machine may delay an answer past the usual 2 s)
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, failures) = std::thread::scope(|s| {
        let hammer = s.spawn(|| {
            let (mut sent, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let to = nodes[sent % nodes.len()];
                if let Err(e) = patient_request(&outside, to) {
                    failures.push(format!("{to}: {e}"));
                }
                sent += 1;
            }
            (sent, failures)
        });
        ok(&cluster, 0, &["service", "update", "--force", "web"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.join().unwrap()
    });
    let after = running(&cluster, "web", 3);
    assert!(
        after.iter().all(|t| before.iter().all(|b| b.id != t.id)),
        "not every task was replaced: {before:?} -> {after:?}"
    );
    println!(
        "start-first rolling update: {} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    // No request went to a task that was not listening yet or had stopped (refused, or never
    // answered). What may remain: a request in flight through the routing mesh at the very
    // moment its task was withdrawn, reset by the load balancer, which resets a removed
    // backend's flows (it has no draining state yet); seen once in ~10,000 on a loaded
    // machine, never when idle.
    let not_resets: Vec<&String> = failures
        .iter()
        .filter(|f| !f.contains("reset by peer"))
        .collect();
    assert!(
        not_resets.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
}
