//! Merging the files of `-c a.yml -c b.yml`: each later file overrides the earlier ones, with
//! Docker's rules (docker/cli `cli/compose/loader/merge.go`, mergo with override and append):
//! - a service in both files is merged key by key; a new one is added;
//! - scalars override when the later value is set (an empty string or `0s` does not unset);
//! - maps (`environment`, `labels`, `deploy.labels`, networks) merge by key; an
//!   `environment` value overrides only when not empty, a label always;
//! - `volumes` merge by target, `secrets` and `configs` by source (the later entry wins whole),
//!   and the result is sorted by that key;
//! - other lists are appended (`env_file`, `placement.constraints`);
//! - top-level networks, volumes, secrets and configs are replaced whole by name.
//!
//! Deliberate differences from Docker, which loses data here:
//! - `ports` merge by published port *and protocol*, and unpublished ports by target and
//!   protocol. Docker keys them by published port alone, so `53/tcp` and `53/udp` collapse into
//!   one, and all unpublished ports of a service collapse into the last one.
//! - `healthcheck.test` is replaced, not appended to the earlier test's argv.
//! - a network's `aliases` are replaced only by a non-empty list (Docker also clears them when
//!   the later file writes the network as a bare `{}`).

use std::collections::BTreeMap;

use crate::model::{
    Deploy, FileRef, Healthcheck, Mount, Placement, Port, ResourceSpec, Resources, RestartPolicy,
    Service, ServiceNetwork, Stack, UpdateConfig,
};

/// Merges `over` into `base`.
pub fn merge(base: &mut Stack, over: Stack) {
    for (name, service) in over.services {
        match base.services.get_mut(&name) {
            Some(existing) => merge_service(existing, service),
            None => {
                base.services.insert(name, service);
            }
        }
    }
    base.networks.extend(over.networks);
    base.volumes.extend(over.volumes);
    base.secrets.extend(over.secrets);
    base.configs.extend(over.configs);
}

/// `Some` overrides.
fn set<T>(base: &mut Option<T>, over: Option<T>) {
    if over.is_some() {
        *base = over;
    }
}

/// `Some` and non-zero overrides (Go zero values do not).
fn set_nonzero<T: PartialEq + Default>(base: &mut Option<T>, over: Option<T>) {
    if let Some(value) = over
        && (base.is_none() || value != T::default())
    {
        *base = Some(value);
    }
}

fn merge_service(base: &mut Service, over: Service) {
    set(&mut base.image, over.image);
    set(&mut base.entrypoint, over.entrypoint);
    set(&mut base.command, over.command);
    for (key, value) in over.environment {
        let keep = matches!(base.environment.get(&key), Some(Some(_)))
            && value.as_deref().is_none_or(str::is_empty);
        if !keep {
            base.environment.insert(key, value);
        }
    }
    base.env_file.extend(over.env_file);
    base.ports = merge_ports(std::mem::take(&mut base.ports), over.ports);
    merge_networks(&mut base.networks, over.networks);
    merge_deploy(&mut base.deploy, over.deploy);
    match (&mut base.healthcheck, over.healthcheck) {
        (Some(base), Some(over)) => merge_healthcheck(base, over),
        (base, over) => set(base, over),
    }
    base.configs = by_key(
        std::mem::take(&mut base.configs),
        over.configs,
        |r: &FileRef| r.source.clone(),
    );
    base.secrets = by_key(
        std::mem::take(&mut base.secrets),
        over.secrets,
        |r: &FileRef| r.source.clone(),
    );
    base.volumes = by_key(
        std::mem::take(&mut base.volumes),
        over.volumes,
        |m: &Mount| m.target.clone(),
    );
    set(&mut base.working_dir, over.working_dir);
    set(&mut base.user, over.user);
    set(&mut base.hostname, over.hostname);
    set(&mut base.stop_signal, over.stop_signal);
    set_nonzero(&mut base.stop_grace_period, over.stop_grace_period);
    base.labels.extend(over.labels);
}

