//! A service's `deploy:` section: mode and replicas, placement, update and rollback configs,
//! restart policy, endpoint mode, service labels and resources. Values swarm would refuse when
//! the service is created (an unknown failure action, replicas on a global service) are
//! refused here, at load time, with the key that is wrong.

use crate::{
    error::{Res, invalid},
    model::{
        Deploy, DeployMode, EndpointMode, FailureAction, Placement, ResourceSpec, Resources,
        RestartCondition, RestartPolicy, UpdateConfig, UpdateOrder,
    },
    node::Node,
};

/// Reads `deploy:` (null is an empty section); `unsupported` gets the keys shoal ignores.
pub(crate) fn parse(node: Node, unsupported: &mut Vec<String>) -> Res<Deploy> {
    let mut deploy = Deploy::default();
    if node.is_null() {
        return Ok(deploy);
    }
    let fields = node.fields(
        &[
            "mode",
            "endpoint_mode",
            "replicas",
            "labels",
            "rollback_config",
            "update_config",
            "resources",
            "restart_policy",
            "placement",
        ],
        false,
    )?;
    for key in fields.keys() {
        let Some((value, path)) = fields.get(key) else {
            continue;
        };
        let field = Node::new(value, path);
        match key {
            "mode" => {
                deploy.mode = match field.str()? {
                    "replicated" => Some(DeployMode::Replicated),
                    "global" => Some(DeployMode::Global),
                    "" => None,
                    other => {
                        return Err(invalid(
                            path,
                            format!("unknown mode `{other}` (replicated or global)"),
                        ));
                    }
                }
            }
            "endpoint_mode" => {
                deploy.endpoint_mode = match field.str()? {
                    "vip" => Some(EndpointMode::Vip),
                    "dnsrr" => Some(EndpointMode::Dnsrr),
                    "" => None,
                    other => {
                        return Err(invalid(
                            path,
                            format!("unknown endpoint mode `{other}` (vip or dnsrr)"),
                        ));
                    }
                }
            }
            "replicas" => deploy.replicas = Some(field.u64()?),
            "labels" => deploy.labels = field.labels()?,
            "update_config" => deploy.update_config = Some(update_config(field)?),
            "rollback_config" => deploy.rollback_config = Some(update_config(field)?),
            "restart_policy" => deploy.restart_policy = Some(restart_policy(field)?),
            "placement" => deploy.placement = placement(field, unsupported)?,
            _ => deploy.resources = resources(field, unsupported)?,
        }
    }
    if deploy.mode == Some(DeployMode::Global)
        && let Some((_, path)) = fields.get("replicas")
    {
        return Err(invalid(
            path,
            "replicas can only be used with replicated mode",
        ));
    }
    Ok(deploy)
}

fn update_config(node: Node) -> Res<UpdateConfig> {
    let fields = node.fields(
        &[
            "parallelism",
            "delay",
            "failure_action",
            "monitor",
            "max_failure_ratio",
            "order",
        ],
        false,
    )?;
    let mut config = UpdateConfig::default();
    if let Some((value, path)) = fields.get("parallelism") {
        config.parallelism = Some(Node::new(value, path).u64()?);
    }
    if let Some((value, path)) = fields.get("delay") {
        config.delay = Some(Node::new(value, path).duration()?);
    }
    if let Some((value, path)) = fields.get("monitor") {
        config.monitor = Some(Node::new(value, path).duration()?);
    }
    if let Some((value, path)) = fields.get("failure_action") {
        config.failure_action = match Node::new(value, path).str()? {
            "pause" => Some(FailureAction::Pause),
            "continue" => Some(FailureAction::Continue),
            "rollback" => Some(FailureAction::Rollback),
            "" => None,
            other => {
                return Err(invalid(
                    path,
                    format!("unknown failure action `{other}` (pause, continue or rollback)"),
                ));
            }
        };
    }
    if let Some((value, path)) = fields.get("max_failure_ratio") {
        let ratio = Node::new(value, path).f64()?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid(path, format!("{ratio} is not between 0 and 1")));
        }
        config.max_failure_ratio = Some(ratio as f32);
    }
    if let Some((value, path)) = fields.get("order") {
        config.order = match Node::new(value, path).str()? {
            "stop-first" => Some(UpdateOrder::StopFirst),
            "start-first" => Some(UpdateOrder::StartFirst),
            other => {
                return Err(invalid(
                    path,
                    format!("unknown order `{other}` (stop-first or start-first)"),
                ));
            }
        };
    }
    Ok(config)
}

fn restart_policy(node: Node) -> Res<RestartPolicy> {
    let fields = node.fields(&["condition", "delay", "max_attempts", "window"], false)?;
    let mut policy = RestartPolicy::default();
    if let Some((value, path)) = fields.get("condition") {
        policy.condition = match Node::new(value, path).str()? {
            "none" => Some(RestartCondition::None),
            "on-failure" => Some(RestartCondition::OnFailure),
            "any" => Some(RestartCondition::Any),
            "" => None,
            other => {
                return Err(invalid(
                    path,
                    format!("unknown restart condition `{other}` (none, on-failure or any)"),
                ));
            }
        };
    }
    if let Some((value, path)) = fields.get("delay") {
        policy.delay = Some(Node::new(value, path).duration()?);
    }
    if let Some((value, path)) = fields.get("max_attempts") {
        policy.max_attempts = Some(Node::new(value, path).u64()?);
    }
    if let Some((value, path)) = fields.get("window") {
        policy.window = Some(Node::new(value, path).duration()?);
    }
    Ok(policy)
}

