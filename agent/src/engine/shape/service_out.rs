//! A service in Docker's shape: `shoal service inspect`'s JSON (`render::docker_shape`) with
//! the argv split back into `ContainerSpec.Image`, `Command` and `Args` as the Engine API
//! client sent them (the spec's `command_shape`), or, for a service the shoal CLI created, the
//! program as `Image` and the rest as `Args` (so a spec read back and sent again, as `docker
//! service update` and `scale` do, runs the same argv); `PreviousSpec`, and `ServiceStatus`
//! when asked (`status=true`).

use shoal_control::api::{CommandShape, ServiceInfo};

use crate::commands::service::render::docker_shape;

pub fn service(info: &ServiceInfo, with_status: bool) -> serde_json::Value {
    let mut shaped = docker_shape(info);
    let shape = info.spec.as_ref().and_then(|s| s.command_shape.as_ref());
    split_command(&mut shaped["Spec"], shape);
    if let Some(previous) = &info.previous_spec {
        let mut earlier = docker_shape(&ServiceInfo {
            spec: Some(previous.clone()),
            ..Default::default()
        })["Spec"]
            .take();
        split_command(&mut earlier, previous.command_shape.as_ref());
        shaped["PreviousSpec"] = earlier;
    }
    if with_status {
        shaped["ServiceStatus"] = serde_json::json!({
            "RunningTasks": info.running_tasks,
            "DesiredTasks": info.desired_tasks,
            "CompletedTasks": 0,
        });
    }
    shaped
}

/// `ContainerSpec.Command` (the whole argv) becomes `Image`, `Command` and `Args` as `shape`
/// says, or without one `Image` (the program) and `Args`.
fn split_command(spec: &mut serde_json::Value, shape: Option<&CommandShape>) {
    let container = &mut spec["TaskTemplate"]["ContainerSpec"];
    let Some(object) = container.as_object_mut() else {
        return;
    };
    let mut argv: Vec<serde_json::Value> = match object.remove("Command") {
        Some(serde_json::Value::Array(argv)) => argv,
        _ => Vec::new(),
    };
    let (image, args) = match shape {
        // No `Command`: the argv is the image and its `Args`.
        Some(shape) if !shape.image.is_empty() && shape.command_len == 0 => (
            shape.image.clone().into(),
            argv.into_iter().skip(1).collect(),
        ),
        Some(shape) if !shape.image.is_empty() => {
            let split = (shape.command_len as usize).min(argv.len());
            let args = argv.split_off(split);
            object.insert("Command".into(), argv.into());
            (shape.image.clone().into(), args)
        }
        _ => {
            let mut argv = argv.into_iter();
            let image = argv.next().unwrap_or_else(|| "".into());
            (image, argv.collect())
        }
    };
    object.insert("Image".into(), image);
    if !args.is_empty() {
        object.insert("Args".into(), args.into());
    }
}

#[cfg(test)]
mod tests {
    use shoal_control::api::{
        KeyValue, NetworkAliases, PortConfigMsg, RestartPolicyMsg, ServiceSpec, UpdateConfigMsg,
    };

