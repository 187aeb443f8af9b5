//! The service and network fields a compose stack needs, end to end: network-scoped aliases
//! answered by the embedded DNS on their network only; labels on services and networks, shown
//! by `inspect` and selected by `ls --filter`; the task's working directory, user and hostname
//! as the task sees them (also through `shoal exec`); the stop signal delivered before the
//! grace period's SIGKILL; and `--replicas-max-per-node` leaving the extra replica pending with
//! Docker's message.

use std::{fs, time::Duration};

use shoal_tests::{Cluster, agent::shoal_bin, wait_until};

use crate::support::{Placed, network_id, ok, running, stderr};

/// Runs the CLI on node `i` and asserts it fails with `code` and one stderr line holding
/// `needle`.
fn refused(cluster: &Cluster, i: usize, args: &[&str], code: i32, needle: &str) {
    let out = cluster.nodes[i].cli(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
}

fn whoami_service(cluster: &Cluster, name: &str, extra: &[&str]) {
    let bin = shoal_bin().display().to_string();
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", &bin, "whoami", "--port", "8080"]);
    ok(cluster, 0, &argv);
}

fn sleeper(cluster: &Cluster, name: &str, extra: &[&str]) {
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", "sleep", "1d"]);
    ok(cluster, 0, &argv);
}

fn inspect(cluster: &Cluster, what: &str, name: &str) -> serde_json::Value {
    let out = ok(cluster, 0, &[what, "inspect", name]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all[0].clone()
}

/// `dig +short NAME` from inside `task`, the answer's lines sorted.
fn dig_short(cluster: &Cluster, task: &Placed, name: &str) -> Vec<String> {
    let out = ok(
        cluster,
        0,
        &[
            "exec",
            &task.id,
            "--",
            "dig",
            "@127.0.0.11",
            "+tries=1",
            "+timeout=5",
            "+short",
            name,
        ],
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The status of `dig NAME` from inside `task` (NOERROR, NXDOMAIN, ...).
fn dig_status(cluster: &Cluster, task: &Placed, name: &str) -> String {
    let out = ok(
        cluster,
        0,
        &[
            "exec",
            &task.id,
            "--",
            "dig",
            "@127.0.0.11",
            "+tries=1",
            "+timeout=5",
            name,
        ],
    );
    out.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's answer:\n{out}"))
        .to_string()
}

fn sorted_ips(tasks: &[Placed]) -> Vec<String> {
    let mut ips: Vec<String> = tasks.iter().map(|t| t.ip.to_string()).collect();
    ips.sort();
    ips
}

/// The service's VIP on `network`, without its prefix length.
fn vip_on(cluster: &Cluster, service: &str, network: &str) -> String {
    let id = network_id(cluster, network);
    let svc = inspect(cluster, "service", service);
    svc["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["NetworkID"] == id.as_str())
        .and_then(|v| v["Addr"].as_str())
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no VIP of {service} on {network}: {svc}"))
        .to_string()
}

#[test]
fn network_aliases_resolve_like_the_service_on_their_network_only() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);

    // --- 1. a stack's network and another one; services named as a stack names them, with
    //        their short compose names as aliases on the stack's network
    ok(&cluster, 0, &["network", "create", "web_default"]);
    ok(&cluster, 0, &["network", "create", "elsewhere"]);
    whoami_service(
        &cluster,
        "web_api",
        &[
            "--replicas",
            "2",
            "--network",
            "name=web_default,alias=api,alias=backend",
        ],
    );
    whoami_service(
        &cluster,
        "web_db",
        &[
            "--replicas",
            "2",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "name=web_default,alias=db",
        ],
    );
    sleeper(&cluster, "web_client", &["--network", "web_default"]);
    sleeper(&cluster, "outsider", &["--network", "elsewhere"]);
    let api = running(&cluster, "web_api", 2);
    let db = running(&cluster, "web_db", 2);
    let client = running(&cluster, "web_client", 1).remove(0);
    let outsider = running(&cluster, "outsider", 1).remove(0);
    let vip = vip_on(&cluster, "web_api", "web_default");

    // --- 2. inspect shows the aliases on their network
    let svc = inspect(&cluster, "service", "web_api");
    let networks = &svc["Spec"]["TaskTemplate"]["Networks"];
    assert_eq!(
        networks[0]["Aliases"],
        serde_json::json!(["api", "backend"]),
        "{svc}"
    );
    assert_eq!(
        networks[0]["Target"],
        network_id(&cluster, "web_default").as_str()
    );

    // --- 3. from another service's task on the network: the alias is the service's VIP,
    //        tasks.<alias> its tasks, a dnsrr alias the task IPs; glibc agrees
    wait_until(Duration::from_secs(10), "the aliases to resolve", || {
        let got = (
            dig_short(&cluster, &client, "api"),
            dig_short(&cluster, &client, "backend"),
            dig_short(&cluster, &client, "tasks.api"),
            dig_short(&cluster, &client, "db"),
            dig_short(&cluster, &client, "tasks.db"),
        );
        let want = (
            vec![vip.clone()],
            vec![vip.clone()],
            sorted_ips(&api),
            sorted_ips(&db),
            sorted_ips(&db),
        );
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}, want {want:?}"))
        }
    });
    let hosts = ok(
        &cluster,
        0,
        &["exec", &client.id, "--", "getent", "hosts", "api"],
    );
    assert!(hosts.starts_with(&vip), "getent hosts api: {hosts}");
    // The alias carries traffic: the VIP balances it to web_api's tasks.
    let answer = ok(
        &cluster,
        0,
        &[
            "exec",
            &client.id,
            "--",
            "curl",
            "-sf",
            "--max-time",
            "5",
            "http://api:8080/",
        ],
    );
    let served = answer
        .lines()
        .find_map(|l| l.strip_prefix("Hostname: "))
        .unwrap_or_else(|| panic!("no Hostname in {answer:?}"));
    assert!(
        api.iter().any(|t| t.id == served),
        "{served} is not a task of web_api"
    );

    // --- 4. from a task on another network: not resolved (the names are still shoal's)
    for name in ["api", "tasks.api", "db"] {
        assert_eq!(dig_status(&cluster, &outsider, name), "NXDOMAIN", "{name}");
    }

    // --- 5. update: the network again with another alias; the old one goes
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--network-rm",
            "web_default",
            "--network-add",
            "name=web_default,alias=api-v2",
            "web_api",
        ],
    );
    wait_until(Duration::from_secs(30), "api-v2 in, api out", || {
        let new = dig_short(&cluster, &client, "api-v2");
        let old = dig_status(&cluster, &client, "api");
        if new.len() == 1 && old == "NXDOMAIN" {
            Ok(())
        } else {
            Err(format!("api-v2: {new:?}, api: {old}"))
        }
    });
}

