//! Autolock on a real manager: `swarm init --autolock`, a SIGKILLed manager that comes back
//! locked (nothing in the clear on its disk), `swarm unlock` with a wrong and the right key,
//! `unlock-key --rotate`, and `swarm update --autolock=false`.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use shoal_tests::{Cluster, agent::shoal_bin, wait_until};

const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
                      Please use \"shoal swarm unlock\" to unlock it.";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the CLI on node `i`, asserts it succeeded, and returns its stdout.
fn ok(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = cluster.nodes[i].cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `shoal swarm unlock` on node `i`, the key on stdin.
fn unlock(cluster: &Cluster, i: usize, key: &str) -> Output {
    let mut child = Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", cluster.nodes[i].socket().display()))
        .args(["swarm", "unlock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    child.wait_with_output().unwrap()
}

fn swarm_state(cluster: &Cluster, i: usize) -> String {
    cluster.nodes[i].info()["swarm_state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// SIGKILL node `i` and start it again.
fn crash_and_restart(cluster: &mut Cluster, i: usize) {
    cluster.nodes[i].kill();
    cluster.nodes[i].start();
}

/// Asserts that node `i` is locked and refuses cluster calls with Docker's words.
fn assert_locked(cluster: &Cluster, i: usize) {
    assert_eq!(swarm_state(cluster, i), "locked");
    let info = ok(cluster, i, &["info"]);
    assert!(info.contains("Swarm: locked"), "{info}");
    for args in [&["service", "ls"][..], &["node", "ls"]] {
        let out = cluster.nodes[i].cli(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} while locked: {err}");
        assert!(err.contains(LOCKED), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Waits until node `i` serves the cluster again and lists `service`.
fn wait_for_service(cluster: &Cluster, i: usize, service: &str) {
    wait_until(
        Duration::from_secs(20),
        "service ls to list the service",
        || {
            let out = cluster.nodes[i].cli(&["service", "ls"]);
            if out.status.success() && stdout(&out).contains(service) {
                Ok(())
            } else {
                Err(format!("{}{}", stdout(&out), stderr(&out)))
            }
        },
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[test]
fn a_locked_manager_keeps_its_secrets_until_unlocked() {
    let mut cluster = Cluster::start(1);

    // --- 1. init with autolock: the key and Docker's advice are printed
    let init = ok(&cluster, 0, &["swarm", "init", "--autolock"]);
    assert!(init.contains("shoal swarm unlock"), "{init}");
    assert!(init.contains("password manager"), "{init}");
    let key = init
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {init}"))
        .to_string();
    assert_eq!(ok(&cluster, 0, &["swarm", "unlock-key", "-q"]), key);
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "vault",
            "--replicas",
            "0",
            "--",
            "true",
        ],
    );

    // --- 2. SIGKILL and restart: locked
    crash_and_restart(&mut cluster, 0);
    assert_locked(&cluster, 0);

    // --- 3. nothing secret in the clear on disk
    let swarm_dir = cluster.nodes[0].state_dir().join("swarm");
    let files = files_under(&swarm_dir);
    for name in ["raft.redb", "raft-dek.json", "node-key.pem"] {
        assert!(
            files.iter().any(|(path, _)| path.ends_with(name)),
            "no {name} under {}",
            swarm_dir.display()
        );
    }
    for (path, bytes) in &files {
        if path.ends_with(".pem") && !path.ends_with("node-key.pem") {
            continue; // certificates are public
        }
        for needle in [&b"PRIVATE KEY"[..], b"BEGIN ", key.as_bytes()] {
            assert!(
                !contains(bytes, needle),
                "{path} holds {:?} in the clear",
                String::from_utf8_lossy(needle)
            );
        }
    }

    // --- 4. a wrong key is refused and changes nothing; the right one unlocks
    let wrong = unlock(
        &cluster,
        0,
        "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let err = stderr(&wrong);
    assert!(!wrong.status.success(), "a wrong key unlocked: {err}");
    assert!(err.contains("invalid unlock key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let garbage = unlock(&cluster, 0, "not-a-key");
    assert!(!garbage.status.success());
    assert!(
        stderr(&garbage).contains("invalid unlock key"),
        "{}",
        stderr(&garbage)
    );
    assert_locked(&cluster, 0);
    let right = unlock(&cluster, 0, &key);
    assert!(right.status.success(), "unlock: {}", stderr(&right));
    assert_eq!(swarm_state(&cluster, 0), "active");
    wait_for_service(&cluster, 0, "vault");

    // --- 5. rotate: after a restart the old key is refused, the new one works
    let rotated = ok(&cluster, 0, &["swarm", "unlock-key", "--rotate"]);
    assert!(
        rotated.contains("Successfully rotated manager unlock key"),
        "{rotated}"
    );
    let new_key = ok(&cluster, 0, &["swarm", "unlock-key", "-q"]);
    assert_ne!(new_key, key);
    // The manager re-seals its data key when it sees the new key in its store.
    wait_until(Duration::from_secs(10), "the data key re-sealed", || {
        let log = std::fs::read_to_string(cluster.nodes[0].log_path()).unwrap_or_default();
        if log.matches("data key re-sealed").count() >= 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    crash_and_restart(&mut cluster, 0);
    assert_locked(&cluster, 0);
    let old = unlock(&cluster, 0, &key);
    assert!(!old.status.success(), "the old key still unlocks");
    assert!(
        stderr(&old).contains("invalid unlock key"),
        "{}",
        stderr(&old)
    );
    let new = unlock(&cluster, 0, &new_key);
    assert!(
        new.status.success(),
        "unlock with the new key: {}",
        stderr(&new)
    );
    wait_for_service(&cluster, 0, "vault");

    // --- 6. autolock off: a restart comes back unlocked, without a key
    let updated = ok(&cluster, 0, &["swarm", "update", "--autolock=false"]);
    assert!(updated.contains("Swarm updated."), "{updated}");
    wait_until(Duration::from_secs(10), "the data key in the clear", || {
        let dek = std::fs::read_to_string(swarm_dir.join("raft-dek.json")).unwrap_or_default();
        if dek.contains("\"plain\"") {
            Ok(())
        } else {
            Err(dek)
        }
    });
    crash_and_restart(&mut cluster, 0);
    assert_eq!(swarm_state(&cluster, 0), "active");
    wait_for_service(&cluster, 0, "vault");
    let none = cluster.nodes[0].cli(&["swarm", "unlock-key"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("no unlock key is set"),
        "{}",
        stderr(&none)
    );
    // Still sealed with the data key at rest, autolock or not.
    let redb = std::fs::read(swarm_dir.join("raft.redb")).unwrap();
    assert!(
        !contains(&redb, b"PRIVATE KEY"),
        "raft.redb holds a key in the clear"
    );
}

#[test]
fn a_worker_is_ready_again_once_its_locked_manager_is_unlocked() {
    let mut cluster = Cluster::start(2);
    let init = ok(&cluster, 0, &["swarm", "init", "--autolock"]);
    let key = init
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {init}"))
        .to_string();
    let token = cluster.join_token(0, "worker");
    let manager = format!("{}:2377", cluster.nodes[0].address);
    ok(&cluster, 1, &["swarm", "join", "--token", &token, &manager]);
    let node2_ready = |cluster: &Cluster| -> Result<(), String> {
        let nodes = cluster.node_ls(0)?;
        let node2 = nodes
            .iter()
            .find(|n| n["hostname"] == "node2")
            .ok_or("no node2")?;
        match node2["status"].as_str() {
            Some("ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    wait_until(Duration::from_secs(10), "node2 Ready", || {
        node2_ready(&cluster)
    });

    // The only manager restarts locked, and stays locked for longer than the heartbeat
    // grace: the worker's heartbeats fail meanwhile.
    crash_and_restart(&mut cluster, 0);
    assert_locked(&cluster, 0);
    std::thread::sleep(Duration::from_secs(5));
    let right = unlock(&cluster, 0, &key);
    assert!(right.status.success(), "unlock: {}", stderr(&right));
    wait_until(
        Duration::from_secs(20),
        "node2 Ready after the unlock",
        || node2_ready(&cluster),
    );
}