    use super::*;
    use crate::engine::shape::service_in::service_spec;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            command: vec![
                "/usr/local/bin/shoal".into(),
                "whoami".into(),
                "--port".into(),
                "80".into(),
            ],
            env: vec![KeyValue {
                key: "A".into(),
                value: "1".into(),
            }],
            mode: "replicated".into(),
            replicas: 2,
            constraints: vec!["node.role==manager".into()],
            restart: Some(RestartPolicyMsg {
                condition: "any".into(),
                delay_ms: 5_000,
                ..Default::default()
            }),
            update: Some(UpdateConfigMsg {
                parallelism: 1,
                failure_action: "pause".into(),
                order: "stop-first".into(),
                ..Default::default()
            }),
            networks: vec!["n1".into()],
            network_aliases: vec![NetworkAliases {
                network: "n1".into(),
                aliases: vec!["www".into()],
            }],
            ports: vec![PortConfigMsg {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 8080,
                publish_mode: "ingress".into(),
                source: String::new(),
            }],
            labels: vec![KeyValue {
                key: "tier".into(),
                value: "front".into(),
            }],
            stop_grace_ms: 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_program_is_the_image_and_a_spec_read_back_is_the_same() {
        let info = ServiceInfo {
            id: "s1".into(),
            spec: Some(spec()),
            version: 7,
            running_tasks: 1,
            desired_tasks: 2,
            ..Default::default()
        };
        let shaped = service(&info, true);
        let container = &shaped["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(container["Image"], "/usr/local/bin/shoal");
        assert_eq!(
            container["Args"],
            serde_json::json!(["whoami", "--port", "80"])
        );
        assert!(container.get("Command").is_none(), "{container}");
        assert_eq!(shaped["Version"]["Index"], 7);
        assert_eq!(shaped["ServiceStatus"]["RunningTasks"], 1);
        // `docker service update` sends back what it read: nothing is lost, nothing warned.
        let back = service_spec(shaped["Spec"].clone()).unwrap();
        assert_eq!(back.warnings, Vec::<String>::new());
        assert_eq!(back.spec, spec());
    }

    #[test]
    fn the_docker_clis_create_body_reads_without_warnings() {
        // What `docker service create -d --name web --replicas 2 -p 8080:80 PROG whoami
        // --port 80` (CLI 28) sends.
        let body = serde_json::json!({
            "Name": "web", "Labels": {},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "/usr/local/bin/shoal", "Args": ["whoami", "--port", "80"],
                    "Init": false, "DNSConfig": {}, "Isolation": "default",
                },
                "Resources": { "Limits": {}, "Reservations": {} },
                "RestartPolicy": { "Condition": "any", "MaxAttempts": 0 },
                "Placement": {}, "ForceUpdate": 0, "Runtime": "container",
            },
            "Mode": { "Replicated": { "Replicas": 2 } },
            "UpdateConfig": { "Parallelism": 1, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "stop-first" },
            "RollbackConfig": { "Parallelism": 1, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "stop-first" },
            "EndpointSpec": { "Mode": "vip", "Ports": [
                { "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress" },
            ] },
        });
        let read = service_spec(body).unwrap();
        assert_eq!(read.warnings, Vec::<String>::new());
        assert_eq!(
            read.spec.command,
            ["/usr/local/bin/shoal", "whoami", "--port", "80"]
        );
        assert_eq!(read.spec.replicas, 2);
        assert_eq!(read.spec.ports[0].published_port, 8080);
    }

    #[test]
    fn a_command_beside_an_image_reads_back_as_it_was_sent() {
        // docker-py's `services.create("alpine", command="sleep 300")`, then the same with
        // Command and Args both.
        for (container, command) in [
            (
                serde_json::json!({ "Image": "alpine", "Command": ["sleep", "300"] }),
                vec!["sleep", "300"],
            ),
            (
                serde_json::json!({ "Image": "alpine", "Command": ["sh", "-c"], "Args": ["sleep 1"] }),
                vec!["sh", "-c", "sleep 1"],
            ),
        ] {
            let body = serde_json::json!({
                "Name": "web",
                "TaskTemplate": { "ContainerSpec": container.clone() },
            });
            let read = service_spec(body).unwrap();
            assert_eq!(read.spec.command, command);
            let info = ServiceInfo {
                spec: Some(read.spec),
                ..Default::default()
            };
            let shown = &service(&info, false)["Spec"]["TaskTemplate"]["ContainerSpec"];
            for field in ["Image", "Command", "Args"] {
                assert_eq!(shown.get(field), container.get(field), "{field}: {shown}");
            }
        }
    }

    #[test]
    fn what_shoal_does_not_do_is_named() {
        let body = serde_json::json!({
            "Name": "web",
            "TaskTemplate": {
                "ContainerSpec": { "Image": "sh", "Command": ["sh", "-c"], "Args": ["sleep 1"], "TTY": true },
                "Resources": { "Limits": { "MemoryBytes": 8388608 }, "Reservations": { "GenericResources": [{}] } },
                "Placement": { "Preferences": [{ "Spread": { "SpreadDescriptor": "node.labels.dc" } }] },
            },
            "Mode": { "Global": {} },
        });
        let read = service_spec(body).unwrap();
        assert_eq!(read.spec.command, ["sh", "-c", "sleep 1"]);
        assert_eq!(read.spec.mode, "global");
        assert_eq!(read.spec.resources.unwrap().limit_memory_bytes, 8 << 20);
        assert_eq!(
            read.warnings,
            [
                "TaskTemplate.ContainerSpec.TTY is not supported by shoal and was ignored",
                "TaskTemplate.Placement.Preferences is not supported by shoal and was ignored",
                "TaskTemplate.Resources.Reservations.GenericResources is not supported by shoal and was ignored",
            ]
        );
        let job = serde_json::json!({
            "TaskTemplate": { "ContainerSpec": { "Image": "/bin/true" } },
            "Mode": { "ReplicatedJob": { "MaxConcurrent": 1 } },
        });
        assert_eq!(
            service_spec(job).unwrap_err().message,
            "Mode.ReplicatedJob: shoal runs services, not jobs"
        );
    }

    #[test]
    fn a_stack_deploy_service_reads_and_shows_its_files_and_aliases() {
        // What `docker stack deploy` (CLI 28) sends for a compose service with a port, a
        // secret, a config and a network: the stack's label on the service and its
        // containers, the short name as an alias.
        let body = serde_json::json!({
            "Name": "demo_web",
            "Labels": { "com.docker.stack.image": "/usr/local/bin/shoal", "com.docker.stack.namespace": "demo" },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "/usr/local/bin/shoal", "Args": ["whoami", "--port", "80"],
                    "Labels": { "com.docker.stack.namespace": "demo" },
                    "Privileges": { "CredentialSpec": null, "SELinuxContext": null },
                    "Secrets": [{ "File": { "Name": "token", "UID": "0", "GID": "0", "Mode": 292 },
                                  "SecretID": "s1", "SecretName": "demo_token" }],
                    "Configs": [{ "File": { "Name": "/srv/app.conf", "UID": "33", "GID": "0", "Mode": 288 },
                                  "ConfigID": "c1", "ConfigName": "demo_app" }],
                    "Isolation": "default",
                },
                "Resources": {}, "Placement": {},
                "Networks": [{ "Target": "demo_back", "Aliases": ["web"] }],
                "ForceUpdate": 0,
            },
            "Mode": { "Replicated": { "Replicas": 2 } },
            "EndpointSpec": { "Mode": "vip", "Ports": [
                { "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8081, "PublishMode": "ingress" },
            ] },
        });
        let read = service_spec(body).unwrap();
        assert_eq!(read.warnings, Vec::<String>::new());
        let spec = &read.spec;
        assert_eq!(spec.secrets[0].name, "demo_token");
        assert_eq!(
            (
                spec.configs[0].target.as_str(),
                spec.configs[0].uid,
                spec.configs[0].mode
            ),
            ("/srv/app.conf", 33, Some(0o440))
        );
        assert_eq!(spec.network_aliases[0].aliases, ["web"]);
        let shaped = service(
            &ServiceInfo {
                spec: Some(spec.clone()),
                ..Default::default()
            },
            false,
        );
        let container = &shaped["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(container["Secrets"][0]["SecretName"], "demo_token");
        assert_eq!(container["Secrets"][0]["File"]["Mode"], 0o444);
        assert_eq!(container["Configs"][0]["File"]["UID"], "33");
        assert_eq!(
            shaped["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"],
            serde_json::json!(["web"])
        );
        // A container label other than the stack's is named.
        // An image reference beside an entrypoint is not run, and said so.
        let entrypoint = serde_json::json!({
            "Name": "x",
            "TaskTemplate": { "ContainerSpec": { "Image": "shoal/whoami", "Command": ["/bin/prog"], "Args": ["-v"] } },
        });
        let read = service_spec(entrypoint).unwrap();
        assert_eq!(read.spec.command, ["/bin/prog", "-v"]);
        assert_eq!(
            read.warnings,
            [
                "TaskTemplate.ContainerSpec.Image \"shoal/whoami\" was ignored: shoal runs \
                 programs, not images (the tasks run Command: /bin/prog)"
            ]
        );
        let labelled = serde_json::json!({
            "Name": "x",
            "TaskTemplate": { "ContainerSpec": { "Image": "/bin/true", "Labels": { "tier": "front" } } },
        });
        assert_eq!(
            service_spec(labelled).unwrap().warnings,
            ["TaskTemplate.ContainerSpec.Labels is not supported by shoal and was ignored"]
        );
    }
}
