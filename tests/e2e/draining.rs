//! A withdrawn task keeps the connections the load balancers gave it: scaled away, it leaves
//! the round robin of its VIP and published ports on every node (new connections go to no one
//! here: the service is scaled to 0, so they are refused), while the keep-alive connections it
//! has, through the VIP from a task and through the routing mesh from outside (also from the
//! other node, over the overlay), go on being answered by it until their clients close them;
//! then it gets its stop signal.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster,
    task_net::{http_get, tcp_connect},
    wait_until,
};

use crate::support::{create_whoami, ok, running, served_by, vip_of};

const PORT: u16 = 8080;
const PUBLISHED: u16 = 8280;

/// A kept-alive connection and the task that answered its first request.
struct Held {
    stream: TcpStream,
    task: String,
}

fn hold(netns: &Path, to: SocketAddr) -> Result<Held, String> {
    let mut stream = tcp_connect(netns, to).map_err(|e| format!("{to}: {e}"))?;
    let report = http_get(&mut stream, "/").map_err(|e| format!("{to}: {e}"))?;
    Ok(Held {
        stream,
        task: served_by(&report),
    })
}

fn refused(netns: &Path, to: SocketAddr) -> Result<(), String> {
    match tcp_connect(netns, to) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("{to}: {e}, not refused")),
        Ok(_) => Err(format!("{to}: connected")),
    }
}

fn task_states(cluster: &Cluster, service: &str) -> Vec<String> {
    let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    tasks
        .iter()
        .map(|t| t["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_withdrawn_task_keeps_its_balanced_connections_until_they_close() {
    // --- 1. two nodes, `web` on both (long grace period), a client task on node1
    let cluster = Cluster::start(2);
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
            "10.10.31.0/24",
            "drain_net",
        ],
    );
    let publish = format!("published={PUBLISHED},target={PORT}");
    create_whoami(
        &cluster,
        "web",
        PORT,
        &[
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "drain_net",
            "--publish",
            &publish,
            "--stop-grace-period",
            "60s",
        ],
    );
    create_whoami(
        &cluster,
        "client",
        PORT,
        &[
            "--network",
            "drain_net",
            "--constraint",
            "node.hostname==node1",
        ],
    );
    let tasks = running(&cluster, "web", 2);
    let client = running(&cluster, "client", 1).remove(0).netns(&cluster);
    let vip = SocketAddr::new(vip_of(&cluster, "web", "drain_net").into(), PORT);
    let outside = cluster.client_ns().path();
    let outside = Path::new(&outside);
    let node0 = SocketAddr::new(cluster.nodes[0].address.into(), PUBLISHED);

    // --- 2. keep-alive connections through the VIP and through node1's published port, until
    //        both tasks hold some (round robin: a few connections are enough)
    let mut held = Vec::new();
    wait_until(Duration::from_secs(20), "connections to both tasks", || {
        held.push(hold(&client, vip)?);
        held.push(hold(outside, node0)?);
        let served: std::collections::BTreeSet<&str> =
            held.iter().map(|h| h.task.as_str()).collect();
        if tasks.iter().all(|t| served.contains(t.id.as_str())) {
            Ok(())
        } else {
            Err(format!("served by {served:?} so far"))
        }
    });

    // --- 3. scaled to 0: withdrawn everywhere (new connections are refused on the VIP and
    //        the published port), not signalled (connections are open)
    ok(&cluster, 0, &["service", "scale", "--detach", "web=0"]);
    wait_until(Duration::from_secs(10), "new connections refused", || {
        refused(&client, vip)?;
        refused(outside, node0)
    });

    // --- 4. every held connection is still answered, by the task it had: a fixed number of
    //        requests, well past the withdrawal's spread
    for round in 0..10 {
        for h in &mut held {
            let report = http_get(&mut h.stream, "/")
                .unwrap_or_else(|e| panic!("round {round}: a held connection broke: {e}"));
            assert_eq!(served_by(&report), h.task, "round {round}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        task_states(&cluster, "web").iter().all(|s| s == "running"),
        "{:?}",
        task_states(&cluster, "web")
    );

    // --- 5. the clients close: the tasks are signalled and shut down, long before 60 s
    drop(held);
    wait_until(Duration::from_secs(30), "both tasks shut down", || {
        let states = task_states(&cluster, "web");
        if states.iter().all(|s| s == "shutdown") {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
}
