//! Published ports, as the control plane keeps them: `-p` and `--publish`, ports allocated
//! from 30000-32767, conflicts and Docker's dnsrr rule refused in one line, `--publish-add`
//! and `--publish-rm`, the PORTS column and `service inspect`'s Endpoint.Ports, and tasks of
//! services with ingress ports attached to the `ingress` network. The data path that serves
//! the ports is tested in `mesh.rs` (end to end) and `mesh_programs.rs` (the programs).

use shoal_tests::{Cluster, agent::shoal_bin};

use crate::support::{ok, running, stderr};

fn create(cluster: &Cluster, name: &str, extra: &[&str]) -> std::process::Output {
    let bin = shoal_bin().display().to_string();
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", &bin, "whoami", "--port", "80"]);
    cluster.nodes[0].cli(&argv)
}

fn inspect(cluster: &Cluster, name: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cluster, 0, &["service", "inspect", name])).unwrap();
    all[0].clone()
}

fn ports_column(cluster: &Cluster, name: &str) -> String {
    let table = ok(cluster, 0, &["service", "ls"]);
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in\n{table}"));
    line.split_whitespace().last().unwrap().to_string()
}

#[test]
fn published_ports_are_allocated_checked_and_shown_like_docker() {
    // --- 1. a swarm with the tutorial's service: --replicas 2 -p 8080:80
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let out = create(&cluster, "my-web", &["--replicas", "2", "-p", "8080:80"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ports_column(&cluster, "my-web"), "*:8080->80/tcp");
    let web = inspect(&cluster, "my-web");
    let expected = serde_json::json!([{
        "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress",
    }]);
    assert_eq!(web["Endpoint"]["Ports"], expected, "{web}");
    assert_eq!(web["Spec"]["EndpointSpec"]["Ports"], expected);

    // --- 2. its tasks join the routing mesh's network, after their own, with a VIP there
    let ingress = inspect(&cluster, "my-web")["Endpoint"]["VirtualIPs"].clone();
    assert_eq!(ingress.as_array().map(Vec::len), Some(1), "{ingress}");
    for task in running(&cluster, "my-web", 2) {
        let ps: Vec<serde_json::Value> = serde_json::from_str(&ok(
            &cluster,
            0,
            &["service", "ps", "--format", "json", "my-web"],
        ))
        .unwrap();
        let mine = ps.iter().find(|t| t["id"] == task.id.as_str()).unwrap();
        let on: Vec<&str> = mine["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["network_name"].as_str().unwrap())
            .collect();
        assert_eq!(on, ["ingress"], "{mine}");
        assert!(task.ip.to_string().starts_with("10.255."), "{task:?}");
    }

    // --- 3. a port left open gets one from 30000-32767; the long form and UDP work
    let out = create(
        &cluster,
        "dns",
        &[
            "--publish",
            "target=53,protocol=udp",
            "--publish",
            "published=9090,target=90,mode=host",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ports_column(&cluster, "dns"),
        "*:30000->53/udp,*:9090->90/tcp"
    );

    // --- 4. refusals: one line, non-zero, nothing created
    for (name, args, expected) in [
        (
            "clash",
            vec!["-p", "8080:81"],
            "port '8080' is already in use by service 'my-web'",
        ),
        (
            "rr",
            vec!["--endpoint-mode", "dnsrr", "-p", "8081:80"],
            "port published with ingress mode can't be used with dnsrr mode",
        ),
        ("bad", vec!["-p", "8080:80/sctp"], "invalid publish"),
        ("bad2", vec!["-p", "99999:80"], "invalid publish"),
    ] {
        let out = create(&cluster, name, &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{name} must be refused");
        assert!(err.contains(expected), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line, got {err:?}");
        let ls = ok(&cluster, 0, &["service", "ls"]);
        assert!(
            !ls.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name} half-created:\n{ls}"
        );
    }
    // dnsrr with a host-mode port is fine, as in Docker.
    let out = create(
        &cluster,
        "rr-host",
        &[
            "--endpoint-mode",
            "dnsrr",
            "--publish",
            "published=9191,target=80,mode=host",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // --- 5. --publish-add and --publish-rm change the ports of the running service
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--publish-add",
            "8443:443",
            "my-web",
        ],
    );
    assert_eq!(
        ports_column(&cluster, "my-web"),
        "*:8080->80/tcp,*:8443->443/tcp"
    );
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--publish-rm",
            "80",
            "my-web",
        ],
    );
    assert_eq!(ports_column(&cluster, "my-web"), "*:8443->443/tcp");
    // The freed port can be published by another service now.
    let out = create(&cluster, "reuse", &["-p", "8080:80"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A conflicting update is refused and changes nothing.
    let out = cluster.nodes[0].cli(&[
        "service",
        "update",
        "--detach",
        "--publish-add",
        "8080:8080",
        "my-web",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already in use by service 'reuse'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ports_column(&cluster, "my-web"), "*:8443->443/tcp");
}
