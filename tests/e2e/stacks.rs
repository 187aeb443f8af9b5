//! Compose stacks on a real cluster: a three-service file (a front published on 8080, HAProxy
//! with its configuration from a stack config, in front of an API with 3 replicas; a backing
//! service with a volume; a secret, two networks) deployed, reached through every node's mesh
//! (front -> api by its short name) and by short names inside the stack, re-deployed with one
//! change (only that service's tasks restart), pruned, and removed without touching another
//! stack; bad files refused before anything is created.
//!
//! Tasks have no image: a volume's or config's target is a path of the node, covered in the
//! task's view only, so the file puts them under the test's work dir.

use std::{collections::BTreeSet, fs, net::SocketAddr, path::Path, time::Duration};

use shoal_tests::{Cluster, agent::shoal_bin, task_net::http_from, wait_until};

use crate::support::{Placed, ids, ok, running, served_by, stderr};

/// The stack file: `{shoal}` is the binary the tasks run, `{dir}` the stack's directory,
/// `{db_env}` a value of the backing service that the re-deploy changes.
const STACK: &str = r#"
services:
  front:
    image: haproxy
    command: ["{haproxy}", "-db", "-f", "{dir}/front.conf.target"]
    ports:
      - "8080:80"
    networks: [public, internal]
    configs:
      - source: front_conf
        target: {dir}/front.conf.target
  api:
    image: shoal/whoami
    command: ["{shoal}", "whoami", "--port", "80"]
    environment:
      LEVEL: ${LEVEL:-info}
      FROM_DOTENV: ${FROM_DOTENV}
    networks: [internal]
    secrets: [db_password]
    deploy:
      replicas: 3
  db:
    image: shoal/whoami
    command: ["{shoal}", "whoami", "--port", "5432"]
    environment:
      GENERATION: "{db_env}"
    volumes:
      - db_data:{dir}/db-mount
    networks: [internal]
    secrets:
      - source: db_password
        target: password
        mode: 0400
networks:
  public: {}
  internal: {}
volumes:
  db_data: {}
secrets:
  db_password:
    file: ./db_password.txt
configs:
  front_conf:
    file: ./front.conf
"#;

/// The front's HAProxy configuration: every request to the api service, found by its short
/// name through the embedded DNS (resolved again each second, so it may start first).
const HAPROXY: &str = "\
global
  maxconn 64
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
resolvers stack
  nameserver embedded 127.0.0.11:53
  hold valid 1s
frontend web
  bind :80
  default_backend api
backend api
  http-reuse never
  server api api:80 resolvers stack init-addr none
";

fn haproxy() -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v haproxy"])
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        !path.is_empty(),
        "haproxy is not installed (scripts/setup.sh installs it)"
    );
    path
}

/// Writes the stack's directory (file, `.env`, secret and config files) under the work dir.
fn write_stack(cluster: &Cluster, name: &str, db_env: &str, without_front: bool) -> String {
    let dir = cluster.work_dir().join(name);
    fs::create_dir_all(dir.join("db-mount")).unwrap();
    let mut text = STACK
        .replace("{shoal}", &shoal_bin().display().to_string())
        .replace("{haproxy}", &haproxy())
        .replace("{dir}", &dir.display().to_string())
        .replace("{db_env}", db_env);
    if without_front {
        let start = text.find("  front:").unwrap();
        let end = text.find("  api:").unwrap();
        text.replace_range(start..end, "");
    }
    fs::write(dir.join("stack.yml"), text).unwrap();
    fs::write(dir.join(".env"), "FROM_DOTENV=from-the-dot-env\n").unwrap();
    fs::write(dir.join("db_password.txt"), "s3cret-pw\n").unwrap();
    fs::write(dir.join("front.conf"), HAPROXY).unwrap();
    // Tasks see the node's files: a config's target must exist, as a bind mount's.
    fs::write(dir.join("front.conf.target"), "").unwrap();
    dir.join("stack.yml").display().to_string()
}

/// `shoal exec TASK -- ARGS` on node1 (the manager relays it to the task's node).
fn exec(cluster: &Cluster, task: &Placed, args: &[&str]) -> String {
    let mut argv = vec!["exec", &task.id, "--"];
    argv.extend_from_slice(args);
    ok(cluster, 0, &argv)
}