/// Docker's `mergeSlice`: both lists become maps by `key` (a later entry wins), merged, and
/// sorted by key. A list only in `over` is taken as written (Docker appends to nothing).
fn by_key<T, K: Ord>(base: Vec<T>, over: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    if base.is_empty() {
        return over;
    }
    let mut map = BTreeMap::new();
    for item in base.into_iter().chain(over) {
        map.insert(key(&item), item);
    }
    map.into_values().collect()
}

/// Ports by (published, protocol), or (target, protocol) when unpublished; see the module doc.
fn merge_ports(base: Vec<Port>, over: Vec<Port>) -> Vec<Port> {
    if base.is_empty() {
        return over;
    }
    by_key(base, over, |p: &Port| match p.published {
        Some(published) => (published, 0, p.protocol),
        None => (0, p.target, p.protocol),
    })
}

fn merge_networks(base: &mut Vec<ServiceNetwork>, over: Vec<ServiceNetwork>) {
    for network in over {
        match base.iter_mut().find(|n| n.name == network.name) {
            Some(existing) if !network.aliases.is_empty() => existing.aliases = network.aliases,
            Some(_) => {}
            None => base.push(network),
        }
    }
}

fn merge_deploy(base: &mut Deploy, over: Deploy) {
    set(&mut base.mode, over.mode);
    set(&mut base.replicas, over.replicas);
    base.labels.extend(over.labels);
    merge_update(&mut base.update_config, over.update_config);
    merge_update(&mut base.rollback_config, over.rollback_config);
    merge_resources(&mut base.resources, over.resources);
    match (&mut base.restart_policy, over.restart_policy) {
        (Some(base), Some(over)) => merge_restart(base, over),
        (base, over) => set(base, over),
    }
    merge_placement(&mut base.placement, over.placement);
    set(&mut base.endpoint_mode, over.endpoint_mode);
}

fn merge_update(base: &mut Option<UpdateConfig>, over: Option<UpdateConfig>) {
    let (Some(base), Some(over)) = (base.as_mut(), over) else {
        set(base, over);
        return;
    };
    set(&mut base.parallelism, over.parallelism);
    set_nonzero(&mut base.delay, over.delay);
    set(&mut base.failure_action, over.failure_action);
    set_nonzero(&mut base.monitor, over.monitor);
    set_nonzero(&mut base.max_failure_ratio, over.max_failure_ratio);
    set(&mut base.order, over.order);
}

fn merge_restart(base: &mut RestartPolicy, over: RestartPolicy) {
    set(&mut base.condition, over.condition);
    set_nonzero(&mut base.delay, over.delay);
    set(&mut base.max_attempts, over.max_attempts);
    set_nonzero(&mut base.window, over.window);
}

fn merge_resources(base: &mut Resources, over: Resources) {
    for (base, over) in [
        (&mut base.limits, over.limits),
        (&mut base.reservations, over.reservations),
    ] {
        match (base.as_mut(), over) {
            (Some(base), Some(over)) => merge_resource_spec(base, over),
            (_, over) => set(base, over),
        }
    }
}

fn merge_resource_spec(base: &mut ResourceSpec, over: ResourceSpec) {
    set(&mut base.cpus, over.cpus);
    set(&mut base.memory, over.memory);
    set(&mut base.pids, over.pids);
}

fn merge_placement(base: &mut Placement, over: Placement) {
    base.constraints.extend(over.constraints);
    set(&mut base.max_replicas_per_node, over.max_replicas_per_node);
}

