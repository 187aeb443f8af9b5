//! The Docker Engine API, driven by the real docker CLI (28.x) pointed at a node's
//! `docker.sock`: version negotiation, `info`'s Swarm section, `node ls`, the tutorial's
//! `service create -p 8080:80 --replicas 2` (served on every node's published port), `service
//! ls | ps | inspect | scale | update | rollback | rm`, `network create -d overlay | ls |
//! inspect | rm`, and dockerd's words for a missing service and a worker. Each answer is checked against
//! what the `shoal` CLI says of the same cluster.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use shoal_tests::{Cluster, agent::shoal_bin, wait_until};

use crate::support::{docker, docker_ok, docker_sock, ids, new_connections, ok, running, stderr};

fn shoal_inspect(cluster: &Cluster, service: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cluster, 0, &["service", "inspect", service])).unwrap();
    all[0].clone()
}

/// Waits until every node's `port` is answered, from the outside client, by exactly the
/// tasks `expected`.
fn served_on_every_node(cluster: &Cluster, port: u16, expected: &BTreeSet<String>) {
    let client = cluster.client_ns().path();
    for node in &cluster.nodes {
        let to = SocketAddr::new(node.address.into(), port);
        wait_until(
            Duration::from_secs(15),
            &format!("{to} to serve {expected:?}"),
            || {
                let seen: BTreeSet<String> =
                    new_connections(Path::new(&client), to, expected.len() * 2)?
                        .into_iter()
                        .collect();
                if &seen == expected {
                    Ok(())
                } else {
                    Err(format!("answered by {seen:?}"))
                }
            },
        );
    }
}

