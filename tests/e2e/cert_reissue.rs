//! A whole swarm powered off for longer than its certificates live: the managers re-issue
//! their own certificates from the cluster CA in their store (swarmkit's behaviour) and the
//! swarm comes back with no new join; a worker, which holds no CA key, says in one line that
//! it must join again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_control::{
    cluster::Role,
    pki::{CertInfo, NodeCredentials, cert_info, identity_of, verify_chain},
};
use shoal_tests::{Cluster, wait_until};

use crate::support::{ok, stderr};

/// The shortest lifetime shoal takes (`pki::MIN_NODE_CERT_EXPIRY`).
const EXPIRY: &str = "30s";
const MANAGERS: usize = 3;
/// node4.
const WORKER: usize = 3;
const SELF_ISSUED: &str = "node certificate expired; re-issued from the cluster CA";
const EXPIRED: &str = "node certificate expired on";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Node `i`'s saved credentials (`<state>/swarm/tls/`) and its certificate.
fn creds(cluster: &Cluster, i: usize) -> Result<(NodeCredentials, CertInfo), String> {
    let creds = NodeCredentials::load(&cluster.nodes[i].state_dir().join("swarm"))
        .map_err(|e| format!("node{}: {e}", i + 1))?
        .ok_or_else(|| format!("node{}: no credentials", i + 1))?;
    let cert = cert_info(&creds.cert_pem).map_err(|e| e.to_string())?;
    Ok((creds, cert))
}

fn log_of(cluster: &Cluster, i: usize) -> String {
    std::fs::read_to_string(cluster.nodes[i].log_path()).unwrap_or_default()
}

/// The three managers Ready and reachable, one of them the leader; the worker as `worker`.
fn managers_back(cluster: &Cluster, worker: &str) -> Result<(), String> {
    let nodes = cluster.node_ls(0)?;
    let managers_ready = nodes
        .iter()
        .filter(|n| n["role"] == "manager" && n["status"] == "ready")
        .count();
    let leaders = nodes
        .iter()
        .filter(|n| n["manager_status"] == "leader")
        .count();
    let reachable = nodes
        .iter()
        .filter(|n| n["manager_status"] == "reachable" || n["manager_status"] == "leader")
        .count();
    let worker_status = nodes
        .iter()
        .find(|n| n["role"] == "worker")
        .map(|n| n["status"].clone());
    if managers_ready == MANAGERS
        && leaders == 1
        && reachable == MANAGERS
        && worker_status.as_ref().is_some_and(|s| s == worker)
    {
        Ok(())
    } else {
        Err(format!("{nodes:?}"))
    }
}

#[test]
fn managers_re_issue_their_expired_certificates_and_the_swarm_comes_back() {
    let mut cluster = Cluster::start(MANAGERS + 1);

    // --- 1. three managers and a worker, certificates living 30 s
    let init = cluster.nodes[0].cli(&["swarm", "init", "--cert-expiry", EXPIRY]);
    assert!(init.status.success(), "swarm init: {}", stderr(&init));
    let leader = format!("{}:2377", cluster.nodes[0].address);
    for i in 1..=MANAGERS {
        let role = if i < MANAGERS { "manager" } else { "worker" };
        let token = cluster.join_token(0, role);
        ok(&cluster, i, &["swarm", "join", "--token", &token, &leader]);
    }
    wait_until(Duration::from_secs(30), "every member Ready", || {
        managers_back(&cluster, "ready")
    });
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();

    // --- 2. every agent stopped (SIGTERM) until every certificate has expired
    for node in &mut cluster.nodes {
        node.stop();
    }
    let before: Vec<CertInfo> = (0..=MANAGERS)
        .map(|i| creds(&cluster, i).unwrap().1)
        .collect();
    let last_expiry = before.iter().map(|c| c.not_after).max().unwrap();
    wait_until(
        Duration::from_secs(45),
        "every certificate to expire",
        || {
            if now_secs() > last_expiry + 1 {
                Ok(())
            } else {
                Err(format!("the last expires at {last_expiry}"))
            }
        },
    );

    // --- 3. all started again: the managers come back with a leader, the worker is Down
    for node in &mut cluster.nodes {
        node.start();
    }
    wait_until(
        Duration::from_secs(60),
        "the managers Ready with a leader",
        || managers_back(&cluster, "down"),
    );

    // --- 4. each manager re-issued its own certificate, same ID and role, from the root
    let now = now_secs();
    for i in 0..MANAGERS {
        let (creds, cert) = creds(&cluster, i).unwrap();
        assert!(
            cert.not_after > now && cert.fingerprint != before[i].fingerprint,
            "node{}: {cert:?}, before {:?}",
            i + 1,
            before[i]
        );
        // At most the configured lifetime (a tenth of it backdated).
        assert!(
            cert.not_after - cert.not_before <= 33,
            "node{}: {cert:?}",
            i + 1
        );
        let leaf = identity_of(&creds.cert_pem).unwrap();
        assert_eq!(leaf.node_id, ids[i], "node{}", i + 1);
        assert_eq!(leaf.role, Role::Manager, "node{}", i + 1);
        verify_chain(&creds.cert_pem, &creds.ca_cert_pem).unwrap();
        let log = log_of(&cluster, i);
        assert_eq!(
            log.matches(SELF_ISSUED).count(),
            1,
            "node{}: {}",
            i + 1,
            cluster.nodes[i].log_tail()
        );
        assert!(!log.contains(EXPIRED), "node{}: {log}", i + 1);
    }

    // --- 5. Raft writes work, through every manager
    for i in 0..MANAGERS {
        let name = format!("after-{}", i + 1);
        ok(
            &cluster,
            i,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                &name,
                "--replicas",
                "0",
                "--",
                "true",
            ],
        );
    }
    let services = ok(&cluster, 2, &["service", "ls", "--format", "json"]);
    let services: Vec<serde_json::Value> = serde_json::from_str(&services).unwrap();
    assert_eq!(services.len(), MANAGERS, "{services:?}");

    // --- 6. the worker cannot: one line telling it to join again, logged once
    let out = cluster.nodes[WORKER].cli(&["node", "ls"]);
    assert!(!out.status.success());
    let line = stderr(&out);
    let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
    assert!(
        line.starts_with(EXPIRED) && line.contains("join it again") && !line.contains('\n'),
        "{line}"
    );
    let log = log_of(&cluster, WORKER);
    assert_eq!(log.matches(EXPIRED).count(), 1, "{log}");
    assert!(!log.contains(SELF_ISSUED), "{log}");

    // --- 7. the managers then get certificates from the leader, which records them
    wait_until(
        Duration::from_secs(30),
        "each manager's self-issued certificate replaced by the leader's",
        || {
            for i in 0..MANAGERS {
                let log = log_of(&cluster, i);
                let after = log.split(SELF_ISSUED).nth(1).unwrap_or_default();
                if !after.contains("node certificate renewed") {
                    return Err(format!("node{} has not renewed yet", i + 1));
                }
            }
            Ok(())
        },
    );
}
