//! Secrets and configs on real nodes: `secret|config create | ls | inspect | rm` with Docker's
//! columns, shapes and messages; a service on node2 finds its secrets on a tmpfs of its own at
//! /run/secrets and its config at its target, read-only, owners and modes as asked; nothing of
//! the secret on either node's disk (node1's Raft store is sealed); objects in use refused;
//! `--secret-add` / `--secret-rm`; and a worker's certificate gets the files of its own tasks
//! and nothing else.
//!
//! Every node of the fixture shares the host's filesystem: the config's target is a file of
//! the work dir, and each node's own directory (state, logs) is what "its disk" means here.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use shoal_control::api::{HeartbeatRequest, ObjectRef, cluster_client::ClusterClient};
use shoal_dataplane::netns::run_in;
use shoal_tests::{Cluster, agent::shoal_bin};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

use crate::{
    authz::{node_identity, tls_with},
    support::{ok, running, stderr},
};

const SECRET: &[u8] = b"correct-horse-battery-staple-42";
const API_KEY: &[u8] = b"api-key-from-stdin-7f3k2m9q";
const CONFIG: &[u8] = b"listen = 8080\nworkers = 4\n";

/// Runs the CLI on node `i` with `input` on its STDIN.
fn with_stdin(cluster: &Cluster, i: usize, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", cluster.nodes[i].socket().display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the CLI on node `i` and asserts it fails with one stderr line holding `needle`.
fn refused(cluster: &Cluster, i: usize, args: &[&str], needle: &str) {
    let out = cluster.nodes[i].cli(args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
}

/// Runs `argv` in the task with `shoal exec` on node1 (relayed to the task's node).
fn exec(cluster: &Cluster, task: &str, argv: &[&str]) -> Output {
    let mut args = vec!["exec", task, "--"];
    args.extend_from_slice(argv);
    cluster.nodes[0].cli(&args)
}

fn exec_ok(cluster: &Cluster, task: &str, argv: &[&str]) -> String {
    let out = exec(cluster, task, argv);
    assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Regular files under `dir` holding `needle` (namespace files and sockets are skipped).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if kind.is_file()
            && fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

/// Node `i`'s own directory: its state dir, socket and log.
fn node_dir(cluster: &Cluster, i: usize) -> PathBuf {
    cluster.nodes[i].state_dir().parent().unwrap().to_path_buf()
}

fn inspect(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let out = ok(cluster, 0, args);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1, "{out}");
    all[0].clone()
}

fn has(haystack: &str, needle: &[u8]) -> bool {
    haystack.contains(std::str::from_utf8(needle).unwrap())
}

#[test]
fn secrets_and_configs_reach_their_tasks_only_and_never_a_disk() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let inputs = cluster.work_dir().join("inputs");
    fs::create_dir_all(&inputs).unwrap();
    let secret_file = inputs.join("db-password.txt");
    fs::write(&secret_file, SECRET).unwrap();
    let secret_path = secret_file.display().to_string();

    // --- 1. a secret from a file, a secret and a config from STDIN
    let secret_id = ok(
        &cluster,
        0,
        &[
            "secret",
            "create",
            "--label",
            "env=test",
            "db-password",
            &secret_path,
        ],
    );
    assert_eq!(secret_id.len(), 25, "{secret_id}");
    let out = with_stdin(&cluster, 0, &["secret", "create", "api-key", "-"], API_KEY);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_stdin(&cluster, 0, &["config", "create", "app.conf", "-"], CONFIG);
    assert!(out.status.success(), "{}", stderr(&out));
    let config_id = stdout(&out);

    // --- 2. bad input: one line, a non-zero exit, nothing created
    refused(
        &cluster,
        0,
        &["secret", "create", "db-password", &secret_path],
        "secret db-password already exists",
    );
    refused(
        &cluster,
        0,
        &["secret", "create", "bad_", &secret_path],
        "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end \
         character must be [a-zA-Z0-9]",
    );
    let empty = inputs.join("empty");
    fs::write(&empty, b"").unwrap();
    let big = inputs.join("big");
    fs::write(&big, vec![b'x'; 600 * 1024]).unwrap();
    for file in [&empty, &big] {
        refused(
            &cluster,
            0,
            &["secret", "create", "sized", &file.display().to_string()],
            "secret data must be larger than 0 and less than 512000 bytes",
        );
    }
    refused(
        &cluster,
        0,
        &["config", "create", "nofile", "/nonexistent/shoal.conf"],
        "reading /nonexistent/shoal.conf",
    );
    refused(
        &cluster,
        0,
        &[
            "service", "create", "--name", "x", "--secret", "nosuch", "--", "sleep", "1",
        ],
        "secret not found: nosuch",
    );
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--name",
            "x",
            "--config",
            "src=app.conf,mode=rw",
            "--",
            "true",
        ],
        "invalid mode specified",
    );
    assert_eq!(ok(&cluster, 0, &["secret", "ls", "-q"]).lines().count(), 2);
    assert_eq!(ok(&cluster, 0, &["config", "ls", "-q"]), config_id);
    assert_eq!(ok(&cluster, 0, &["service", "ls", "-q"]), "");

    // --- 3. ls and inspect, Docker's columns and shapes; a secret's data is never shown
    let ls = ok(&cluster, 0, &["secret", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    for (line, words) in lines.iter().zip([
        &["ID", "NAME", "DRIVER", "CREATED", "UPDATED"][..],
        &["api-key"][..],
        &["db-password"][..],
    ]) {
        for word in words {
            assert!(line.contains(word), "{word} not in {line:?}");
        }
    }
    assert!(
        ok(&cluster, 0, &["config", "ls"]).starts_with("ID "),
        "config ls has Docker's header"
    );
    let shown = inspect(&cluster, &["secret", "inspect", "db-password"]);
    assert_eq!(shown["ID"], secret_id.as_str());
    assert_eq!(
        shown["Spec"],
        serde_json::json!({ "Name": "db-password", "Labels": { "env": "test" } })
    );
    for args in [
        &["secret", "inspect", "db-password", "api-key"][..],
        &["secret", "inspect", "--pretty", "db-password"][..],
        &["secret", "ls", "--format", "json"][..],
    ] {
        let out = ok(&cluster, 0, args);
        assert!(!has(&out, SECRET) && !has(&out, API_KEY), "{args:?}: {out}");
    }
    let config = inspect(&cluster, &["config", "inspect", "app.conf"]);
    assert_eq!(
        config["Spec"]["Data"],
        "bGlzdGVuID0gODA4MAp3b3JrZXJzID0gNAo="
    );
    assert!(
        ok(&cluster, 0, &["config", "inspect", "--pretty", "app.conf"]).ends_with("workers = 4")
    );

    // --- 4. a service on node2 with both, custom targets, owners and modes
    let target = inputs.join("app.conf");
    fs::write(&target, b"the host's own\n").unwrap();
    let target = target.display().to_string();
    let config_flag = format!("source=app.conf,target={target},mode=0440");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--name",
            "vault",
            "--constraint",
            "node.hostname==node2",
            "--secret",
            "source=db-password,target=db.pw,uid=1000,gid=1000,mode=0400",
            "--secret",
            "api-key",
            "--config",
            &config_flag,
            "--",
            "sleep",
            "600",
        ],
    );
    let task = running(&cluster, "vault", 1).remove(0);
    assert_eq!(task.node, 1, "placed on node2");
    assert_eq!(
        exec(&cluster, &task.id, &["cat", "/run/secrets/db.pw"]).stdout,
        SECRET
    );
    assert_eq!(
        exec(&cluster, &task.id, &["cat", "/run/secrets/api-key"]).stdout,
        API_KEY
    );
    assert_eq!(exec(&cluster, &task.id, &["cat", &target]).stdout, CONFIG);
    assert_eq!(
        exec_ok(
            &cluster,
            &task.id,
            &[
                "stat",
                "-c",
                "%a %u %g",
                "/run/secrets/db.pw",
                "/run/secrets/api-key",
                &target
            ],
        ),
        "400 1000 1000\n444 0 0\n440 0 0\n"
    );
    assert_eq!(
        exec_ok(
            &cluster,
            &task.id,
            &["stat", "-f", "-c", "%T", "/run/secrets"]
        ),
        "tmpfs\n"
    );
    let mountinfo = exec_ok(&cluster, &task.id, &["cat", "/proc/self/mountinfo"]);
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/run/secrets"))
        .unwrap_or_else(|| panic!("no mount on /run/secrets:\n{mountinfo}"));
    assert!(line.split(' ').nth(5).unwrap().starts_with("ro,"), "{line}");
    let out = exec(
        &cluster,
        &task.id,
        &["sh", "-c", "echo x > /run/secrets/new"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // The host's file under the config is untouched, and the host has no secret.
    assert_eq!(fs::read(&target).unwrap(), b"the host's own\n");
    assert!(!Path::new("/run/secrets/db.pw").exists());

    // --- 5. service inspect shows the references, never the data
    let service = inspect(&cluster, &["service", "inspect", "vault"]);
    let container = &service["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        container["Secrets"][0],
        serde_json::json!({
            "File": { "Name": "db.pw", "UID": "1000", "GID": "1000", "Mode": 256 },
            "SecretID": secret_id,
            "SecretName": "db-password",
        })
    );
    assert_eq!(container["Secrets"][1]["File"]["Name"], "api-key");
    assert_eq!(container["Secrets"][1]["File"]["Mode"], 0o444);
    assert_eq!(container["Configs"][0]["ConfigName"], "app.conf");
    assert_eq!(container["Configs"][0]["File"]["Name"], target.as_str());
    let pretty = ok(&cluster, 0, &["service", "inspect", "--pretty", "vault"]);
    assert!(
        pretty.contains(" Secrets:\n  Target:\tdb.pw\n   Source:\tdb-password"),
        "{pretty}"
    );

    // --- 6. nothing of the secrets on either node's disk: node1 (the manager, whose Raft
    // store holds them, sealed) and node2 (which runs the task)
    assert!(
        cluster.nodes[0]
            .state_dir()
            .join("swarm/raft.redb")
            .is_file()
    );
    for i in [0, 1] {
        for needle in [SECRET, API_KEY] {
            let found = files_holding(&node_dir(&cluster, i), needle);
            assert!(found.is_empty(), "node{}: in the clear in {found:?}", i + 1);
        }
    }

    // --- 7. objects in use are refused; --secret-rm and --secret-add change the task's files
    refused(
        &cluster,
        0,
        &["secret", "rm", "db-password"],
        "secret 'db-password' is in use by the following service: vault",
    );
    refused(
        &cluster,
        0,
        &["config", "rm", "app.conf"],
        "config 'app.conf' is in use by the following service: vault",
    );
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--secret-rm",
            "api-key",
            "--secret-add",
            "source=db-password,target=sub/again.pw",
            "vault",
        ],
    );
    let updated = running(&cluster, "vault", 1).remove(0);
    assert_ne!(updated.id, task.id, "the task was replaced");
    assert_eq!(
        exec(&cluster, &updated.id, &["cat", "/run/secrets/sub/again.pw"]).stdout,
        SECRET
    );
    let out = exec(&cluster, &updated.id, &["ls", "/run/secrets"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "db.pw\nsub\n");
    assert_eq!(ok(&cluster, 0, &["secret", "rm", "api-key"]), "api-key");
    ok(&cluster, 0, &["service", "rm", "vault"]);
    assert_eq!(
        ok(&cluster, 0, &["secret", "rm", "db-password"]),
        "db-password"
    );
    assert_eq!(ok(&cluster, 0, &["config", "rm", "app.conf"]), "app.conf");
    assert_eq!(ok(&cluster, 0, &["secret", "ls", "-q"]), "");
    refused(
        &cluster,
        0,
        &["secret", "rm", "db-password"],
        "secret db-password not found",
    );
}

