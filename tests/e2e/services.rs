//! Services and tasks on a 3-node swarm, with `shoal whoami` as the task command: scaling and
//! spread, global services, constraints, drain, node death, rolling updates and rollback,
//! and bad input.

use std::{collections::BTreeMap, time::Duration};

use shoal_tests::{Cluster, Cut, agent::shoal_bin, wait_until};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Runs the CLI on node `i`, asserting success, and returns stdout.
fn ok(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = cluster.nodes[i].cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        stderr(&out),
        cluster.nodes[i].log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `service ps --format json`.
fn tasks(cluster: &Cluster, service: &str) -> Vec<serde_json::Value> {
    let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
    serde_json::from_str(&out).unwrap()
}

/// Running tasks per node hostname.
fn running_per_node(cluster: &Cluster, service: &str) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for t in tasks(cluster, service) {
        if t["state"] == "running" && t["desired_state"] == "running" {
            *per_node
                .entry(t["node_hostname"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    per_node
}

fn whoami() -> String {
    shoal_bin().display().to_string()
}

fn create(cluster: &Cluster, extra: &[&str]) -> String {
    let bin = whoami();
    let mut args = vec!["service", "create"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &bin, "whoami", "--port", "8080"]);
    ok(cluster, 0, &args)
}

#[test]
fn replicas_scale_up_spread_and_scale_down() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);

    // --- 1. one replica; without -d the CLI follows it to convergence
    let out = create(&cluster, &["--name", "web", "--replicas", "1"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    assert_eq!(running_per_node(&cluster, "web").values().sum::<usize>(), 1);

    // --- 2. scale to 5: spread 2/2/1
    let out = ok(&cluster, 0, &["service", "scale", "web=5"]);
    assert!(
        out.contains("web scaled to 5") && out.contains("overall progress: 5 out of 5"),
        "{out}"
    );
    let mut counts: Vec<usize> = running_per_node(&cluster, "web").into_values().collect();
    counts.sort();
    assert_eq!(counts, vec![1, 2, 2], "spread");

    // --- 3. service ls shows REPLICAS 5/5
    let ls = ok(&cluster, 0, &["service", "ls"]);
    let row = ls.lines().find(|l| l.contains(" web ")).unwrap();
    assert!(row.contains("replicated") && row.contains("5/5"), "{ls}");

    // --- 4. back to 1
    ok(&cluster, 0, &["service", "scale", "web=1"]);
    wait_until(Duration::from_secs(10), "one running task", || {
        let n: usize = running_per_node(&cluster, "web").values().sum();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    });

    // --- 5. a task's hostname is its ID, and it runs in namespaces of its own
    let ps = tasks(&cluster, "web");
    let task = ps.iter().find(|t| t["state"] == "running").unwrap();
    assert_eq!(task["id"].as_str().unwrap().len(), 25);
}

#[test]
fn global_service_follows_nodes_and_constraints_are_obeyed() {
    let cluster = Cluster::start(3);
    // node3 stays out for now
    let init = ok(&cluster, 0, &["swarm", "init"]);
    assert!(init.contains("Swarm initialized"));
    let token = cluster.join_token(0, "worker");
    let manager = format!("{}:2377", cluster.nodes[0].address);
    ok(&cluster, 1, &["swarm", "join", "--token", &token, &manager]);

    // --- 1. global: one task on each of the 2 nodes
    create(&cluster, &["--name", "agent", "--mode", "global"]);
    assert_eq!(running_per_node(&cluster, "agent").len(), 2);

    // --- 2. node3 joins: it gets one too
    ok(&cluster, 2, &["swarm", "join", "--token", &token, &manager]);
    wait_until(Duration::from_secs(15), "a global task on node3", || {
        let per_node = running_per_node(&cluster, "agent");
        if per_node.len() == 3 && per_node.values().all(|n| *n == 1) {
            Ok(())
        } else {
            Err(format!("{per_node:?}"))
        }
    });

    // --- 3. a constraint: only the manager
    create(
        &cluster,
        &[
            "--name",
            "mgr",
            "--replicas",
            "3",
            "--constraint",
            "node.role==manager",
        ],
    );
    assert_eq!(
        running_per_node(&cluster, "mgr"),
        BTreeMap::from([("node1".to_string(), 3)])
    );

    // --- 4. a constraint nothing satisfies: the CLI says why and exits non-zero
    let bin = whoami();
    let out = cluster.nodes[0].cli(&[
        "service",
        "create",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.zone==mars",
        "--",
        &bin,
        "whoami",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no suitable node"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn drain_moves_tasks_and_a_dead_node_has_its_tasks_rescheduled() {
    let mut cluster = Cluster::start(3);
    cluster.form_swarm(1);
    create(&cluster, &["--name", "web", "--replicas", "3"]);
    assert_eq!(running_per_node(&cluster, "web").len(), 3, "one per node");

    // --- 1. drain node2: its task moves; active again: nothing moves back
    ok(
        &cluster,
        0,
        &["node", "update", "--availability", "drain", "node2"],
    );
    wait_until(Duration::from_secs(10), "node2 empty, 3 running", || {
        let per_node = running_per_node(&cluster, "web");
        let total: usize = per_node.values().sum();
        if !per_node.contains_key("node2") && total == 3 {
            Ok(())
        } else {
            Err(format!("{per_node:?}"))
        }
    });
    // `service ps` shows each slot's running replacement first, the drained task under it
    // as a `\_` history row (the order must not depend on the random node IDs).
    let ps = ok(&cluster, 0, &["service", "ps", "web"]);
    let rows: Vec<(bool, &str, &str)> = ps
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let node = words
                .iter()
                .position(|w| matches!(*w, "node1" | "node2" | "node3"));
            let node = node.unwrap_or_else(|| panic!("no node in {line:?}:\n{ps}"));
            (line.contains("\\_"), words[node], words[node + 1])
        })
        .collect();
    let heads: Vec<_> = rows.iter().filter(|(history, ..)| !history).collect();
    assert_eq!(heads.len(), 3, "one row per slot:\n{ps}");
    assert!(
        heads
            .iter()
            .all(|(_, node, desired)| *node != "node2" && *desired == "Running"),
        "a slot's first row is its running task, not on node2:\n{ps}"
    );
    assert_eq!(
        rows.iter()
            .filter(|(history, node, desired)| *history
                && *node == "node2"
                && *desired == "Shutdown")
            .count(),
        1,
        "the drained task is a history row:\n{ps}"
    );
    assert!(
        !rows[0].0,
        "the table starts with a slot, not a history row:\n{ps}"
    );

    ok(
        &cluster,
        0,
        &["node", "update", "--availability", "active", "node2"],
    );
    let nodes = cluster.node_ls(0).unwrap();
    let n2 = nodes.iter().find(|n| n["hostname"] == "node2").unwrap();
    assert_eq!(n2["availability"], "active");

    // --- 2. kill node3's agent and cut its link: its task is rescheduled within 10 s
    let before = running_per_node(&cluster, "web");
    assert!(before.contains_key("node3"), "{before:?}");
    cluster.nodes[2].kill();
    cluster.cut(2, Cut::LinkDown);
    wait_until(Duration::from_secs(10), "node3's task rescheduled", || {
        let per_node = running_per_node(&cluster, "web");
        let elsewhere: usize = per_node
            .iter()
            .filter(|(n, _)| *n != "node3")
            .map(|(_, c)| c)
            .sum();
        if elsewhere == 3 {
            Ok(())
        } else {
            Err(format!("{per_node:?}"))
        }
    });
}

#[test]
fn rolling_update_paces_batches_and_a_failing_update_rolls_back() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    create(&cluster, &["--name", "web", "--replicas", "3"]);

    // --- 1. parallelism 1, delay 1 s: new tasks start at least ~1 s apart
    let out = ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--update-parallelism",
            "1",
            "--update-delay",
            "1s",
            "--args",
            "whoami --port 8081",
            "web",
        ],
    );
    assert!(out.contains("verify: Service converged"), "{out}");
    let ps = tasks(&cluster, "web");
    let mut starts: Vec<u64> = ps
        .iter()
        .filter(|t| t["desired_state"] == "running" && t["service_version"] == 2)
        .map(|t| t["created_at_ms"].as_u64().unwrap())
        .collect();
    starts.sort();
    assert_eq!(starts.len(), 3, "{ps:?}");
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1000,
            "batches {}ms apart: {starts:?}",
            pair[1] - pair[0]
        );
    }
    // the old tasks are history rows
    let table = ok(&cluster, 0, &["service", "ps", "web"]);
    assert!(table.contains("\\_ web."), "{table}");

    // --- 2. a command that fails, with failure action rollback
    let out = cluster.nodes[0].cli(&[
        "service",
        "update",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "--args",
        "whoami --port notaport",
        "web",
    ]);
    assert!(!out.status.success(), "a failing update succeeded");
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    let inspect = ok(&cluster, 0, &["service", "inspect", "web"]);
    assert!(
        inspect.contains("8081") && !inspect.contains("notaport"),
        "{inspect}"
    );
}