fn placement(node: Node, unsupported: &mut Vec<String>) -> Res<Placement> {
    let fields = node.fields(
        &["constraints", "preferences", "max_replicas_per_node"],
        false,
    )?;
    let mut placement = Placement::default();
    if let Some((value, path)) = fields.get("constraints") {
        for (item, path) in Node::new(value, path).items()? {
            placement
                .constraints
                .push(Node::new(item, &path).str()?.to_string());
        }
    }
    if let Some((value, path)) = fields.get("preferences") {
        for (item, path) in Node::new(value, path).items()? {
            let preference = Node::new(item, &path).fields(&["spread"], false)?;
            if let Some((value, path)) = preference.get("spread") {
                Node::new(value, path).str()?;
            }
        }
        unsupported.push("deploy.placement.preferences".into());
    }
    if let Some((value, path)) = fields.get("max_replicas_per_node") {
        placement.max_replicas_per_node = Some(Node::new(value, path).u64()?).filter(|n| *n > 0);
    }
    Ok(placement)
}

fn resources(node: Node, unsupported: &mut Vec<String>) -> Res<Resources> {
    let fields = node.fields(&["limits", "reservations"], false)?;
    let mut resources = Resources::default();
    if let Some((value, path)) = fields.get("limits") {
        resources.limits = Some(resource_spec(
            Node::new(value, path),
            &["cpus", "memory", "pids"],
            unsupported,
        )?);
    }
    if let Some((value, path)) = fields.get("reservations") {
        resources.reservations = Some(resource_spec(
            Node::new(value, path),
            &["cpus", "memory", "generic_resources"],
            unsupported,
        )?);
    }
    Ok(resources)
}

fn resource_spec(node: Node, known: &[&str], unsupported: &mut Vec<String>) -> Res<ResourceSpec> {
    let fields = node.fields(known, false)?;
    let mut spec = ResourceSpec::default();
    if let Some((value, path)) = fields.get("cpus") {
        let cpus = Node::new(value, path).str()?;
        if crate::size::parse_nano_cpus(cpus).is_none() {
            return Err(invalid(path, format!("invalid number of CPUs `{cpus}`")));
        }
        spec.cpus = Some(cpus.to_string());
    }
    if let Some((value, path)) = fields.get("memory") {
        let memory = Node::new(value, path).str()?;
        let bytes = crate::size::parse_bytes(memory).map_err(|why| invalid(path, why))?;
        spec.memory = Some(bytes).filter(|b| *b > 0);
    }
    if let Some((value, path)) = fields.get("pids") {
        spec.pids = Some(Node::new(value, path).i64()?).filter(|p| *p != 0);
    }
    if let Some((value, path)) = fields.get("generic_resources") {
        Node::new(value, path).items()?;
        unsupported.push("deploy.resources.reservations.generic_resources".into());
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypath::KeyPath;
    use std::time::Duration;

    fn read(text: &str) -> Res<Deploy> {
        let value: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("deploy");
        parse(Node::new(&value, &path), &mut Vec::new())
    }

    #[test]
    fn reads_a_full_section() {
        let deploy = read(
            "{mode: replicated, replicas: 3, endpoint_mode: dnsrr, labels: [a=b],
              update_config: {parallelism: 2, delay: 10s, failure_action: rollback, order: start-first, max_failure_ratio: 0.25},
              restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m},
              placement: {constraints: [node.role==manager], max_replicas_per_node: 2},
              resources: {limits: {cpus: '0.5', memory: 512M, pids: 100}, reservations: {memory: 64m}}}",
        )
        .unwrap();
        assert_eq!(deploy.mode, Some(DeployMode::Replicated));
        assert_eq!(deploy.replicas, Some(3));
        assert_eq!(deploy.endpoint_mode, Some(EndpointMode::Dnsrr));
        assert_eq!(deploy.labels["a"], "b");
        let update = deploy.update_config.unwrap();
        assert_eq!(update.delay, Some(Duration::from_secs(10)));
        assert_eq!(update.failure_action, Some(FailureAction::Rollback));
        assert_eq!(update.order, Some(UpdateOrder::StartFirst));
        assert_eq!(update.max_failure_ratio, Some(0.25));
        let restart = deploy.restart_policy.unwrap();
        assert_eq!(restart.window, Some(Duration::from_secs(120)));
        assert_eq!(deploy.placement.constraints, ["node.role==manager"]);
        let limits = deploy.resources.limits.unwrap();
        assert_eq!(limits.nano_cpus(), Some(500_000_000));
        assert_eq!(limits.memory, Some(512 << 20));
        assert_eq!(
            deploy.resources.reservations.unwrap().memory,
            Some(64 << 20)
        );
    }

    #[test]
    fn null_is_empty() {
        assert_eq!(read("null").unwrap(), Deploy::default());
    }

    #[test]
    fn bad_sections() {
        for bad in [
            "{mode: replicated-job}",
            "{mode: global, replicas: 2}",
            "{replicas: '3'}",
            "{replicas: -1}",
            "{endpoint_mode: rr}",
            "{update_config: {failure_action: explode}}",
            "{update_config: {order: random}}",
            "{update_config: {delay: 10}}",
            "{update_config: {max_failure_ratio: 2}}",
            "{restart_policy: {condition: always}}",
            "{resources: {limits: {cpus: 0.5}}}",
            "{resources: {limits: {memory: lots}}}",
            "{placement: {constraints: node.role==manager}}",
            "{unknown: 1}",
        ] {
            assert!(read(bad).is_err(), "{bad} was accepted");
        }
    }
}
