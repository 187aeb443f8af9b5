//! A rolling upgrade: three managers, one node at a time stopped (SIGTERM), started again as
//! "the next version", and back in the swarm, while a service's tasks keep running (same task
//! IDs, same processes) and connections held open through its VIP and its published port keep
//! being answered. Then a node speaking an API the cluster does not work with is refused at
//! join, in one line.
//!
//! The next version is this same binary with the test hooks `SHOAL_TEST_OVERRIDE_VERSION`
//! (what `shoal version` reports) and `SHOAL_TEST_OVERRIDE_API_VERSION` (what the node claims
//! on 2377: one minor above this build's): a second build of the tree costs a full compile,
//! which CI cannot afford. `SHOAL_VERSION=... cargo build` makes a real second build.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster,
    task_net::{http_from, http_get, tcp_connect},
    wait_until,
};

use crate::support::{create_whoami, ok, served_by, stderr};

const PORT: u16 = 8080;
const PUBLISHED: u16 = 8380;
const NEXT_VERSION: &str = "99.1.0-upgrade-test";
const NEXT_API: &str = "2.1";

/// A kept-alive connection and the task that answered its first request.
struct Held {
    what: String,
    stream: TcpStream,
    task: String,
}

fn hold(netns: &Path, to: SocketAddr, what: &str) -> Result<Held, String> {
    let mut stream = tcp_connect(netns, to).map_err(|e| format!("{to}: {e}"))?;
    let report = http_get(&mut stream, "/").map_err(|e| format!("{to}: {e}"))?;
    Ok(Held {
        what: what.to_string(),
        stream,
        task: served_by(&report),
    })
}

/// `shoal version`'s server version on node `i`.
fn server_version(cluster: &Cluster, i: usize) -> Result<String, String> {
    let out = cluster.nodes[i].cli(&["version", "--format", "json"]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["Server"]["Version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no server version: {v}"))
}