#[test]
fn bad_service_input_is_refused_and_creates_nothing() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let bin = whoami();
    let huge_env = format!("BIG={}", "x".repeat(20_000));
    let many_env: Vec<String> = (0..257)
        .flat_map(|i| ["-e".to_string(), format!("V{i}=x")])
        .chain(["-d".to_string()])
        .collect();
    for (args, code, needle) in [
        (vec!["--replicas", "-1"], 2, "-1"),
        (
            vec!["--mode", "global", "--replicas", "3"],
            1,
            "replicas can only be used with replicated mode",
        ),
        (vec!["--update-delay", "5x"], 2, "invalid duration"),
        (vec!["--constraint", "node.foo==x"], 1, "invalid constraint"),
        (vec!["--name", "bad name"], 1, "invalid service name"),
        (
            vec!["--mount", "type=nfs,src=a,dst=/b"],
            2,
            "type \"nfs\" is not valid",
        ),
        // Docker takes any count; one that the cluster cannot hold is refused in one line,
        // and the leader stays up.
        (
            vec!["--replicas", "1000000000000", "-d"],
            1,
            "at most 2000 replicas",
        ),
        (
            vec!["-e", &huge_env, "-d"],
            1,
            "the service's spec is too large",
        ),
        (
            many_env.iter().map(String::as_str).collect(),
            1,
            "too many environment variables",
        ),
    ] {
        let mut full = vec!["service", "create"];
        full.extend_from_slice(&args);
        full.extend_from_slice(&["--", &bin, "whoami"]);
        let out = cluster.nodes[0].cli(&full);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let ls = ok(&cluster, 0, &["service", "ls", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&ls)
            .unwrap()
            .len(),
        0,
        "{ls}"
    );

    // The largest legal spec goes through: 256 variables, 32 constraints, a long command.
    let mut args: Vec<String> = vec![
        "service".into(),
        "create".into(),
        "--name".into(),
        "big".into(),
    ];
    for i in 0..256 {
        args.extend([
            "-e".into(),
            format!("VARIABLE_{i:03}=value-{i:03}-of-the-largest-spec"),
        ]);
    }
    for i in 0..32 {
        args.extend(["--constraint".into(), format!("node.labels.absent{i}!=x")]);
    }
    args.extend([
        "--".into(),
        bin.clone(),
        "whoami".into(),
        "--port".into(),
        "8080".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(&cluster, 0, &args);
    assert!(out.contains("verify: Service converged"), "{out}");
    let inspect = ok(&cluster, 0, &["service", "inspect", "big"]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let env = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"];
    assert_eq!(env.as_array().map(Vec::len), Some(256), "{inspect}");
}

#[test]
fn logs_from_every_node_exec_into_tasks_and_tasks_survive_an_agent_restart() {
    let mut cluster = Cluster::start(3);
    cluster.form_swarm(1);
    // A marker no other test uses, so the process count below is this test's alone.
    let marker = format!("sleep 60{}", std::process::id() % 10);
    let script = format!("echo hello from $SHOAL_TASK_NAME; echo oops >&2; exec {marker}");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--name",
            "echoer",
            "--replicas",
            "3",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(
        running_per_node(&cluster, "echoer").len(),
        3,
        "one task per node"
    );

    // --- 1. logs: every task's lines, from every node, with Docker's prefix
    let ps = tasks(&cluster, "echoer");
    let logs = wait_until(Duration::from_secs(5), "three tasks' output", || {
        let logs = ok(&cluster, 0, &["service", "logs", "echoer"]);
        let hellos = logs
            .lines()
            .filter(|l| l.contains("| hello from echoer."))
            .count();
        if hellos == 3 { Ok(logs) } else { Err(logs) }
    });
    for task in ps.iter().filter(|t| t["desired_state"] == "running") {
        let prefix = format!(
            "{}@{}",
            task["name"].as_str().unwrap(),
            task["node_hostname"].as_str().unwrap()
        );
        let line = format!("{prefix} | hello from {}", task["name"].as_str().unwrap());
        assert!(
            logs.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&line[prefix.len()..])),
            "{line} in:\n{logs}"
        );
        // All prefixes have the same width here, so no padding sits between prefix and bar.
        assert!(
            logs.contains(&format!("{prefix} | oops")),
            "stderr of {prefix} in:\n{logs}"
        );
    }

    // --- 2. exec: hostname is the task ID, on another node; the exit code comes back
    let remote = ps
        .iter()
        .find(|t| t["desired_state"] == "running" && t["node_hostname"] != "node1")
        .unwrap();
    let slot = format!("echoer.{}", remote["slot"]);
    let out = ok(&cluster, 0, &["exec", &slot, "--", "hostname"]);
    assert_eq!(
        out.trim(),
        remote["id"].as_str().unwrap(),
        "hostname of {slot}"
    );
    let out = cluster.nodes[0].cli(&["exec", &slot, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = cluster.nodes[0].cli(&["exec", "nosuchtask", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("task nosuchtask not found"),
        "{}",
        stderr(&out)
    );

    // --- 3. SIGKILL node2's agent and restart it: its task is re-adopted, not duplicated
    let before: Vec<String> = running_ids(&cluster);
    cluster.nodes[1].kill();
    cluster.nodes[1].start();
    wait_until(Duration::from_secs(10), "the same 3 tasks running", || {
        let now = running_ids(&cluster);
        if now == before {
            Ok(())
        } else {
            Err(format!("{now:?} vs {before:?}"))
        }
    });
    let count = std::process::Command::new("pgrep")
        .args(["-fc", &marker])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "3",
        "task processes after restart"
    );
}

fn running_ids(cluster: &Cluster) -> Vec<String> {
    let mut ids: Vec<String> = tasks(cluster, "echoer")
        .iter()
        .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