#[test]
fn labels_round_trip_and_select_services_and_networks() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let stack = "com.docker.stack.namespace";

    // --- 1. networks: labels in inspect, ls --filter label=
    ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "--label",
            &format!("{stack}=web"),
            "--label",
            "tier=front",
            "web_default",
        ],
    );
    ok(&cluster, 0, &["network", "create", "plain"]);
    let net = inspect(&cluster, "network", "web_default");
    assert_eq!(
        net["Labels"],
        serde_json::json!({ stack: "web", "tier": "front" }),
        "{net}"
    );
    assert_eq!(
        inspect(&cluster, "network", "plain")["Labels"],
        serde_json::json!({})
    );
    let short = |id: String| id[..12].to_string();
    let web_net = short(network_id(&cluster, "web_default"));
    let listed = |args: &[&str]| -> Vec<String> {
        let mut argv = args.to_vec();
        argv.push("-q");
        ok(&cluster, 0, &argv).lines().map(str::to_string).collect()
    };
    assert_eq!(
        listed(&["network", "ls", "--filter", &format!("label={stack}=web")]),
        [web_net.as_str()]
    );
    assert_eq!(
        listed(&["network", "ls", "-f", "label=tier"]),
        [web_net.as_str()]
    );
    assert!(listed(&["network", "ls", "-f", &format!("label={stack}=api")]).is_empty());
    assert_eq!(
        listed(&["network", "ls", "-f", "type=builtin"]),
        [short(network_id(&cluster, "ingress"))]
    );

    // --- 2. services: labels in inspect and --pretty, ls --filter label= (and name=)
    sleeper(
        &cluster,
        "web_api",
        &["--label", &format!("{stack}=web"), "-l", "tier"],
    );
    sleeper(&cluster, "other", &[]);
    let before = running(&cluster, "web_api", 1).remove(0);
    let svc = inspect(&cluster, "service", "web_api");
    assert_eq!(
        svc["Spec"]["Labels"],
        serde_json::json!({ stack: "web", "tier": "" }),
        "{svc}"
    );
    let pretty = ok(&cluster, 0, &["service", "inspect", "--pretty", "web_api"]);
    assert!(
        pretty.contains(&format!("Labels:\n {stack}=web\n tier\n")),
        "{pretty}"
    );
    let web_api = svc["ID"].as_str().unwrap()[..12].to_string();
    assert_eq!(
        listed(&["service", "ls", "--filter", &format!("label={stack}=web")]),
        [web_api.as_str()]
    );
    assert_eq!(
        listed(&["service", "ls", "-f", "label=tier", "-f", "name=web"]),
        [web_api.as_str()]
    );
    assert!(listed(&["service", "ls", "-f", "label=tier", "-f", "name=oth"]).is_empty());
    assert_eq!(
        listed(&["service", "ls", "-f", "label=nope", "-f", "label=tier"]).len(),
        1
    );
    let table = ok(
        &cluster,
        0,
        &["service", "ls", "-f", &format!("label={stack}")],
    );
    assert!(
        table.contains("web_api") && !table.contains("other"),
        "{table}"
    );

    // --- 3. label-add / label-rm change the service, and restart nothing
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--label-add",
            "tier=back",
            "--label-rm",
            stack,
            "web_api",
        ],
    );
    let svc = inspect(&cluster, "service", "web_api");
    assert_eq!(
        svc["Spec"]["Labels"],
        serde_json::json!({ "tier": "back" }),
        "{svc}"
    );
    assert!(listed(&["service", "ls", "-f", &format!("label={stack}")]).is_empty());
    assert_eq!(
        running(&cluster, "web_api", 1)[0].id,
        before.id,
        "a label restarted the task"
    );

    // --- 4. bad input: one line; flags exit 2, what the leader refuses exit 1
    refused(
        &cluster,
        0,
        &["service", "ls", "-f", "bogus=1"],
        2,
        "invalid filter 'bogus'",
    );
    refused(
        &cluster,
        0,
        &["network", "ls", "-f", "label"],
        2,
        "bad format of filter",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--network",
            "name=plain,bogus=1",
            "--",
            "true",
        ],
        2,
        "invalid field key bogus",
    );
    refused(
        &cluster,
        0,
        &["service", "create", "--network", "alias=x", "--", "true"],
        2,
        "network name/id is not specified",
    );
    refused(
        &cluster,
        0,
        &["network", "create", "--label", "=x", "n2"],
        2,
        "invalid label",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--network",
            "name=web_default,alias=a b",
            "--",
            "true",
        ],
        1,
        "invalid network alias \"a b\"",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--stop-signal",
            "SIGFOO",
            "--",
            "true",
        ],
        1,
        "invalid signal: SIGFOO",
    );
    refused(
        &cluster,
        0,
        &["service", "create", "-d", "--workdir", "srv", "--", "true"],
        1,
        "the working directory 'srv' is invalid, it needs to be an absolute path",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--hostname",
            "{{.Service.Labels}}",
            "--",
            "true",
        ],
        1,
        "unsupported placeholder",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--mode",
            "global",
            "--replicas-max-per-node",
            "1",
            "--",
            "true",
        ],
        1,
        "replicas-max-per-node can only be used with replicated mode",
    );
    // Nothing half-created.
    assert_eq!(listed(&["service", "ls"]).len(), 2);
}

