//! The Vagrantfile's provisioning, run where VMs cannot boot: `scripts/cluster/node.sh init`,
//! `join` and `check` in three node namespaces (agents started by the harness, since there is
//! no systemd to run `install`), sharing a directory as the VMs share `/vagrant`, then `curl`
//! from the outside client as the Vagrant host does; the cluster they form has 3 Ready nodes
//! and the README's published port answering on each. The Vagrantfile itself is checked with
//! `ruby -c` and must call those same steps.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use shoal_tests::{Cluster, Netns, agent::shoal_bin};

use crate::support::{ok, running, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn node_sh_in(netns: &Netns, args: &[&str]) -> Output {
    netns
        .command("bash")
        .arg(repo().join("scripts/cluster/node.sh"))
        .args(args)
        .env("SHOAL", shoal_bin())
        .output()
        .unwrap()
}

/// `scripts/cluster/node.sh ARGS...` in node `i`'s namespace, pointed at its agent.
fn node_sh(cluster: &Cluster, i: usize, args: &[&str]) -> Output {
    let mut command = cluster.node_ns(i).command("bash");
    command
        .arg(repo().join("scripts/cluster/node.sh"))
        .args(args)
        .env("SHOAL", shoal_bin())
        .env(
            "SHOAL_HOST",
            format!("unix://{}", cluster.nodes[i].socket().display()),
        );
    command.output().unwrap()
}

fn node_sh_ok(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = node_sh(cluster, i, args);
    assert!(
        out.status.success(),
        "node.sh {args:?} on node{}: {}\n{}",
        i + 1,
        stderr(&out),
        cluster.nodes[i].log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_vagrant_provisioning_forms_a_cluster_that_serves_the_published_port() {
    let cluster = Cluster::start(3);
    let shared = cluster.work_dir().join("vagrant-shared");
    let shared_arg = shared.display().to_string();
    let address = |i: usize| cluster.nodes[i].address.to_string();

    node_sh_ok(&cluster, 0, &["init", &address(0), &shared_arg]);
    for file in ["worker-token", "manager-token", "manager-addr"] {
        let content = fs::read_to_string(shared.join(file)).unwrap();
        assert!(!content.trim().is_empty(), "{file} is empty");
    }
    assert_eq!(
        fs::read_to_string(shared.join("manager-addr"))
            .unwrap()
            .trim(),
        format!("{}:2377", address(0))
    );
    // As the Vagrantfile: three managers, so `check` runs on node3.
    for i in 1..3 {
        node_sh_ok(&cluster, i, &["join", &address(i), &shared_arg, "manager"]);
    }
    // Provisioning twice (`vagrant provision`) changes nothing.
    node_sh_ok(&cluster, 0, &["init", &address(0), &shared_arg]);
    let again = node_sh_ok(&cluster, 1, &["join", &address(1), &shared_arg, "manager"]);
    assert!(again.contains("already in a swarm"), "{again}");

    let report = node_sh_ok(&cluster, 2, &["check", "3"]);
    assert!(report.contains("cluster of 3 nodes ready"), "{report}");
    // The Vagrant host's trigger: from outside the cluster, every node answers.
    let addresses: Vec<String> = (0..3).map(address).collect();
    let mut args = vec!["curl"];
    args.extend(addresses.iter().map(String::as_str));
    let out = node_sh_in(cluster.client_ns(), &args);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    for addr in &addresses {
        assert!(
            report.contains(&format!("http://{addr}:8080/ answers")),
            "{report}"
        );
    }
    let nodes = cluster.node_ls(0).unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["status"] == "ready"), "{nodes:?}");
    assert!(nodes.iter().all(|n| n["role"] == "manager"), "{nodes:?}");
    running(&cluster, "web", 2);
    assert!(ok(&cluster, 0, &["service", "ls"]).contains("web"));

    // An unknown step is refused with the usage.
    let out = node_sh(&cluster, 2, &["bogus"]);
    assert!(!out.status.success());
}

#[test]
fn the_vagrantfile_parses_and_provisions_with_the_tested_steps() {
    let vagrantfile = repo().join("Vagrantfile");
    let out = std::process::Command::new("ruby")
        .arg("-c")
        .arg(&vagrantfile)
        .output()
        .unwrap_or_else(|e| panic!("running ruby (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "ruby -c Vagrantfile: {}",
        stderr(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Syntax OK");
    let text = fs::read_to_string(&vagrantfile).unwrap();
    for step in [
        "node.sh install",
        "node.sh init",
        "node.sh join",
        "node.sh check",
    ] {
        assert!(text.contains(step), "the Vagrantfile does not run `{step}`");
    }
}
