//! Secrets, configs and stacks through the Engine API, driven by the real docker CLI (28.x) on
//! node1's `docker.sock`: `secret|config create | ls | inspect | rm` checked against what the
//! `shoal` CLI lists, with dockerd's words for a name taken, and a label update (over the API:
//! the CLI has none) at the version it quotes; then `docker stack deploy` of a
//! compose file (two `shoal whoami` services on a network of the stack, one publishing a port
//! and mounting a secret and a config), served on every node, its files read in a task,
//! `stack ls | services | ps` agreeing with `shoal service ps`, a re-deploy of the same file
//! accepted with nothing shoal ignores, and `stack rm` leaving nothing behind.

use std::{
    collections::BTreeSet, fs, net::SocketAddr, path::Path, process::Command, time::Duration,
};

use shoal_tests::{Cluster, agent::shoal_bin, wait_until};

use crate::support::{docker, docker_ok, docker_sock, ids, new_connections, ok, running, stderr};

/// `{bin}`: the program the tasks run (the docker CLI wants an image reference too, which
/// shoal names as ignored); `{dir}`: the stack's directory.
const STACK: &str = r#"
services:
  web:
    image: shoal/whoami
    entrypoint: ["{bin}", "whoami"]
    command: ["--port", "80"]
    ports:
      - "8081:80"
    networks: [back]
    secrets:
      - token
    configs:
      - source: app
        target: {dir}/app.conf.target
    deploy:
      replicas: 2
  api:
    image: shoal/whoami
    entrypoint: ["{bin}", "whoami"]
    command: ["--port", "81"]
    networks: [back]
networks:
  back: {}
secrets:
  token:
    file: {dir}/token.txt
configs:
  app:
    file: {dir}/app.conf
"#;

const TOKEN: &str = "stack-token-9f2k";
const APP_CONF: &str = "listen = 80\n";

