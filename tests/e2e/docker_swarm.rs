//! A swarm formed and run with the docker CLI (28.x) alone, on each node's `docker.sock`:
//! `swarm init | join-token [--rotate] | join | update | unlock-key | unlock | leave`, `node
//! update | promote | demote | rm`, and dockerd's words for what a node in no swarm, a worker,
//! a manager leaving and a stale token are refused. Each answer is checked against what the
//! `shoal` CLI says of the same cluster.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
    time::Duration,
};

use shoal_control::pki::cert_info;
use shoal_tests::{Cluster, wait_until};

use crate::support::{docker, docker_ok, docker_sock, ok, stderr};

/// `docker ARGS...` on node `i`, which must fail; its stderr.
fn docker_err(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = docker(cluster, i, args);
    assert!(
        !out.status.success(),
        "docker {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(&out)
}

/// `docker ARGS...` on node `i` with `input` on its stdin (`swarm unlock` reads the key there
/// when stdin is no terminal).
fn docker_with_stdin(cluster: &Cluster, i: usize, args: &[&str], input: &str) -> Output {
    let mut child = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", docker_sock(cluster, i).display()))
        .args(args)
        .env("DOCKER_CONFIG", cluster.work_dir().join("docker-config"))
        .env("DOCKER_CLI_HINTS", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Node `hostname` in `shoal node ls` on node1.
fn shoal_node(cluster: &Cluster, hostname: &str) -> serde_json::Value {
    cluster
        .node_ls(0)
        .unwrap()
        .into_iter()
        .find(|n| n["hostname"] == hostname)
        .unwrap_or_else(|| panic!("{hostname} not in node ls"))
}

/// Waits until node1's `node ls` shows `expected` nodes, all Ready, one leader, and the roles
/// given (hostname, role), and each of those nodes has taken its role itself (a demoted node
/// leaves Raft after the leader has recorded the demotion).
fn settled(cluster: &Cluster, expected: usize, roles: &[(&str, &str)]) {
    wait_until(
        Duration::from_secs(20),
        &format!("{expected} Ready nodes with roles {roles:?}"),
        || {
            let nodes = cluster.node_ls(0)?;
            let ready = nodes.iter().filter(|n| n["status"] == "ready").count();
            let leaders = nodes
                .iter()
                .filter(|n| n["manager_status"] == "leader")
                .count();
            let roles_ok = roles.iter().all(|(host, role)| {
                nodes.iter().any(|n| {
                    n["hostname"] == *host
                        && n["role"] == *role
                        && (*role == "worker"
                            || n["manager_status"] == "leader"
                            || n["manager_status"] == "reachable")
                })
            });
            let taken = roles.iter().all(|(host, role)| {
                let i = cluster.nodes.iter().position(|n| n.name == *host).unwrap();
                cluster.nodes[i].try_info().is_ok_and(|info| {
                    info["swarm_state"] == "active" && info["is_manager"] == (*role == "manager")
                })
            });
            if nodes.len() == expected && ready == expected && leaders == 1 && roles_ok && taken {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        },
    );
}

/// Waits until manager `i` has re-sealed its data key `count` times since it started (it does
/// so on its own once it sees a new unlock key in its store).
fn resealed(cluster: &Cluster, i: usize, count: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("node{} to re-seal its data key {count} times", i + 1),
        || {
            let log = std::fs::read_to_string(cluster.nodes[i].log_path()).unwrap_or_default();
            let seen = log.matches("data key re-sealed").count();
            if seen >= count {
                Ok(())
            } else {
                Err(format!("{seen} times"))
            }
        },
    );
}

/// Node `i`'s swarm spec posted back through docker-py with `NodeCertExpiry` 72 h, quoting
/// `version`: "applied", or the API's status and message.
fn stale_swarm_update(cluster: &Cluster, i: usize, version: u64) -> String {
    const SCRIPT: &str = r#"
import sys, docker
api = docker.APIClient(base_url=sys.argv[1])
spec = api.inspect_swarm()["Spec"]
spec["CAConfig"]["NodeCertExpiry"] = 72 * 3600 * 10**9
try:
    api.update_swarm(version=int(sys.argv[2]), swarm_spec=spec)
    print("applied")
except docker.errors.APIError as e:
    print(e.response.status_code, e.explanation)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(format!("unix://{}", docker_sock(cluster, i).display()))
        .arg(version.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running python3 (is docker-py installed?): {e}"));
    assert!(out.status.success(), "python3: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_info(cluster: &Cluster, i: usize, format: &str) -> String {
    docker_ok(cluster, i, &["info", "--format", format])
}

#[test]
fn the_docker_cli_forms_and_runs_a_swarm() {
    let mut cluster = Cluster::start(3);
    let leader = format!("{}:2377", cluster.nodes[0].address);

    // --- 1. in no swarm: dockerd's words
    assert!(
        docker_err(&cluster, 0, &["swarm", "join-token", "worker"]).contains(
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" \
             to connect this node to swarm and try again."
        )
    );
    assert!(
        docker_err(&cluster, 0, &["swarm", "leave"]).contains("This node is not part of a swarm")
    );

    // --- 2. init on node1: its ID, and the worker's join command with shoal's token
    let address = cluster.nodes[0].address.to_string();
    let init = docker_ok(
        &cluster,
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &address,
            "--default-addr-pool",
            "10.20.0.0/16",
            "--default-addr-pool-mask-length",
            "26",
        ],
    );
    let node1 = cluster.nodes[0].node_id();
    assert!(
        init.contains(&format!(
            "Swarm initialized: current node ({node1}) is now a manager."
        )),
        "{init}"
    );
    let worker_token = cluster.join_token(0, "worker");
    assert!(
        init.contains(&format!(
            "docker swarm join --token {worker_token} {leader}"
        )),
        "{init}"
    );
    assert!(
        docker_err(&cluster, 0, &["swarm", "init"])
            .contains("This node is already part of a swarm. Use \"docker swarm leave\"")
    );

    // --- 3. the tokens, as shoal shows them; node2 joins as a manager, node3 as a worker
    assert_eq!(
        docker_ok(&cluster, 0, &["swarm", "join-token", "-q", "worker"]),
        worker_token
    );
    let manager_token = docker_ok(&cluster, 0, &["swarm", "join-token", "-q", "manager"]);
    assert_eq!(manager_token, cluster.join_token(0, "manager"));
    let shown = docker_ok(&cluster, 0, &["swarm", "join-token", "manager"]);
    assert!(
        shown.contains(&format!(
            "docker swarm join --token {manager_token} {leader}"
        )),
        "{shown}"
    );
    assert_eq!(
        docker_ok(
            &cluster,
            1,
            &["swarm", "join", "--token", &manager_token, &leader]
        ),
        "This node joined a swarm as a manager."
    );
    assert_eq!(
        docker_ok(
            &cluster,
            2,
            &["swarm", "join", "--token", &worker_token, &leader]
        ),
        "This node joined a swarm as a worker."
    );
    settled(
        &cluster,
        3,
        &[
            ("node1", "manager"),
            ("node2", "manager"),
            ("node3", "worker"),
        ],
    );

    // --- 4. info on each: the cluster shoal reports, control only on the managers
    let cluster_id = cluster.nodes[0].info()["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        docker_info(
            &cluster,
            0,
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Managers}} \
             {{.Swarm.Nodes}} {{.Swarm.Cluster.ID}} {{.Swarm.Cluster.Spec.Name}}"
        ),
        format!("active true 2 3 {cluster_id} default")
    );
    assert_eq!(
        docker_info(
            &cluster,
            1,
            "{{.Swarm.ControlAvailable}} {{.Swarm.Cluster.ID}}"
        ),
        format!("true {cluster_id}")
    );
    // The settings as the store holds them: init's pools, the defaults for the rest.
    assert_eq!(
        docker_info(
            &cluster,
            0,
            "{{.Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}} \
             {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}} \
             {{.Swarm.Cluster.Spec.CAConfig.NodeCertExpiry}}"
        ),
        "[10.20.0.0/16] 26 1s 2160h0m0s"
    );
    let text = docker_ok(&cluster, 0, &["info"]);
    for line in [
        "Is Manager: true",
        &format!("ClusterID: {cluster_id}"),
        "Autolock Managers: false",
        "Root Rotation In Progress: false",
        "Heartbeat Period: 1 second",
        "Expiry Duration: 3 months",
        "Default Address Pool: 10.20.0.0/16",
        "SubnetSize: 26",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert_eq!(
        docker_info(
            &cluster,
            2,
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
        ),
        "active false"
    );
    assert!(
        docker_err(&cluster, 2, &["swarm", "join-token", "worker"]).contains(
            "This node is not a swarm manager. Worker nodes can't be used to view or modify \
             cluster state."
        )
    );

    // --- 5. node update: availability and labels, as shoal then shows them
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &["node", "update", "--availability", "drain", "node3"]
        ),
        "node3"
    );
    assert_eq!(shoal_node(&cluster, "node3")["availability"], "drain");
    docker_ok(
        &cluster,
        0,
        &["node", "update", "--label-add", "zone=a", "node3"],
    );
    let node3 = shoal_node(&cluster, "node3");
    assert_eq!(node3["labels"], serde_json::json!({ "zone": "a" }));
    assert_eq!(
        node3["availability"], "drain",
        "labels leave the rest alone"
    );
    docker_ok(
        &cluster,
        0,
        &[
            "node",
            "update",
            "--availability",
            "active",
            "--label-rm",
            "zone",
            "node3",
        ],
    );
    let node3 = shoal_node(&cluster, "node3");
    assert_eq!(node3["availability"], "active");
    assert_eq!(node3["labels"], serde_json::json!({}));
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "node",
                "inspect",
                "--format",
                "{{.Spec.Availability}}",
                "node3"
            ]
        ),
        "active"
    );

    // --- 6. promote and demote
    assert_eq!(
        docker_ok(&cluster, 0, &["node", "promote", "node3"]),
        "Node node3 promoted to a manager in the swarm."
    );
    settled(&cluster, 3, &[("node3", "manager")]);
    assert_eq!(
        docker_ok(&cluster, 0, &["node", "demote", "node3"]),
        "Manager node3 demoted in the swarm."
    );
    settled(&cluster, 3, &[("node3", "worker")]);

    // --- 7. swarm update: --cert-expiry applies and moves the version on; an update quoting
    // the version before it is refused, changing nothing; what shoal cannot set is refused by
    // name
    let version = |i| -> u64 {
        docker_info(&cluster, i, "{{.Swarm.Cluster.Version.Index}}")
            .parse()
            .unwrap()
    };
    let before = version(0);
    assert_eq!(
        docker_ok(&cluster, 0, &["swarm", "update", "--cert-expiry", "48h"]),
        "Swarm updated."
    );
    // Both managers answer from the store (a follower asks the leader).
    for i in [0, 1] {
        assert_eq!(
            docker_info(
                &cluster,
                i,
                "{{.Swarm.Cluster.Spec.CAConfig.NodeCertExpiry}}"
            ),
            "48h0m0s"
        );
        assert!(version(i) > before, "version {} after {before}", version(i));
    }
    assert!(docker_ok(&cluster, 0, &["info"]).contains("Expiry Duration: 2 days"));
    let (created, updated) = {
        let times = docker_info(
            &cluster,
            0,
            "{{.Swarm.Cluster.CreatedAt.UnixNano}} {{.Swarm.Cluster.UpdatedAt.UnixNano}}",
        );
        let (c, u) = times.split_once(' ').unwrap();
        (c.parse::<u128>().unwrap(), u.parse::<u128>().unwrap())
    };
    assert!(updated > created, "updated {updated}, created {created}");
    assert_eq!(
        stale_swarm_update(&cluster, 0, before),
        "500 rpc error: code = Unknown desc = update out of sequence"
    );
    assert_eq!(
        docker_info(
            &cluster,
            0,
            "{{.Swarm.Cluster.Spec.CAConfig.NodeCertExpiry}}"
        ),
        "48h0m0s"
    );
    assert!(
        docker_err(
            &cluster,
            0,
            &["swarm", "update", "--snapshot-interval", "5"]
        )
        .contains("Spec.Raft.SnapshotInterval is not supported by shoal")
    );

    // --- 8. the worker token rotated: the old one no longer admits node3 once it has left
    let rotated = docker_ok(
        &cluster,
        0,
        &["swarm", "join-token", "--rotate", "-q", "worker"],
    );
    assert_ne!(rotated, worker_token);
    assert_eq!(rotated, cluster.join_token(0, "worker"));
    assert_eq!(
        docker_ok(&cluster, 2, &["swarm", "leave"]),
        "Node left the swarm."
    );
    assert_eq!(
        docker_info(&cluster, 2, "{{.Swarm.LocalNodeState}}"),
        "inactive"
    );
    let node2 = cluster.nodes[1].node_id();
    assert!(
        docker_err(&cluster, 0, &["node", "rm", "node2"]).contains(&format!(
            "rpc error: code = FailedPrecondition desc = node {node2} is a cluster manager"
        ))
    );
    assert_eq!(
        docker_ok(&cluster, 0, &["node", "rm", "--force", "node3"]),
        "node3"
    );
    assert_eq!(cluster.node_ls(0).unwrap().len(), 2);
    let stale = docker_err(
        &cluster,
        2,
        &["swarm", "join", "--token", &worker_token, &leader],
    );
    assert!(stale.contains("Error response from daemon"), "{stale}");
    docker_ok(
        &cluster,
        2,
        &["swarm", "join", "--token", &rotated, &leader],
    );
    settled(&cluster, 3, &[("node3", "worker")]);
    // Its certificate was issued after the update: 48 h, backdated by an hour.
    let pem =
        std::fs::read_to_string(cluster.nodes[2].state_dir().join("swarm/tls/node.pem")).unwrap();
    let cert = cert_info(&pem).unwrap();
    assert_eq!(cert.not_after - cert.not_before, 49 * 3600, "{cert:?}");

    // --- 9. leave: a manager is refused until demoted
    assert!(docker_err(&cluster, 1, &["swarm", "leave"]).contains(
        "You are attempting to leave the swarm on a node that is participating as a manager."
    ));
    docker_ok(&cluster, 0, &["node", "demote", "node2"]);
    settled(&cluster, 3, &[("node2", "worker")]);
    assert_eq!(
        docker_ok(&cluster, 1, &["swarm", "leave"]),
        "Node left the swarm."
    );
    assert_eq!(
        docker_info(&cluster, 1, "{{.Swarm.LocalNodeState}}"),
        "inactive"
    );

    // --- 10. autolock: the key shown is shoal's, rotated on demand, and unlocks a restart
    let update = docker_ok(&cluster, 0, &["swarm", "update", "--autolock=true"]);
    let key = docker_ok(&cluster, 0, &["swarm", "unlock-key", "-q"]);
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    assert!(update.contains(&key), "{update}");
    assert_eq!(key, ok(&cluster, 0, &["swarm", "unlock-key", "-q"]));
    assert_eq!(
        docker_info(
            &cluster,
            0,
            "{{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}"
        ),
        "true"
    );
    resealed(&cluster, 0, 1);
    let key = docker_ok(&cluster, 0, &["swarm", "unlock-key", "--rotate", "-q"]);
    assert_eq!(key, ok(&cluster, 0, &["swarm", "unlock-key", "-q"]));
    resealed(&cluster, 0, 2);
    cluster.nodes[0].stop();
    cluster.nodes[0].start();
    assert_eq!(
        docker_info(&cluster, 0, "{{.Swarm.LocalNodeState}}"),
        "locked"
    );
    let wrong = docker_with_stdin(&cluster, 0, &["swarm", "unlock"], "SWMKEY-1-nope\n");
    assert!(
        stderr(&wrong).contains("swarm could not be unlocked: invalid key provided"),
        "{}",
        stderr(&wrong)
    );
    let unlocked = docker_with_stdin(&cluster, 0, &["swarm", "unlock"], &format!("{key}\n"));
    assert!(
        unlocked.status.success(),
        "{}\n{}",
        stderr(&unlocked),
        cluster.nodes[0].log_tail()
    );
    wait_until(Duration::from_secs(10), "node1 to manage again", || {
        let state = docker_info(
            &cluster,
            0,
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        );
        if state == "active true" {
            Ok(())
        } else {
            Err(state)
        }
    });

    // --- 11. the last manager leaves only with --force
    assert!(
        docker_err(&cluster, 0, &["swarm", "leave"])
            .contains("Removing the last manager erases all current state of the swarm.")
    );
    docker_ok(&cluster, 0, &["swarm", "leave", "--force"]);
    assert_eq!(
        docker_info(&cluster, 0, "{{.Swarm.LocalNodeState}}"),
        "inactive"
    );
    assert_eq!(cluster.nodes[0].info()["swarm_state"], "inactive");
}