#[test]
fn workdir_user_hostname_and_stop_signal_are_the_tasks() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let dir = cluster.work_dir().join("svc-workdir");
    fs::create_dir_all(&dir).unwrap();
    let dir = dir.display().to_string();

    // --- 1. a task with every process setting; what it sees is in its log
    let script = "echo \"pwd=$(pwd) uid=$(id -u) gid=$(id -g) groups=$(id -G) host=$(hostname) \
                  home=$HOME\"; \
                  trap 'echo stopped by usr1; exit 0' USR1; \
                  while true; do sleep 0.1; done";
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "proc",
            "--workdir",
            &dir,
            "--user",
            "daemon:nogroup",
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--stop-signal",
            "SIGUSR1",
            "--stop-grace-period",
            "30s",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let task = running(&cluster, "proc", 1).remove(0);
    let want = format!("pwd={dir} uid=1 gid=65534 groups=65534 host=proc-1 home=/usr/sbin");
    wait_until(Duration::from_secs(10), "the task's report", || {
        let logs = ok(&cluster, 0, &["service", "logs", "proc"]);
        if logs.contains(&want) {
            Ok(())
        } else {
            Err(logs)
        }
    });

    // --- 2. exec runs as the task does: same directory, user and hostname
    let out = ok(
        &cluster,
        0,
        &[
            "exec",
            "proc.1",
            "--",
            "sh",
            "-c",
            "pwd; id -u; id -g; hostname; echo $HOSTNAME",
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [dir.as_str(), "1", "65534", "proc-1", "proc-1"],
        "exec into {}",
        task.id
    );

    // --- 3. inspect shows the settings where Docker has them
    let svc = inspect(&cluster, "service", "proc");
    let container = &svc["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container["Dir"], dir.as_str(), "{svc}");
    assert_eq!(container["User"], "daemon:nogroup");
    assert_eq!(container["Hostname"], "{{.Service.Name}}-{{.Task.Slot}}");
    assert_eq!(container["StopSignal"], "SIGUSR1");

    // --- 4. stopping sends SIGUSR1 (the trap says so and exits), long before the grace
    //        period's SIGKILL (SIGTERM would end the shell without a word)
    ok(&cluster, 0, &["service", "scale", "--detach", "proc=0"]);
    wait_until(Duration::from_secs(10), "the trap to run", || {
        let logs = ok(&cluster, 0, &["service", "logs", "proc"]);
        if logs.contains("| stopped by usr1") {
            Ok(())
        } else {
            Err(logs)
        }
    });
    wait_until(Duration::from_secs(10), "the task to be shut down", || {
        let out = ok(&cluster, 0, &["service", "ps", "--format", "json", "proc"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        match tasks.iter().find(|t| t["id"] == task.id.as_str()) {
            Some(t) if t["state"] == "shutdown" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // --- 5. a user the node does not have: the task fails, saying so in runc's words
    sleeper(&cluster, "ghostly", &["--user", "ghost"]);
    wait_until(Duration::from_secs(10), "the task to fail", || {
        let out = ok(
            &cluster,
            0,
            &["service", "ps", "--format", "json", "ghostly"],
        );
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let errors: Vec<&str> = tasks.iter().filter_map(|t| t["error"].as_str()).collect();
        if errors
            .iter()
            .any(|e| e.contains("unable to find user ghost: no matching entries in passwd file"))
        {
            Ok(())
        } else {
            Err(format!("{errors:?}"))
        }
    });
}

#[test]
fn max_replicas_per_node_leaves_the_extra_replica_pending() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);

    // --- 1. 3 replicas, at most 1 per node, on 2 nodes: one waits, with Docker's message
    sleeper(
        &cluster,
        "capped",
        &["--replicas", "3", "--replicas-max-per-node", "1"],
    );
    let placed = running(&cluster, "capped", 2);
    assert_ne!(placed[0].node, placed[1].node, "one per node");
    let message = "no suitable node (max replicas per node limit exceed)";
    wait_until(Duration::from_secs(10), "the third replica pending", || {
        let out = ok(
            &cluster,
            0,
            &["service", "ps", "--format", "json", "capped"],
        );
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let pending: Vec<&serde_json::Value> =
            tasks.iter().filter(|t| t["state"] == "pending").collect();
        if pending.len() == 1 && pending[0]["error"] == message {
            Ok(())
        } else {
            Err(format!("{tasks:?}"))
        }
    });
    let table = ok(&cluster, 0, &["service", "ps", "capped"]);
    assert!(table.contains(&format!("\"{message}\"")), "{table}");
    let svc = inspect(&cluster, "service", "capped");
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["Placement"]["MaxReplicas"], 1,
        "{svc}"
    );
    let pretty = ok(&cluster, 0, &["service", "inspect", "--pretty", "capped"]);
    assert!(pretty.contains(" Max Replicas Per Node:   1"), "{pretty}");

    // --- 2. raising the limit places it, and restarts none of the others
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--replicas-max-per-node",
            "2",
            "capped",
        ],
    );
    let now = running(&cluster, "capped", 3);
    for before in &placed {
        assert!(
            now.iter().any(|t| t.id == before.id),
            "{} was replaced",
            before.id
        );
    }
}