/// `POST PATH` with a JSON `body` on node1's `docker.sock` (curl: the docker CLI has no
/// secret or config update): the HTTP status and the body.
fn engine_post(cluster: &Cluster, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(docker_sock(cluster, 0))
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://docker{path}"))
        .output()
        .unwrap_or_else(|e| panic!("running curl: {e}"));
    assert!(out.status.success(), "curl: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap(), answer.trim().to_string())
}

/// The lines of `shoal WHAT ls -q` on node1, sorted.
fn shoal_ids(cluster: &Cluster, what: &str) -> BTreeSet<String> {
    ok(cluster, 0, &[what, "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines of `docker ARGS`, sorted.
fn docker_lines(cluster: &Cluster, args: &[&str]) -> BTreeSet<String> {
    docker_ok(cluster, 0, args)
        .lines()
        .map(str::to_string)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// How many tasks `shoal service ps SERVICE` lists.
fn shoal_task_count(cluster: &Cluster, service: &str) -> usize {
    let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .len()
}

#[test]
fn the_docker_cli_deploys_a_stack_with_secrets_and_configs() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let dir = cluster.work_dir().join("docker-stack");
    fs::create_dir_all(&dir).unwrap();

    // --- 1. secrets: created, listed and inspected by the docker CLI as shoal lists them
    let file = dir.join("pw.txt");
    fs::write(&file, "hunter2\n").unwrap();
    let file = file.to_str().unwrap();
    let id = docker_ok(
        &cluster,
        0,
        &["secret", "create", "--label", "env=prod", "db-pw", file],
    );
    assert_eq!(shoal_ids(&cluster, "secret"), set(&[&id]));
    assert_eq!(
        docker_lines(&cluster, &["secret", "ls", "--format", "{{.ID}} {{.Name}}"]),
        set(&[&format!("{id} db-pw")])
    );
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "secret",
                "inspect",
                "--format",
                "{{.ID}} {{.Spec.Name}} {{index .Spec.Labels \"env\"}} {{.Version.Index}} {{len .Spec.Data}}",
                "db-pw"
            ]
        ),
        format!("{id} db-pw prod 1 0"),
        "a secret's data is never shown"
    );
    assert_eq!(
        docker_lines(
            &cluster,
            &["secret", "ls", "-q", "--filter", "label=env=staging"]
        ),
        BTreeSet::new()
    );
    let taken = docker(&cluster, 0, &["secret", "create", "db-pw", file]);
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains(
            "Error response from daemon: rpc error: code = AlreadyExists desc = secret db-pw \
             already exists"
        ),
        "{}",
        stderr(&taken)
    );
    let missing = docker(&cluster, 0, &["secret", "rm", "nosuch"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("secret nosuch not found"),
        "{}",
        stderr(&missing)
    );

    // --- 2. configs: the same, and inspect shows the data
    let conf = dir.join("c.conf");
    fs::write(&conf, "x = 1\n").unwrap();
    let config_id = docker_ok(
        &cluster,
        0,
        &["config", "create", "site.conf", conf.to_str().unwrap()],
    );
    assert_eq!(shoal_ids(&cluster, "config"), set(&[&config_id]));
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "config",
                "inspect",
                "--format",
                "{{.Spec.Name}} {{printf \"%s\" .Spec.Data}}",
                &config_id[..6]
            ]
        ),
        "site.conf x = 1"
    );
    assert_eq!(
        docker_lines(&cluster, &["config", "ls", "--format", "{{.Name}}"]),
        set(&["site.conf"])
    );

    // --- 2b. a label update (the only change Docker allows) shows in inspect at the next
    // version; one quoting the version it replaced is refused, changing nothing
    let relabel = r#"{"Name": "db-pw", "Labels": {"env": "staging"}}"#;
    assert_eq!(
        engine_post(
            &cluster,
            &format!("/secrets/{id}/update?version=1"),
            relabel
        ),
        (200, String::new())
    );
    let labels_and_version = |what: &str, name: &str| {
        docker_ok(
            &cluster,
            0,
            &[
                what,
                "inspect",
                "--format",
                "{{index .Spec.Labels \"env\"}} {{.Version.Index}}",
                name,
            ],
        )
    };
    assert_eq!(labels_and_version("secret", "db-pw"), "staging 2");
    let (status, body) = engine_post(
        &cluster,
        &format!("/secrets/{id}/update?version=1"),
        relabel,
    );
    assert_eq!(status, 500);
    assert!(body.contains("update out of sequence"), "{body}");
    let config_relabel = r#"{"Name": "site.conf", "Labels": {"env": "dev"}}"#;
    assert_eq!(
        engine_post(
            &cluster,
            &format!("/configs/{config_id}/update?version=1"),
            config_relabel
        ),
        (200, String::new())
    );
    assert_eq!(labels_and_version("config", "site.conf"), "dev 2");

    // --- 3. rm: gone from the cluster
    assert_eq!(docker_ok(&cluster, 0, &["secret", "rm", "db-pw"]), "db-pw");
    assert_eq!(
        docker_ok(&cluster, 0, &["config", "rm", "site.conf"]),
        "site.conf"
    );
    assert_eq!(shoal_ids(&cluster, "secret"), BTreeSet::new());
    assert_eq!(shoal_ids(&cluster, "config"), BTreeSet::new());

    // --- 4. docker stack deploy
    let bin = shoal_bin().display().to_string();
    fs::write(dir.join("token.txt"), TOKEN).unwrap();
    fs::write(dir.join("app.conf"), APP_CONF).unwrap();
    // Tasks see the node's files: a config's target must exist, as a bind mount's.
    fs::write(dir.join("app.conf.target"), "").unwrap();
    let compose = dir.join("stack.yml");
    fs::write(
        &compose,
        STACK
            .replace("{bin}", &bin)
            .replace("{dir}", &dir.display().to_string()),
    )
    .unwrap();
    let compose = compose.to_str().unwrap();
    let deploy = docker(&cluster, 0, &["stack", "deploy", "-c", compose, "demo"]);
    assert!(
        deploy.status.success(),
        "{}\n{}",
        stderr(&deploy),
        cluster.nodes[0].log_tail()
    );
    let said = String::from_utf8_lossy(&deploy.stdout);
    for line in [
        "Creating network demo_back",
        "Creating secret demo_token",
        "Creating config demo_app",
        "Creating service demo_web",
        "Creating service demo_api",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    // Every object carries the stack's label, as the docker CLI asked.
    let labelled = |what: &str| {
        ok(
            &cluster,
            0,
            &[
                what,
                "ls",
                "-q",
                "-f",
                "label=com.docker.stack.namespace=demo",
            ],
        )
        .lines()
        .count()
    };
    assert_eq!(
        [
            labelled("service"),
            labelled("network"),
            labelled("secret"),
            labelled("config")
        ],
        [2, 1, 1, 1]
    );
    let web = running(&cluster, "demo_web", 2);
    running(&cluster, "demo_api", 1);

    // --- 5. the published port answers on every node, from web's tasks
    let expected = ids(&web);
    let client = cluster.client_ns().path();
    for node in &cluster.nodes {
        let to = SocketAddr::new(node.address.into(), 8081);
        wait_until(
            Duration::from_secs(15),
            &format!("{to} to serve {expected:?}"),
            || {
                let seen: BTreeSet<String> = new_connections(Path::new(&client), to, 4)?
                    .into_iter()
                    .collect();
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("answered by {seen:?}"))
                }
            },
        );
    }

    // --- 6. the secret and the config, read inside a task
    let task = &web[0].id;
    assert_eq!(
        ok(
            &cluster,
            0,
            &["exec", task, "--", "cat", "/run/secrets/token"]
        ),
        TOKEN
    );
    let target = dir.join("app.conf.target");
    assert_eq!(
        ok(
            &cluster,
            0,
            &["exec", task, "--", "cat", target.to_str().unwrap()]
        ),
        APP_CONF.trim()
    );
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &[
                "service",
                "inspect",
                "--format",
                "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}:{{.File.Name}}{{end}} \
                 {{range .Spec.TaskTemplate.Networks}}{{.Aliases}}{{end}}",
                "demo_web"
            ]
        ),
        "demo_token:token [web]"
    );

    // A secret in use stays, in swarmkit's words.
    let in_use = docker(&cluster, 0, &["secret", "rm", "demo_token"]);
    assert!(!in_use.status.success());
    assert!(
        stderr(&in_use).contains(
            "rpc error: code = InvalidArgument desc = secret 'demo_token' is in use by the \
             following service: demo_web"
        ),
        "{}",
        stderr(&in_use)
    );

    // --- 7. stack ls / services / ps agree with the cluster
    assert_eq!(
        docker_ok(
            &cluster,
            0,
            &["stack", "ls", "--format", "{{.Name}} {{.Services}}"]
        ),
        "demo 2"
    );
    let services: BTreeSet<String> = docker_lines(
        &cluster,
        &[
            "stack",
            "services",
            "demo",
            "--format",
            "{{.Name}} {{.Replicas}} {{.Ports}}",
        ],
    )
    .iter()
    .map(|l| l.trim().to_string())
    .collect();
    assert_eq!(
        services,
        set(&["demo_api 1/1", "demo_web 2/2 *:8081->80/tcp"])
    );
    let ps = docker_ok(
        &cluster,
        0,
        &[
            "stack",
            "ps",
            "demo",
            "--format",
            "{{.Name}} {{.DesiredState}}",
        ],
    );
    let count = |prefix: &str| ps.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        (count("demo_web."), count("demo_api.")),
        (
            shoal_task_count(&cluster, "demo_web"),
            shoal_task_count(&cluster, "demo_api")
        ),
        "{ps}"
    );
    assert_eq!(ps.lines().filter(|l| l.ends_with(" Running")).count(), 3);

    // --- 8. the same file again: the secret and config stand, the services are updated, and
    // of the stack shoal ignores the image only, and says so (updates print the daemon's
    // warnings)
    let again = docker(&cluster, 0, &["stack", "deploy", "-c", compose, "demo"]);
    assert!(
        again.status.success(),
        "{}\n{}",
        stderr(&again),
        cluster.nodes[0].log_tail()
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("Updating service demo_web"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert!(
        !stderr(&again).contains("not supported by shoal"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("Image \"shoal/whoami:latest\" was ignored: shoal runs programs"),
        "{}",
        stderr(&again)
    );

    // --- 9. stack rm: nothing of the stack is left
    docker_ok(&cluster, 0, &["stack", "rm", "demo"]);
    assert_eq!(shoal_ids(&cluster, "service"), BTreeSet::new());
    assert_eq!(shoal_ids(&cluster, "secret"), BTreeSet::new());
    assert_eq!(shoal_ids(&cluster, "config"), BTreeSet::new());
    assert_eq!(
        ok(&cluster, 0, &["network", "ls", "-q", "-f", "name=demo_"]),
        ""
    );
    let gone = docker(&cluster, 0, &["stack", "ps", "demo"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("nothing found in stack: demo"),
        "{}",
        stderr(&gone)
    );
}