#[test]
fn the_docker_cli_drives_a_shoal_swarm() {
    // --- 1. three nodes: node1 manages, node2 and node3 work
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let manager_id = cluster.nodes[0].node_id();

    // --- 2. version negotiation: the CLI (API 1.50) settles on the 1.47 served
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "version",
                "--format",
                "{{.Server.APIVersion}} {{.Server.Os}}"
            ]
        ),
        "1.47 linux"
    );

    // --- 3. info: the Swarm section, on the manager and on a worker
    let swarm = docker_ok(
        &cluster,
        0,
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Nodes}} \
             {{.Swarm.Managers}} {{.Swarm.NodeID}} {{len .Swarm.RemoteManagers}}",
        ],
    );
    assert_eq!(swarm, format!("active true 3 1 {manager_id} 1"));
    let text = docker_ok(&cluster, 0, &["info"]);
    assert!(text.contains("Swarm: active"), "{text}");
    assert!(text.contains("Is Manager: true"), "{text}");
    let worker = docker_ok(
        &cluster,
        2,
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ],
    );
    assert_eq!(worker, "active false");

    // --- 4. node ls: the same nodes as `shoal node ls`, the manager marked as self
    let rows = docker_ok(
        &cluster,
        0,
        &[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.ManagerStatus}} {{.Self}}",
        ],
    );
    let mut rows: Vec<&str> = rows.lines().collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "node1 Ready Leader true",
            "node2 Ready  false",
            "node3 Ready  false"
        ]
    );
    let shoal_ids: BTreeSet<String> = cluster
        .node_ls(0)
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let docker_ids: BTreeSet<String> = docker_ok(&cluster, 0, &["node", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect();
    let short: BTreeSet<String> = shoal_ids.iter().map(|id| id[..12].to_string()).collect();
    assert!(
        docker_ids == shoal_ids || docker_ids == short,
        "{docker_ids:?} vs {shoal_ids:?}"
    );
    // A worker answers as dockerd's: 503 and its words.
    let out = docker(&cluster, 2, &["node", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "This node is not a swarm manager. Worker nodes can't be used to view or modify \
             cluster state."
        ),
        "{}",
        stderr(&out)
    );

    // --- 5. the tutorial's service, created by the docker CLI: the program is the image
    let bin = shoal_bin().display().to_string();
    let out = docker(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        cluster.nodes[0].log_tail()
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The CLI's own warning (no registry), and none of shoal's: it asked for nothing shoal
    // does not do.
    assert!(
        stderr(&out).contains("could not be accessed on a registry"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("not supported by shoal"),
        "{}",
        stderr(&out)
    );
    let web = shoal_inspect(&cluster, "web");
    assert_eq!(web["ID"], id.as_str());
    assert_eq!(
        web["Spec"]["TaskTemplate"]["ContainerSpec"]["Command"],
        serde_json::json!([bin, "whoami", "--port", "80"])
    );
    let tasks = running(&cluster, "web", 2);
    served_on_every_node(&cluster, 8080, &ids(&tasks));

    // --- 6. service ls / ps / inspect agree with the cluster
    let ls = docker_ok(
        &cluster,
        0,
        &[
            "service",
            "ls",
            "--format",
            "{{.Name}} {{.Mode}} {{.Replicas}} {{.Image}} {{.Ports}}",
        ],
    );
    assert_eq!(ls, format!("web replicated 2/2 {bin} *:8080->80/tcp"));
    let ps = docker_ok(
        &cluster,
        0,
        &[
            "service",
            "ps",
            "web",
            "--format",
            "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
        ],
    );
    let mut placed: Vec<String> = ps
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!((f[2], f[3]), ("Running", "Running"), "{ps}");
            format!("{} {}", f[0], f[1])
        })
        .collect();
    placed.sort();
    let mut expected: Vec<String> = {
        let shoal_ps: Vec<serde_json::Value> = serde_json::from_str(&ok(
            &cluster,
            0,
            &["service", "ps", "--format", "json", "web"],
        ))
        .unwrap();
        shoal_ps
            .iter()
            .filter(|t| t["desired_state"] == "running")
            .map(|t| format!("web.{} {}", t["slot"], t["node_hostname"].as_str().unwrap()))
            .collect()
    };
    expected.sort();
    assert_eq!(placed, expected);
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &["service", "inspect", "--format", "{{.Spec.Name}}", "web"]
        ),
        "web"
    );
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "service",
                "inspect",
                "--format",
                "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.TaskTemplate.ContainerSpec.Args}} {{.Spec.Mode.Replicated.Replicas}}",
                "web"
            ]
        ),
        format!("{bin} [whoami --port 80] 2")
    );

    // --- 7. scale: Version.Index round-trips, and the cluster runs 3
    docker_ok(&cluster, 0, &["service", "scale", "-d", "web=3"]);
    assert_eq!(
        shoal_inspect(&cluster, "web")["Spec"]["Mode"]["Replicated"]["Replicas"],
        3
    );
    running(&cluster, "web", 3);

    // --- 8. update --env-add: the spec read back and sent again keeps the program and ports
    docker_ok(
        &cluster,
        0,
        &["service", "update", "-d", "--env-add", "GREETING=hi", "web"],
    );
    let web = shoal_inspect(&cluster, "web");
    let container = &web["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        container["Env"],
        serde_json::json!(["GREETING=hi"]),
        "{web}"
    );
    assert_eq!(
        container["Command"],
        serde_json::json!([bin, "whoami", "--port", "80"])
    );
    assert_eq!(web["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    assert_eq!(web["Endpoint"]["Ports"][0]["PublishedPort"], 8080);
    wait_until(
        Duration::from_secs(30),
        "3 tasks of the new spec running",
        || {
            let ps = docker_ok(
                &cluster,
                0,
                &[
                    "service",
                    "ps",
                    "web",
                    "-f",
                    "desired-state=running",
                    "--format",
                    "{{.CurrentState}}",
                ],
            );
            let running = ps.lines().filter(|l| l.starts_with("Running")).count();
            if running == 3 && ps.lines().count() == 3 {
                Ok(())
            } else {
                Err(ps)
            }
        },
    );

    // --- 9. service rollback: back to the spec before the update (no GREETING)
    docker_ok(&cluster, 0, &["service", "rollback", "-d", "web"]);
    let web = shoal_inspect(&cluster, "web");
    let env = &web["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"];
    assert!(
        env.is_null() || env == &serde_json::json!([]),
        "rolled back: {web}"
    );
    assert_eq!(web["Spec"]["Mode"]["Replicated"]["Replicas"], 3);

    // --- 10. dockerd's words: an unknown service, an update out of sequence
    let out = docker(&cluster, 0, &["service", "rm", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Error response from daemon: service nosuch not found"),
        "{}",
        stderr(&out)
    );
    let out = docker(&cluster, 0, &["service", "inspect", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such service: nosuch"),
        "{}",
        stderr(&out)
    );
    let stale = Command::new("curl")
        .args(["-s", "-w", " %{http_code}", "--unix-socket"])
        .arg(docker_sock(&cluster, 0))
        .args(["-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(serde_json::json!({ "Name": "web", "TaskTemplate": { "ContainerSpec": { "Image": bin } } }).to_string())
        .arg("http://docker/v1.47/services/web/update?version=1")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stale.stdout),
        r#"{"message":"rpc error: code = Unknown desc = update out of sequence"} 500"#
    );

    // --- 10. network create -d overlay, seen by both CLIs, then removed
    let net_id = docker_ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "backend"],
    );
    let shoal_nets = ok(&cluster, 0, &["network", "ls", "-q", "-f", "name=backend"]);
    assert!(net_id.starts_with(&shoal_nets), "{net_id} vs {shoal_nets}");
    let nets = docker_ok(
        &cluster,
        0,
        &[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}}",
        ],
    );
    assert!(nets.lines().any(|l| l == "backend overlay swarm"), "{nets}");
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "network",
                "inspect",
                "--format",
                "{{.Driver}} {{.Scope}}",
                "backend"
            ]
        ),
        "overlay swarm"
    );
    docker_ok(&cluster, 0, &["network", "rm", "backend"]);
    assert_eq!(
        ok(&cluster, 0, &["network", "ls", "-q", "-f", "name=backend"]),
        ""
    );

    // --- 11. service rm: gone from the cluster
    assert_eq!(docker_ok(&cluster, 0, &["service", "rm", "web"]), "web");
    assert_eq!(ok(&cluster, 0, &["service", "ls", "-q"]), "");
}

#[test]
fn the_engine_socket_is_born_0660_beside_the_api_socket() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let cluster = Cluster::start(1);
    let meta = std::fs::metadata(docker_sock(&cluster, 0)).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // Not in a swarm: the ping says so, and cluster calls get dockerd's words.
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &["info", "--format", "{{.Swarm.LocalNodeState}}"]
        ),
        "inactive"
    );
    let out = docker(&cluster, 0, &["service", "ls"]);
    assert!(
        stderr(&out).contains(
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\""
        ),
        "{}",
        stderr(&out)
    );
}