/// The names `WHAT ls --format json` lists (a JSON array, or one object per line).
fn names(cluster: &Cluster, what: &str) -> BTreeSet<String> {
    let out = ok(cluster, 0, &[what, "ls", "--format", "json"]);
    let values: Vec<serde_json::Value> = match serde_json::from_str(&out) {
        Ok(serde_json::Value::Array(all)) => all,
        Ok(one) => vec![one],
        Err(_) => out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    values
        .iter()
        .filter_map(|v| {
            [
                &v["Name"],
                &v["name"],
                &v["spec"]["name"],
                &v["Spec"]["Name"],
            ]
            .into_iter()
            .find_map(|n| n.as_str())
            .map(str::to_string)
        })
        .collect()
}

#[test]
fn a_compose_stack_deploys_updates_prunes_and_goes_away() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let file = write_stack(&cluster, "web", "1", false);

    // --- 1. deploy: Docker's lines, every object named and created
    let out = ok(&cluster, 0, &["stack", "deploy", "-c", &file, "web"]);
    for line in [
        "Creating network web_internal",
        "Creating network web_public",
        "Creating secret web_db_password",
        "Creating config web_front_conf",
        "Creating service web_api",
        "Creating service web_db",
        "Creating service web_front",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    let front = running(&cluster, "web_front", 1);
    let api = running(&cluster, "web_api", 3);
    let db = running(&cluster, "web_db", 1);
    assert_eq!(
        ok(&cluster, 0, &["stack", "ls"]),
        "NAME   SERVICES\nweb    3"
    );
    assert_eq!(
        ok(&cluster, 0, &["stack", "services", "web"])
            .lines()
            .count(),
        4
    );
    let ps = ok(&cluster, 0, &["stack", "ps", "web"]);
    for task in front.iter().chain(&api).chain(&db) {
        assert!(ps.contains(&task.id[..12]), "{} not in {ps}", task.id);
    }

    // --- 2. every node's 8080 reaches the api through the mesh and the front (HAProxy, its
    // configuration a stack config, the api found by its short name)
    let api_ids = ids(&api);
    for node in &cluster.nodes {
        let to = SocketAddr::new(node.address.into(), 8080);
        wait_until(Duration::from_secs(10), &format!("{to} to answer"), || {
            let report =
                http_from(Path::new(&cluster.client_ns().path()), to).map_err(|e| e.to_string())?;
            match report.lines().find_map(|l| l.strip_prefix("Hostname: ")) {
                Some(host) if api_ids.contains(host) => Ok(()),
                _ => Err(format!("not an api task's answer: {report:?}")),
            }
        });
    }

    // --- 3. inside the stack, services reach each other by their short names
    let answered: BTreeSet<String> = (0..12)
        .map(|_| served_by(&exec(&cluster, &front[0], &["curl", "-s", "http://api/"])))
        .collect();
    assert_eq!(answered, ids(&api), "the api VIP, round robin");
    let report = exec(&cluster, &api[0], &["curl", "-s", "http://db:5432/"]);
    assert_eq!(served_by(&report), db[0].id);
    assert_eq!(
        exec(&cluster, &api[0], &["printenv", "FROM_DOTENV"]),
        "from-the-dot-env"
    );
    assert_eq!(exec(&cluster, &api[0], &["printenv", "LEVEL"]), "info");

    // --- 4. the secret and the config, in the tasks that use them, with their modes
    assert_eq!(
        exec(&cluster, &db[0], &["cat", "/run/secrets/password"]),
        "s3cret-pw"
    );
    assert_eq!(
        exec(
            &cluster,
            &db[0],
            &["stat", "-c", "%a", "/run/secrets/password"]
        ),
        "400"
    );
    assert_eq!(
        exec(&cluster, &api[0], &["cat", "/run/secrets/db_password"]),
        "s3cret-pw"
    );
    let target = cluster.work_dir().join("web/front.conf.target");
    assert_eq!(
        exec(&cluster, &front[0], &["cat", target.to_str().unwrap()]),
        HAPROXY.trim_end()
    );

    // --- 5. deploy again with one change: only the db's task is replaced
    let file = write_stack(&cluster, "web", "2", false);
    let out = ok(&cluster, 0, &["stack", "deploy", "-c", &file, "web"]);
    assert!(out.contains("Updating service web_api"), "{out}");
    assert!(!out.contains("Creating"), "{out}");
    let db2 = wait_until(Duration::from_secs(20), "the db task replaced", || {
        let now = running(&cluster, "web_db", 1);
        if now[0].id != db[0].id {
            Ok(now)
        } else {
            Err("the old db task still runs".to_string())
        }
    });
    assert_eq!(exec(&cluster, &db2[0], &["printenv", "GENERATION"]), "2");
    assert_eq!(ids(&running(&cluster, "web_api", 3)), ids(&api));
    assert_eq!(ids(&running(&cluster, "web_front", 1)), ids(&front));

    // --- 5b. a secret cannot change: a file with other data is refused, nothing touched
    let secret_file = cluster.work_dir().join("web/db_password.txt");
    fs::write(&secret_file, "another-pw\n").unwrap();
    let out = cluster.nodes[0].cli(&["stack", "deploy", "-c", &file, "web"]);
    assert!(!out.status.success(), "accepted: {out:?}");
    assert!(
        stderr(&out).contains("secret web_db_password exists with other data"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ids(&running(&cluster, "web_db", 1)), ids(&db2));
    fs::write(&secret_file, "s3cret-pw\n").unwrap();

    // --- 6. another stack, then --prune drops the service the file no longer has
    let other = write_stack(&cluster, "other", "1", true);
    let other_text = fs::read_to_string(&other)
        .unwrap()
        .replace("8080:80", "8081:80");
    fs::write(&other, other_text).unwrap();
    ok(&cluster, 0, &["stack", "deploy", "-c", &other, "other"]);
    let pruned = write_stack(&cluster, "web", "2", true);
    let out = ok(
        &cluster,
        0,
        &["stack", "deploy", "--prune", "-c", &pruned, "web"],
    );
    assert!(out.contains("Removing service web_front"), "{out}");
    assert_eq!(
        ok(&cluster, 0, &["stack", "services", "web"])
            .lines()
            .count(),
        3
    );

    // --- 7. stack rm leaves nothing of the stack, and the other stack as it was
    let out = ok(&cluster, 0, &["stack", "rm", "web"]);
    assert!(out.contains("Removing network web_internal"), "{out}");
    let services = names(&cluster, "service");
    assert!(
        services.iter().all(|s| !s.starts_with("web_")),
        "{services:?}"
    );
    assert!(services.contains("other_api"), "{services:?}");
    for what in ["network", "secret", "config"] {
        let left = names(&cluster, what);
        assert!(
            left.iter().all(|n| !n.starts_with("web_")),
            "{what}: {left:?}"
        );
        if what != "config" {
            assert!(
                left.iter().any(|n| n.starts_with("other_")),
                "{what}: {left:?}"
            );
        }
    }
    running(&cluster, "other_api", 3);
}

#[test]
fn a_bad_file_is_refused_whole_before_anything_is_created() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let dir = cluster.work_dir().join("bad");
    fs::create_dir_all(&dir).unwrap();
    let before = (names(&cluster, "network"), names(&cluster, "service"));
    let good_first = "services:\n  ok:\n    command: [sleep, '60']\n";
    for (name, text, needle) in [
        (
            "unknown-key",
            "services:\n  api:\n    command: [x]\n    bogus: 1\n",
            "bogus",
        ),
        (
            "wrong-type",
            "services:\n  api:\n    command: [x]\n    deploy: {replicas: many}\n",
            "replicas",
        ),
        (
            "missing-variable",
            "services:\n  api:\n    command: [x]\n    environment: {A: '${NOT_SET:?give NOT_SET}'}\n",
            "give NOT_SET",
        ),
        (
            "image-without-command",
            "services:\n  api:\n    image: nginx\n",
            "command",
        ),
    ] {
        let path = dir.join(format!("{name}.yml"));
        // A valid service first: it must not be created either.
        let text = format!("{good_first}{}", text.trim_start_matches("services:\n"));
        fs::write(&path, text).unwrap();
        let out = cluster.nodes[0].cli(&["stack", "deploy", "-c", path.to_str().unwrap(), "bad"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{name}: accepted");
        assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
        assert!(err.contains(needle), "{name}: {needle:?} not in {err}");
        assert!(
            err.contains(&format!("{name}.yml")),
            "{name}: no file in {err}"
        );
        assert_eq!(
            (names(&cluster, "network"), names(&cluster, "service")),
            before,
            "{name}: something was created"
        );
    }
}

#[test]
fn a_deploy_that_fails_midway_removes_what_it_created() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let shoal = shoal_bin().display().to_string();
    // Port 8080 is taken by a service outside the stack.
    ok(
        &cluster,
        0,
        &[
            "service", "create", "-d", "--name", "taken", "-p", "8080:80", "--", &shoal, "whoami",
        ],
    );
    let before = (
        names(&cluster, "network"),
        names(&cluster, "service"),
        names(&cluster, "secret"),
    );
    let dir = cluster.work_dir().join("midway");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("pw"), "pw").unwrap();
    // Services are created in name order: `a` and `b` first, then `c`, whose port is taken.
    let text = format!(
        "services:\n  a:\n    command: ['{shoal}', whoami]\n    networks: [n1]\n    secrets: [pw]\n\
         \x20 b:\n    command: ['{shoal}', whoami]\n\
         \x20 c:\n    command: ['{shoal}', whoami]\n    ports: ['8080:80']\n\
         networks:\n  n1: {{}}\nsecrets:\n  pw: {{file: ./pw}}\n"
    );
    let file = dir.join("stack.yml");
    fs::write(&file, text).unwrap();
    let out = cluster.nodes[0].cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "mid"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted: {out:?}");
    assert!(err.contains("8080"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Creating service mid_b"), "{stdout}");
    assert_eq!(
        (
            names(&cluster, "network"),
            names(&cluster, "service"),
            names(&cluster, "secret")
        ),
        before,
        "what the deploy created is still there"
    );
}