fn merge_healthcheck(base: &mut Healthcheck, over: Healthcheck) {
    if !over.test.is_empty() {
        base.test = over.test;
    }
    set_nonzero(&mut base.interval, over.interval);
    set_nonzero(&mut base.timeout, over.timeout);
    set(&mut base.retries, over.retries);
    set_nonzero(&mut base.start_period, over.start_period);
    set_nonzero(&mut base.start_interval, over.start_interval);
    base.disable |= over.disable;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, PublishMode};
    use std::time::Duration;

    fn port(target: u16, published: Option<u16>, protocol: Protocol) -> Port {
        Port {
            target,
            published,
            protocol,
            mode: PublishMode::Ingress,
        }
    }

    fn stack(service: Service) -> Stack {
        let mut stack = Stack::default();
        stack.services.insert(service.name.clone(), service);
        stack
    }

    fn service() -> Service {
        Service {
            name: "web".into(),
            ..Service::default()
        }
    }

    #[test]
    fn scalars_override_only_when_set() {
        let mut base = stack(Service {
            image: Some("a".into()),
            stop_grace_period: Some(Duration::from_secs(10)),
            ..service()
        });
        merge(
            &mut base,
            stack(Service {
                command: Some(vec!["run".into()]),
                stop_grace_period: Some(Duration::ZERO),
                ..service()
            }),
        );
        let web = &base.services["web"];
        assert_eq!(web.image.as_deref(), Some("a"));
        assert_eq!(web.command.as_deref(), Some(&["run".to_string()][..]));
        assert_eq!(web.stop_grace_period, Some(Duration::from_secs(10)));
    }

    #[test]
    fn environment_and_labels_merge_by_key() {
        let mut base = service();
        base.environment = [("A", Some("1")), ("B", Some("2")), ("C", Some(""))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect();
        base.labels = [("l".to_string(), "x".to_string())].into();
        let mut over = service();
        over.environment = [("A", Some("one")), ("B", Some("")), ("C", Some("three"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect();
        over.labels = [("l".to_string(), String::new())].into();
        let mut base = stack(base);
        merge(&mut base, stack(over));
        let web = &base.services["web"];
        assert_eq!(web.environment["A"].as_deref(), Some("one"));
        assert_eq!(web.environment["B"].as_deref(), Some("2"));
        assert_eq!(web.environment["C"].as_deref(), Some("three"));
        assert_eq!(web.labels["l"], "");
    }

    #[test]
    fn ports_merge_by_published_and_protocol() {
        use Protocol::{Tcp, Udp};
        let mut base = service();
        base.ports = vec![
            port(80, None, Tcp),
            port(443, None, Tcp),
            port(53, Some(53), Tcp),
            port(53, Some(53), Udp),
            port(80, Some(8080), Tcp),
        ];
        let mut over = service();
        over.ports = vec![port(81, Some(8080), Tcp)];
        let mut base = stack(base);
        merge(&mut base, stack(over));
        assert_eq!(
            base.services["web"].ports,
            [
                port(80, None, Tcp),
                port(443, None, Tcp),
                port(53, Some(53), Tcp),
                port(53, Some(53), Udp),
                port(81, Some(8080), Tcp)
            ]
        );
    }

    #[test]
    fn lists_by_key_and_appended() {
        let secret = |source: &str, target: &str| FileRef {
            source: source.into(),
            target: Some(target.into()),
            uid: None,
            gid: None,
            mode: None,
        };
        let mut base = service();
        base.secrets = vec![secret("s2", "a"), secret("s1", "b")];
        base.deploy.placement.constraints = vec!["node.role==manager".into()];
        base.healthcheck = Some(Healthcheck {
            test: vec!["CMD".into(), "a".into()],
            ..Healthcheck::default()
        });
        let mut over = service();
        over.secrets = vec![secret("s1", "c")];
        over.deploy.placement.constraints = vec!["node.labels.x==y".into()];
        over.healthcheck = Some(Healthcheck {
            test: vec!["CMD".into(), "b".into()],
            ..Healthcheck::default()
        });
        let mut base = stack(base);
        merge(&mut base, stack(over));
        let web = &base.services["web"];
        assert_eq!(web.secrets, [secret("s1", "c"), secret("s2", "a")]);
        assert_eq!(
            web.deploy.placement.constraints,
            ["node.role==manager", "node.labels.x==y"]
        );
        assert_eq!(web.healthcheck.as_ref().unwrap().test, ["CMD", "b"]);
    }

    #[test]
    fn top_level_objects_are_replaced_whole() {
        let mut base = Stack::default();
        base.networks.insert(
            "front".into(),
            crate::model::Network {
                driver: Some("overlay".into()),
                ..Default::default()
            },
        );
        let mut over = Stack::default();
        over.networks.insert(
            "front".into(),
            crate::model::Network {
                attachable: true,
                ..Default::default()
            },
        );
        merge(&mut base, over);
        assert_eq!(base.networks["front"].driver, None);
        assert!(base.networks["front"].attachable);
    }
}
