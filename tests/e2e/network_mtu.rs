//! A network's MTU: `--opt com.docker.network.driver.mtu=N` sets it on that network's bridge,
//! VXLAN device and task interfaces while another network on the same node keeps the default
//! (the underlay's minus 50), shown in `network inspect`'s Options; invalid values are refused
//! in one line and create nothing; the Engine API's `docker network create --opt` keeps it.

use std::{path::Path, process::Command};

use shoal_tests::{Cluster, agent::shoal_bin, task_net::sandbox_netns};

use crate::support::{docker_ok, network_id, ok, running, stderr};

const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// `ip -o link` in `netns`: (name, MTU) of each link but `lo`.
fn link_mtus(netns: &Path) -> Vec<(String, u32)> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-o", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip link: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?.split('@').next()?.to_string();
            let mtu = line
                .split(" mtu ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            (name != "lo").then_some((name, mtu))
        })
        .collect()
}

fn inspect(cluster: &Cluster, name: &str) -> serde_json::Value {
    let out = ok(cluster, 0, &["network", "inspect", name]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all.into_iter().next().unwrap()
}

#[test]
fn a_networks_mtu_option_sets_its_interfaces_and_bad_values_are_refused() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);

    // --- 1. one network at MTU 1300 (and an option shoal only keeps), one at the default
    let opt = format!("{MTU_OPTION}=1300");
    ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--opt",
            &opt,
            "-o",
            "x.keep=me",
            "small",
        ],
    );
    ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "plain"],
    );
    let small = inspect(&cluster, "small");
    assert_eq!(small["Options"][MTU_OPTION], "1300", "{small}");
    assert_eq!(small["Options"]["x.keep"], "me", "{small}");
    assert_eq!(
        small["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4097",
        "{small}"
    );
    let plain = inspect(&cluster, "plain");
    assert!(plain["Options"].get(MTU_OPTION).is_none(), "{plain}");

    // --- 2. a task on both: eth0 (small) at 1300, eth1 (plain) at the underlay's 1500 - 50
    let bin = shoal_bin().display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "m",
            "--network",
            "small",
            "--network",
            "plain",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    );
    let task = &running(&cluster, "m", 1)[0];
    let in_task = link_mtus(&task.netns(&cluster));
    for want in [("eth0", 1300), ("eth1", 1450)] {
        assert!(
            in_task.contains(&(want.0.to_string(), want.1)),
            "{want:?} in the task: {in_task:?}"
        );
    }
    // What the task itself reads.
    let exec = ok(
        &cluster,
        0,
        &["exec", &task.id, "--", "ip", "-o", "link", "show", "eth0"],
    );
    assert!(exec.contains(" mtu 1300 "), "{exec}");
    let state = cluster.nodes[0].state_dir();
    for (network, mtu) in [("small", 1300), ("plain", 1450)] {
        let links = link_mtus(&sandbox_netns(&state, &network_id(&cluster, network)));
        for name in ["br0", "vxlan0"] {
            assert!(
                links.iter().any(|(n, m)| n == name && *m == mtu),
                "{network}: {name} at {mtu} in {links:?}"
            );
        }
        // The task's sandbox end too.
        assert!(
            links
                .iter()
                .filter(|(n, _)| n != "br0" && n != "vxlan0")
                .all(|(_, m)| *m == mtu),
            "{network}: every port at {mtu}: {links:?}"
        );
    }

    // --- 3. invalid values: one line, non-zero exit, nothing created
    for (value, needle) in [
        ("abc", "invalid MTU number \"abc\""),
        ("20", "invalid MTU number 20"),
        ("65536", "invalid MTU number 65536"),
        ("", "invalid MTU number \"\""),
    ] {
        let opt = format!("{MTU_OPTION}={value}");
        let out = cluster.nodes[0].cli(&["network", "create", "--opt", &opt, "bad"]);
        assert!(!out.status.success(), "{value:?} accepted");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{value:?}: {err}");
        assert!(err.contains(needle), "{value:?}: {err}");
    }
    let out = cluster.nodes[0].cli(&["network", "inspect", "bad"]);
    assert!(!out.status.success(), "a refused network exists");
    let ls = ok(&cluster, 0, &["network", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 3, "ingress, small, plain: {ls}");

    // --- 4. the Engine API: docker network create --opt, shown by docker network inspect
    let opt = format!("{MTU_OPTION}=1400");
    docker_ok(
        &cluster,
        0,
        &["network", "create", "--opt", &opt, "-d", "overlay", "x"],
    );
    let options = docker_ok(
        &cluster,
        0,
        &["network", "inspect", "--format", "{{json .Options}}", "x"],
    );
    let options: serde_json::Value = serde_json::from_str(&options).unwrap();
    assert_eq!(options[MTU_OPTION], "1400", "{options}");
    // And a bad one through it is refused, in one line.
    let out = crate::support::docker(
        &cluster,
        0,
        &[
            "network",
            "create",
            "--opt",
            &format!("{MTU_OPTION}=abc"),
            "-d",
            "overlay",
            "y",
        ],
    );
    assert!(!out.status.success(), "docker: abc accepted");
    assert!(
        stderr(&out).contains("invalid MTU number"),
        "{}",
        stderr(&out)
    );
}