/// Task ID -> (node hostname, state) of `service`, asked on node `i`.
fn tasks(cluster: &Cluster, i: usize, service: &str) -> Result<BTreeMap<String, String>, String> {
    let out = cluster.nodes[i].cli(&["service", "ps", "--format", "json", service]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let tasks: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(tasks
        .iter()
        .filter(|t| t["desired_state"] == "running")
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{} {}",
                    t["node_hostname"].as_str().unwrap_or_default(),
                    t["state"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect())
}

/// The process of task `id` as its node's executor recorded it (`<pid> <start time>`).
fn process_of(cluster: &Cluster, node: usize, id: &str) -> String {
    let file = cluster.nodes[node]
        .state_dir()
        .join("tasks")
        .join(id)
        .join("pid");
    let line = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string();
    let pid = line.split_whitespace().next().unwrap_or_default();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "task {id}'s process {line} is gone"
    );
    line
}

/// Every node Ready, one leader, every manager reachable, seen from node `i`.
fn settled(cluster: &Cluster, i: usize, nodes: usize) -> Result<(), String> {
    let ls = cluster.node_ls(i)?;
    let ready = ls.iter().filter(|n| n["status"] == "ready").count();
    let leaders = ls
        .iter()
        .filter(|n| n["manager_status"] == "leader")
        .count();
    let reachable = ls
        .iter()
        .filter(|n| n["manager_status"] == "reachable")
        .count();
    if ls.len() == nodes && ready == nodes && leaders == 1 && leaders + reachable == nodes {
        Ok(())
    } else {
        Err(format!("{ls:?}"))
    }
}

#[test]
fn a_rolling_upgrade_keeps_tasks_and_connections_and_refuses_another_major() {
    // --- 1. four node namespaces; three managers of the current version, node4 kept aside
    let mut cluster = Cluster::build(4);
    for i in 0..3 {
        cluster.nodes[i].start();
    }
    let init = ok(&cluster, 0, &["swarm", "init"]);
    drop(init);
    let token = cluster.join_token(0, "manager");
    let leader_addr = format!("{}:2377", cluster.nodes[0].address);
    for i in 1..3 {
        ok(
            &cluster,
            i,
            &["swarm", "join", "--token", &token, &leader_addr],
        );
    }
    wait_until(Duration::from_secs(60), "three Ready managers", || {
        settled(&cluster, 0, 3)
    });
    let old_version = server_version(&cluster, 0).unwrap();
    assert_ne!(old_version, NEXT_VERSION);

    // --- 2. `web` on every node, published, on an overlay; a client task on node3
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
            "upgrade_net",
        ],
    );
    let publish = format!("published={PUBLISHED},target={PORT}");
    create_whoami(
        &cluster,
        "web",
        PORT,
        &[
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--network",
            "upgrade_net",
            "--publish",
            &publish,
        ],
    );
    create_whoami(
        &cluster,
        "client",
        PORT,
        &[
            "--network",
            "upgrade_net",
            "--constraint",
            "node.hostname==node3",
        ],
    );
    let web = crate::support::running(&cluster, "web", 3);
    let client = crate::support::running(&cluster, "client", 1).remove(0);
    let vip = SocketAddr::new(
        crate::support::vip_of(&cluster, "web", "upgrade_net").into(),
        PORT,
    );
    let client_netns = client.netns(&cluster);
    let outside = cluster.client_ns().path();
    let outside = Path::new(&outside);
    let processes: BTreeMap<String, String> = web
        .iter()
        .chain([&client])
        .map(|t| (t.id.clone(), process_of(&cluster, t.node, &t.id)))
        .collect();
    let before = tasks(&cluster, 0, "web").unwrap();
    assert_eq!(before.len(), 3, "{before:?}");

    // --- 3. connections held open: through the VIP from the client task, and from outside
    //        through every node's published port
    let mut held = Vec::new();
    wait_until(Duration::from_secs(20), "held connections", || {
        if !held.iter().any(|h: &Held| h.what == "vip") {
            held.push(hold(&client_netns, vip, "vip")?);
        }
        for node in &cluster.nodes[..3] {
            let what = format!("published port of {}", node.name);
            if !held.iter().any(|h| h.what == what) {
                let to = SocketAddr::new(node.address.into(), PUBLISHED);
                held.push(hold(outside, to, &what)?);
            }
        }
        Ok(())
    });
    let check_held = |held: &mut Vec<Held>, when: &str| {
        for h in held.iter_mut() {
            let report = http_get(&mut h.stream, "/")
                .unwrap_or_else(|e| panic!("{when}: the held connection ({}) broke: {e}", h.what));
            assert_eq!(served_by(&report), h.task, "{when}: {}", h.what);
        }
    };

    // --- 4. one node at a time: SIGTERM, start as the next version, back in the swarm
    for i in 0..3 {
        let other = (i + 1) % 3;
        let name = cluster.nodes[i].name.clone();
        cluster.nodes[i].stop();
        check_held(&mut held, &format!("{name} stopped"));
        if i == 1 {
            // Away for longer than three heartbeat periods (3 s): its tasks stay, because its
            // agent said it was stopping (a restart on a slow host must not reschedule them).
            std::thread::sleep(Duration::from_secs(4));
        }

        let node = &mut cluster.nodes[i];
        node.extra_env = vec![
            ("SHOAL_TEST_OVERRIDE_VERSION".into(), NEXT_VERSION.into()),
            ("SHOAL_TEST_OVERRIDE_API_VERSION".into(), NEXT_API.into()),
        ];
        node.start();
        assert_eq!(server_version(&cluster, i).unwrap(), NEXT_VERSION);
        wait_until(
            Duration::from_secs(60),
            &format!("{name} Ready again, as a reachable manager"),
            || settled(&cluster, other, 3).and_then(|()| settled(&cluster, i, 3)),
        );

        // The versions the nodes report: mixed until the last one.
        let versions: Vec<String> = (0..3)
            .map(|n| server_version(&cluster, n).unwrap())
            .collect();
        let expected: Vec<&str> = (0..3)
            .map(|n| {
                if n <= i {
                    NEXT_VERSION
                } else {
                    old_version.as_str()
                }
            })
            .collect();
        assert_eq!(versions, expected, "after upgrading {name}");

        // A Raft write goes through, whichever versions hold the log.
        let label = format!("upgraded={i}");
        ok(
            &cluster,
            other,
            &["node", "update", "--label-add", &label, &name],
        );

        // Every task kept running: the same IDs, on the same nodes, the same processes.
        wait_until(
            Duration::from_secs(20),
            &format!("web's tasks as before, after upgrading {name}"),
            || {
                let now = tasks(&cluster, i, "web")?;
                if now == before {
                    Ok(())
                } else {
                    Err(format!("{now:?}, before {before:?}"))
                }
            },
        );
        for t in web.iter().chain([&client]) {
            assert_eq!(
                process_of(&cluster, t.node, &t.id),
                processes[&t.id],
                "task {} restarted after upgrading {name}",
                t.id
            );
        }

        // Held connections still answered by their tasks; new ones work too.
        check_held(&mut held, &format!("{name} upgraded"));
        wait_until(
            Duration::from_secs(20),
            &format!("new connections after upgrading {name}"),
            || {
                http_from(&client_netns, vip).map_err(|e| format!("vip: {e}"))?;
                for node in &cluster.nodes[..3] {
                    let to = SocketAddr::new(node.address.into(), PUBLISHED);
                    http_from(outside, to).map_err(|e| format!("{to}: {e}"))?;
                }
                Ok(())
            },
        );
    }

    // --- 5. node4, claiming an API of another major, is refused at join: one line
    let node = &mut cluster.nodes[3];
    node.extra_env = vec![("SHOAL_TEST_OVERRIDE_API_VERSION".into(), "3.0".into())];
    node.start();
    let out = cluster.nodes[3].cli(&["swarm", "join", "--token", &token, &leader_addr]);
    let line = stderr(&out);
    assert!(!out.status.success(), "a 3.0 node joined a 2.x swarm");
    assert!(
        line.contains("incompatible shoal versions") && line.contains("API 3.0"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    assert_eq!(cluster.node_ls(0).unwrap().len(), 3);
    check_held(&mut held, "the end");
}