/// A client on 2377 with node `i`'s certificate.
async fn as_node(cluster: &Cluster, i: usize) -> ClusterClient<Channel> {
    let ca = fs::read_to_string(cluster.nodes[0].state_dir().join("swarm/tls/ca.pem")).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}:2377", cluster.nodes[0].address))
        .unwrap()
        // Nodes name their API version on 2377; a caller naming none is refused.
        .user_agent(shoal_control::version::user_agent())
        .unwrap()
        .tls_config(tls_with(&ca, Some(node_identity(cluster, i))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ClusterClient::new(channel)
}

#[test]
fn a_workers_certificate_gets_its_own_tasks_files_and_nothing_else() {
    const MINE: &[u8] = b"for-node2-tasks-only-3e9a";
    const THEIRS: &[u8] = b"for-node1-tasks-only-b71c";
    let mut cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let node1 = cluster.nodes[0].node_id();
    let node2 = cluster.nodes[1].node_id();
    for (name, data) in [("mine", MINE), ("theirs", THEIRS)] {
        let out = with_stdin(&cluster, 0, &["secret", "create", name, "-"], data);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // --- 1. node2's agent stops; this test speaks with its certificate from now on, so node2
    // stays Ready and what the leader sends it is what the test sees
    cluster.nodes[1].kill();
    let (denied, replies) = run_in(Path::new(&cluster.client.path()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = as_node(&cluster, 1).await;
            let beat = |node_id: &str| HeartbeatRequest {
                node_id: node_id.to_string(),
                // An empty list, as a framed document (`shoal_control::format`): no reports.
                task_reports: shoal_control::format::encode(&Vec::<String>::new()).unwrap(),
                ..Default::default()
            };
            // Not for another node, and no secret through the API.
            let mut denied = vec![client.heartbeat(beat(&node1)).await.unwrap_err().code()];
            let inspect = ObjectRef {
                reference: "theirs".into(),
            };
            denied.push(client.inspect_secret(inspect).await.unwrap_err().code());
            denied.push(
                client
                    .list_secrets(shoal_control::api::Empty {})
                    .await
                    .unwrap_err()
                    .code(),
            );

            // --- 2. a service for each node, each with its secret; node2's heartbeats carry
            // the data of its own task's secret (its task is never started: nobody runs it)
            for (name, node, secret) in [("there", "node1", "theirs"), ("here", "node2", "mine")] {
                let constraint = format!("node.hostname=={node}");
                let args = [
                    "service",
                    "create",
                    "-d",
                    "--name",
                    name,
                    "--constraint",
                    &constraint,
                    "--secret",
                    secret,
                    "--",
                    "sleep",
                    "600",
                ];
                let out = cluster.nodes[0].cli(&args);
                assert!(out.status.success(), "{}", stderr(&out));
            }
            let mut replies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let reply = client.heartbeat(beat(&node2)).await.unwrap().into_inner();
                let seen = contains(&reply.task_files, MINE);
                replies.push(reply.task_files);
                if seen {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (denied, replies)
        })
    })
    .unwrap();
    assert_eq!(denied, [Code::PermissionDenied; 3]);
    assert!(
        replies.iter().any(|r| contains(r, MINE)),
        "node2 never got its own task's secret in {} heartbeat answers",
        replies.len()
    );
    assert!(
        !replies.iter().any(|r| contains(r, THEIRS)),
        "node2 got the secret of node1's task"
    );
    // node1 runs its task with its secret.
    let there = running(&cluster, "there", 1).remove(0);
    assert_eq!(there.node, 0);
    assert_eq!(
        exec(&cluster, &there.id, &["cat", "/run/secrets/theirs"]).stdout,
        THEIRS
    );
}

/// Whether a heartbeat answer's `task_files` (a framed CBOR document, in which a file's bytes
/// are an array of numbers, not a run of bytes to search) carries a file holding `data`.
fn contains(task_files: &[u8], data: &[u8]) -> bool {
    let files: shoal_control::cluster::objects::TaskFiles =
        shoal_control::format::decode(task_files).unwrap();
    files
        .secrets
        .values()
        .chain(files.configs.values())
        .any(|f| f.as_bytes() == data)
}
