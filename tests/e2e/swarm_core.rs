//! The cluster core on 5 real agents (3 managers, 2 workers): forming the swarm, leader
//! failover with durable state, Down and Ready, refusals, node management, bad input.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use shoal_dataplane::netns::run_in;
use shoal_tests::{Cluster, Cut, wait_until};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Runs the CLI on node `i` and asserts it succeeded.
fn run(cluster: &Cluster, i: usize, args: &[&str]) {
    let out = cluster.nodes[i].cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

fn node<'a>(nodes: &'a [serde_json::Value], hostname: &str) -> &'a serde_json::Value {
    nodes
        .iter()
        .find(|n| n["hostname"] == hostname)
        .unwrap_or_else(|| panic!("{hostname} not in {nodes:?}"))
}

#[test]
fn five_nodes_form_a_swarm_with_one_leader() {
    let cluster = Cluster::start(5);
    cluster.form_swarm(3);

    let nodes = cluster.node_ls(0).unwrap();
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "manager").count(),
        3,
        "{nodes:?}"
    );
    assert_eq!(node(&nodes, "node1")["manager_status"], "leader");
    for reachable in ["node2", "node3"] {
        assert_eq!(
            node(&nodes, reachable)["manager_status"],
            "reachable",
            "{nodes:?}"
        );
    }

    // A follower answers too: its calls are forwarded to the leader.
    let seen = cluster.node_ls(1).unwrap();
    assert_eq!(seen.len(), 5, "node2 sees {seen:?}");
    // A worker does not see the swarm's state, in Docker's words.
    for args in [
        &["node", "ls"][..],
        &["service", "ls"],
        &["service", "ps", "x"],
    ] {
        let out = cluster.nodes[4].cli(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} on a worker: {err}");
        assert!(
            err.contains("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state."),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    // The table marks the node it runs on, and uses Swarm's words.
    let table = cluster.nodes[2].cli(&["node", "ls"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let header = table.lines().next().unwrap();
    for column in ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"] {
        assert!(header.contains(column), "{header}");
    }
    let own = table.lines().find(|l| l.contains("node3")).unwrap();
    assert!(
        own.contains(" * ") && own.contains("Ready") && own.contains("Active"),
        "{table}"
    );
    assert!(
        table.contains("Leader") && table.contains("Reachable"),
        "{table}"
    );

    let info = cluster.nodes[0].info();
    assert_eq!(info["swarm_state"], "active");
    assert_eq!(info["is_manager"], true);
    assert_eq!(info["managers"], 3);
    assert_eq!(info["nodes"], 5);
    // A worker knows its swarm but not its members (Docker's `info` shows no counts there).
    let info = cluster.nodes[4].info();
    assert_eq!(info["swarm_state"], "active");
    assert_eq!(info["is_manager"], false);
    assert_eq!(info["managers"], 0);
    assert_eq!(info["nodes"], 0);
}

#[test]
fn leader_failover_keeps_state_and_the_killed_manager_catches_up() {
    let mut cluster = Cluster::start(4);
    cluster.form_swarm(3);

    // --- 1. write state through the leader
    let out = cluster.nodes[0].cli(&["node", "update", "--label-add", "zone=a", "node4"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // --- 2. SIGKILL the leader: a new one within 5 s
    cluster.nodes[0].kill();
    let killed_at = Instant::now();
    let new_leader = wait_until(Duration::from_secs(5), "a new leader", || {
        let leader = cluster.leader(1)?;
        if leader == "node1" {
            Err("still node1".into())
        } else {
            Ok(leader)
        }
    });
    eprintln!("new leader {new_leader} after {:?}", killed_at.elapsed());

    // --- 3. what was written before the kill is still there
    let nodes = cluster.node_ls(1).unwrap();
    assert_eq!(node(&nodes, "node4")["labels"]["zone"], "a", "{nodes:?}");
    // and the swarm takes new writes
    let out = cluster.nodes[1].cli(&["node", "update", "--label-add", "after=kill", "node4"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // --- 4. the killed manager restarts with its log and catches up
    cluster.nodes[0].start();
    wait_until(Duration::from_secs(15), "node1 to catch up", || {
        let nodes = cluster.node_ls(0)?;
        let seen = &node(&nodes, "node4")["labels"];
        let node1 = node(&nodes, "node1");
        if seen["after"] == "kill" && node1["status"] == "ready" {
            Ok(())
        } else {
            Err(format!("labels {seen}, node1 {node1}"))
        }
    });
    let info = cluster.nodes[0].info();
    assert_eq!(info["is_manager"], true);
}

#[test]
fn a_node_cut_off_goes_down_and_comes_back() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    for how in [Cut::LinkDown, Cut::NftDrop] {
        cluster.cut(2, how);
        let cut_at = Instant::now();
        wait_until(Duration::from_secs(5), "node3 Down within 5 s", || {
            let nodes = cluster.node_ls(0)?;
            let status = &node(&nodes, "node3")["status"];
            if status == "down" {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        });
        eprintln!("{how:?}: node3 down after {:?}", cut_at.elapsed());
        cluster.heal(2, how);
        wait_until(Duration::from_secs(5), "node3 Ready after healing", || {
            let nodes = cluster.node_ls(0)?;
            let status = &node(&nodes, "node3")["status"];
            if status == "ready" {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        });
    }
}

#[test]
fn wrong_tokens_and_plain_tcp_are_refused() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let manager = format!("{}:2377", cluster.nodes[0].address);

    // --- 1. a malformed token and a token of another swarm (node2 left, and a manager
    // removed its record: a node ID the swarm knows cannot join again)
    let out = cluster.nodes[1].cli(&["swarm", "leave"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = cluster.join_token(0, "worker");
    let out = cluster.nodes[1].cli(&["swarm", "join", "--token", &token, &manager]);
    assert!(!out.status.success(), "a known node ID joined again");
    assert!(
        stderr(&out).contains("already a member of this swarm")
            && stderr(&out).contains("shoal node rm"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let out = cluster.nodes[0].cli(&["node", "rm", "--force", "node2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.nodes[1].cli(&["swarm", "join", "--token", "SWMTKN-1-bogus", &manager]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid join token"),
        "{}",
        stderr(&out)
    );
    let foreign = format!(
        "SWMTKN-1-{}-{}",
        "1".repeat(50),
        token.rsplit('-').next().unwrap()
    );
    let out = cluster.nodes[1].cli(&["swarm", "join", "--token", &foreign, &manager]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    // --- 2. a rotated token no longer works, the new one does
    let out = cluster.nodes[0].cli(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = cluster.join_token(0, "worker");
    assert_ne!(rotated, token);
    let out = cluster.nodes[1].cli(&["swarm", "join", "--token", &token, &manager]);
    assert!(!out.status.success(), "an old token was accepted");
    assert!(
        stderr(&out).contains("invalid join token"),
        "{}",
        stderr(&out)
    );
    let out = cluster.nodes[1].cli(&["swarm", "join", "--token", &rotated, &manager]);
    assert!(out.status.success(), "{}", stderr(&out));

    // --- 3. a plain TCP client gets no gRPC answer on 2377
    let addr = cluster.nodes[0].address;
    let reply = run_in(Path::new(&cluster.client.path()), || {
        let mut stream = TcpStream::connect((addr, 2377)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        reply
    })
    .unwrap();
    // A TLS server answers plaintext with at most an alert record (type 0x15), never HTTP/2.
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "plaintext got {reply:?}"
    );

    // What each certificate may call, RPC by RPC: `authz.rs`.
    let nodes = cluster.node_ls(0).unwrap();
    assert_eq!(node(&nodes, "node1")["availability"], "active");
}

#[test]
fn node_management_round_trips_and_survives_a_leader_change() {
    let mut cluster = Cluster::start(4);
    cluster.form_swarm(3);

    // --- 1. drain, labels, back to active
    run(
        &cluster,
        1,
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "disk=ssd",
            "--label-add",
            "rack=r1",
            "node4",
        ],
    );
    run(
        &cluster,
        2,
        &["node", "update", "--label-rm", "rack", "node4"],
    );
    let nodes = cluster.node_ls(0).unwrap();
    let n4 = node(&nodes, "node4");
    assert_eq!(n4["availability"], "drain");
    assert_eq!(n4["labels"]["disk"], "ssd");
    assert!(n4["labels"].get("rack").is_none(), "{n4}");

    // --- 2. promote node4, demote node3: each follows its new role
    run(&cluster, 0, &["node", "promote", "node4"]);
    run(&cluster, 0, &["node", "demote", "node3"]);
    wait_until(
        Duration::from_secs(15),
        "node4 a reachable manager, node3 a worker",
        || {
            let nodes = cluster.node_ls(0)?;
            let (n3, n4) = (node(&nodes, "node3"), node(&nodes, "node4"));
            let n4_info = cluster.nodes[3].try_info()?;
            let n3_info = cluster.nodes[2].try_info()?;
            if n4["manager_status"] == "reachable"
                && n3["role"] == "worker"
                && n4_info["is_manager"] == true
                && n3_info["is_manager"] == false
            {
                Ok(())
            } else {
                Err(format!("node3 {n3}, node4 {n4}"))
            }
        },
    );

    // Each holds a certificate for its new role (OU swarm-manager / swarm-worker).
    for (i, ou) in [(3, "swarm-manager"), (2, "swarm-worker")] {
        let cert = cluster.nodes[i].state_dir().join("swarm/tls/node.pem");
        let subject = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
        assert!(subject.contains(ou), "node{}: {subject}", i + 1);
    }

    // --- 3. kill the leader: everything above is still true under the new one
    cluster.nodes[0].kill();
    let nodes = wait_until(Duration::from_secs(10), "a new leader", || {
        let nodes = cluster.node_ls(1)?;
        let leader = nodes.iter().find(|n| n["manager_status"] == "leader");
        match leader {
            Some(l) if l["hostname"] != "node1" => Ok(nodes),
            _ => Err("no new leader yet".into()),
        }
    });
    let n4 = node(&nodes, "node4");
    assert_eq!(n4["role"], "manager");
    assert_eq!(n4["availability"], "drain");
    assert_eq!(n4["labels"]["disk"], "ssd");
    assert_eq!(node(&nodes, "node3")["role"], "worker");

    // --- 4. make node4 active again through the new leader
    run(
        &cluster,
        3,
        &["node", "update", "--availability", "active", "node4"],
    );
    let nodes = cluster.node_ls(1).unwrap();
    assert_eq!(node(&nodes, "node4")["availability"], "active");
}

#[test]
fn bad_input_is_one_clear_line_and_writes_nothing() {
    let cluster = Cluster::start(2);
    let n1 = &cluster.nodes[0];
    let swarm_dir = n1.state_dir().join("swarm");

    for (args, needle) in [
        (
            &["swarm", "init", "--default-addr-pool", "10.0.0.0/33"][..],
            "invalid default address pool",
        ),
        (
            &["swarm", "init", "--default-addr-pool", "banana"][..],
            "invalid default address pool",
        ),
        (
            &["swarm", "init", "--default-addr-pool-mask-length", "40"][..],
            "mask length",
        ),
        (
            &["swarm", "init", "--advertise-addr", "nonsense"][..],
            "invalid --advertise-addr",
        ),
        (&["node", "ls"][..], "not part of a swarm"),
    ] {
        let out = n1.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!swarm_dir.exists(), "{args:?} left {}", swarm_dir.display());
    }
    let out = n1.cli(&["swarm", "join", "10.0.0.1:2377"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "join without a token: {}",
        stderr(&out)
    );

    let out = n1.cli(&["swarm", "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = n1.cli(&["swarm", "init"]);
    assert!(
        stderr(&out).contains("already part of a swarm"),
        "{}",
        stderr(&out)
    );
    let out = n1.cli(&["node", "update", "--availability", "drain", "nosuchnode"]);
    assert!(
        stderr(&out).contains("node nosuchnode not found"),
        "{}",
        stderr(&out)
    );
    let out = n1.cli(&["node", "update", "--availability", "sideways", "node1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = n1.cli(&["swarm", "leave"]);
    assert!(stderr(&out).contains("last manager"), "{}", stderr(&out));
    assert_eq!(cluster.node_ls(0).unwrap().len(), 1);
}

#[test]
fn a_manager_may_not_leave_when_that_breaks_quorum() {
    let mut cluster = Cluster::start(3);
    cluster.form_swarm(3);

    // --- 1. with one manager dead, a second leaving would leave 1 of 2: refused
    cluster.nodes[2].kill();
    wait_until(Duration::from_secs(5), "node3 unreachable", || {
        let nodes = cluster.node_ls(0)?;
        let n3 = node(&nodes, "node3");
        if n3["manager_status"] == "unreachable" {
            Ok(())
        } else {
            Err(format!("{n3}"))
        }
    });
    let out = cluster.nodes[1].cli(&["swarm", "leave"]);
    assert!(!out.status.success(), "a manager left and broke quorum");
    let err = stderr(&out);
    assert!(
        err.contains("Raft quorum will be lost") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(cluster.nodes[1].info()["swarm_state"], "active");

    // --- 2. with all three up, one manager may leave: it is demoted first
    cluster.nodes[2].start();
    wait_until(Duration::from_secs(10), "node3 reachable again", || {
        let nodes = cluster.node_ls(0)?;
        let n3 = node(&nodes, "node3");
        if n3["manager_status"] == "reachable" {
            Ok(())
        } else {
            Err(format!("{n3}"))
        }
    });
    run(&cluster, 1, &["swarm", "leave"]);
    assert_eq!(cluster.nodes[1].info()["swarm_state"], "inactive");
    let nodes = cluster.node_ls(0).unwrap();
    assert_eq!(node(&nodes, "node2")["role"], "worker", "{nodes:?}");
    wait_until(Duration::from_secs(5), "node2 Down after leaving", || {
        let nodes = cluster.node_ls(0)?;
        let n2 = node(&nodes, "node2");
        if n2["status"] == "down" {
            Ok(())
        } else {
            Err(format!("{n2}"))
        }
    });
}

#[test]
fn swarm_init_and_join_listen_where_told_and_keep_it_after_a_restart() {
    let mut cluster = Cluster::start(2);
    let manager_ip = cluster.nodes[0].address.to_string();
    // Docker's rule: the advertise address takes the listen address's port.
    run(
        &cluster,
        0,
        &["swarm", "init", "--listen-addr", "0.0.0.0:2400"],
    );
    let token = cluster.join_token(0, "worker");
    // Nothing listens on 2377 now: a join there is refused, one at 2400 works.
    let wrong = cluster.nodes[1].cli(&[
        "swarm",
        "join",
        "--token",
        &token,
        &format!("{manager_ip}:2377"),
    ]);
    assert!(!wrong.status.success(), "joined through 2377");
    run(
        &cluster,
        1,
        &[
            "swarm",
            "join",
            "--token",
            &token,
            "--listen-addr",
            "0.0.0.0:2401",
            &format!("{manager_ip}:2400"),
        ],
    );
    let manager = node(&cluster.node_ls(0).unwrap(), "node1").clone();
    assert_eq!(
        manager["addr"],
        format!("{manager_ip}:2400").as_str(),
        "{manager}"
    );
    let worker = node(&cluster.node_ls(0).unwrap(), "node2").clone();
    assert_eq!(
        worker["addr"],
        format!("{}:2401", cluster.nodes[1].address).as_str(),
        "{worker}"
    );

    // SIGKILL and restart: the manager listens on 2400 again (the worker's heartbeats find
    // it there), from what init recorded rather than the agent's flag.
    cluster.nodes[0].kill();
    cluster.nodes[0].start();
    wait_until(
        Duration::from_secs(20),
        "node2 Ready after the restart",
        || {
            let nodes = cluster.node_ls(0)?;
            match node(&nodes, "node2")["status"].as_str() {
                Some("ready") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let listening = cluster.exec(0, "ss", &["-Htln", "sport = :2400"]);
    assert!(
        String::from_utf8_lossy(&listening.stdout).contains(":2400"),
        "{listening:?}"
    );
}
