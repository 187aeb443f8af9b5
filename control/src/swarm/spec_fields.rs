//! The spec fields a compose stack needs besides the task's command: labels (of services and
//! networks), network-scoped aliases, the task's process settings (working directory, user,
//! hostname, stop signal), its health check and the per-node replica limit. Checked when the leader accepts a
//! spec, as Docker's daemon checks them (in its words where it has any), and converted between
//! the API and the model; `convert` calls these for the rest of the spec.

use std::collections::BTreeMap;

use super::{error::Error, lookup::resolve_network};
use crate::{
    api,
    cluster::{
        ClusterState, ServiceMode, health::HealthCheck, limits, signal::parse_signal, template,
    },
};

/// The kernel's limit on a hostname (HOST_NAME_MAX).
pub const MAX_HOSTNAME: usize = 64;

/// A service's fields handled here, checked, in the model's terms.
pub struct Fields {
    pub labels: BTreeMap<String, String>,
    pub network_aliases: BTreeMap<String, Vec<String>>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: String,
    pub max_replicas_per_node: u64,
    pub healthcheck: Option<HealthCheck>,
}

/// Checks `spec`'s fields; `networks` are the spec's network IDs, already resolved.
pub fn from_api(
    spec: &api::ServiceSpec,
    mode: &ServiceMode,
    networks: &[String],
    state: &ClusterState,
) -> Result<Fields, Error> {
    if spec.max_replicas_per_node > 0 && matches!(mode, ServiceMode::Global) {
        // Docker's words.
        return Err(Error::invalid(
            "replicas-max-per-node can only be used with replicated mode",
        ));
    }
    if !spec.workdir.is_empty() && (!spec.workdir.starts_with('/') || spec.workdir.contains('\0')) {
        return Err(Error::invalid(format!(
            "the working directory '{}' is invalid, it needs to be an absolute path",
            spec.workdir
        )));
    }
    check_user(&spec.user)?;
    check_hostname(&spec.hostname)?;
    parse_signal(&spec.stop_signal).map_err(|e| Error::invalid(e.to_string()))?;
    let healthcheck = spec.healthcheck.as_ref().map(healthcheck_from_api);
    if let Some(check) = &healthcheck {
        check.validate().map_err(Error::invalid)?;
    }
    Ok(Fields {
        labels: labels_from_api(&spec.labels, "service")?,
        network_aliases: aliases_from_api(&spec.network_aliases, networks, state)?,
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        stop_signal: spec.stop_signal.clone(),
        max_replicas_per_node: spec.max_replicas_per_node,
        healthcheck,
    })
}

fn healthcheck_from_api(h: &api::HealthCheckMsg) -> HealthCheck {
    HealthCheck {
        test: h.test.clone(),
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        start_period_ms: h.start_period_ms,
        retries: h.retries,
    }
}

pub fn healthcheck_to_api(h: &HealthCheck) -> api::HealthCheckMsg {
    api::HealthCheckMsg {
        test: h.test.clone(),
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        start_period_ms: h.start_period_ms,
        retries: h.retries,
    }
}

/// `--label`s of a service or a network (`kind`): keys must be non-empty; the same key twice
/// keeps the last value, as Docker's map does.
pub fn labels_from_api(
    labels: &[api::KeyValue],
    kind: &str,
) -> Result<BTreeMap<String, String>, Error> {
    if labels.len() > limits::MAX_LABELS {
        return Err(Error::invalid(format!(
            "too many labels: {}, a {kind} may have at most {}",
            labels.len(),
            limits::MAX_LABELS
        )));
    }
    let bytes: usize = labels.iter().map(|l| l.key.len() + l.value.len()).sum();
    if bytes > limits::MAX_LABELS_BYTES {
        return Err(Error::invalid(format!(
            "the {kind}'s labels are too large: {bytes} bytes, at most {}",
            limits::MAX_LABELS_BYTES
        )));
    }
    let mut model = BTreeMap::new();
    for label in labels {
        if label.key.trim().is_empty() {
            return Err(Error::invalid(format!(
                "invalid label '{}={}': empty name",
                label.key, label.value
            )));
        }
        model.insert(label.key.clone(), label.value.clone());
    }
    Ok(model)
}

pub fn labels_to_api(labels: &BTreeMap<String, String>) -> Vec<api::KeyValue> {
    labels
        .iter()
        .map(|(key, value)| api::KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// `--network name=NET,alias=A`: each entry's network (a reference) must be one of the
/// service's; entries for the same network merge, and an alias given twice counts once.
fn aliases_from_api(
    entries: &[api::NetworkAliases],
    networks: &[String],
    state: &ClusterState,
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let count: usize = entries.iter().map(|e| e.aliases.len()).sum();
    if count > limits::MAX_ALIASES {
        return Err(Error::invalid(format!(
            "too many network aliases: {count}, a service may have at most {}",
            limits::MAX_ALIASES
        )));
    }
    let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in entries.iter().filter(|e| !e.aliases.is_empty()) {
        let network = resolve_network(state, &entry.network)?;
        if !networks.contains(&network.id) {
            return Err(Error::invalid(format!(
                "network {} has aliases but the service is not attached to it",
                network.name
            )));
        }
        let aliases = model.entry(network.id.clone()).or_default();
        for alias in &entry.aliases {
            check_alias(alias)?;
            if !aliases.contains(alias) {
                aliases.push(alias.clone());
            }
        }
    }
    Ok(model)
}

pub fn aliases_to_api(aliases: &BTreeMap<String, Vec<String>>) -> Vec<api::NetworkAliases> {
    aliases
        .iter()
        .map(|(network, aliases)| api::NetworkAliases {
            network: network.clone(),
            aliases: aliases.clone(),
        })
        .collect()
}

/// An alias is a name the embedded DNS answers: dot-separated labels of letters, digits, `_`
/// and `-`, each 1 to 63 characters, 255 in all.
fn check_alias(alias: &str) -> Result<(), Error> {
    let ok = alias.len() <= 255
        && alias.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid network alias {alias:?}: only [a-zA-Z0-9_-] in dot-separated labels of \
             1 to 63 characters"
        )))
    }
}

/// `USER[:GROUP]`: names or IDs, which the node looks up (in its /etc/passwd and /etc/group).
fn check_user(user: &str) -> Result<(), Error> {
    let bad_char = user.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad_char || user.matches(':').count() > 1 {
        return Err(Error::invalid(format!(
            "invalid user {user:?}: expected USER[:GROUP], names or numeric IDs"
        )));
    }
    Ok(())
}

/// A hostname the kernel takes: at most 64 characters of letters, digits, `_`, `.` and `-`
/// (a stack's service names have `_`). With placeholders, the text around them is checked
/// here and the length on the node, once they are filled in.
fn check_hostname(hostname: &str) -> Result<(), Error> {
    let invalid = |why: String| Error::invalid(format!("invalid hostname {hostname:?}: {why}"));
    template::check(hostname).map_err(|e| invalid(e.to_string()))?;
    // The placeholders' values are names of the same alphabet.
    let literal = template::expand(hostname, &template::TemplateContext::default())
        .map_err(|e| invalid(e.to_string()))?;
    if !literal
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(invalid("only [a-zA-Z0-9_.-] are allowed".into()));
    }
    if !template::has_placeholders(hostname) && hostname.len() > MAX_HOSTNAME {
        return Err(invalid(format!("at most {MAX_HOSTNAME} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> api::ServiceSpec {
        api::ServiceSpec {
            name: "web".into(),
            command: vec!["sleep".into()],
            ..Default::default()
        }
    }

    fn refusal(spec: &api::ServiceSpec, mode: ServiceMode) -> String {
        match from_api(spec, &mode, &[], &ClusterState::default()) {
            Err(Error::Invalid(message)) => message,
            Err(other) => panic!("{spec:?}: refused as {other:?}"),
            Ok(_) => panic!("{spec:?} accepted"),
        }
    }

    const REPLICATED: ServiceMode = ServiceMode::Replicated { replicas: 1 };

    #[test]
    fn process_settings_are_checked_as_docker_does() {
        let good = api::ServiceSpec {
            workdir: "/srv/app".into(),
            user: "nobody:nogroup".into(),
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            stop_signal: "SIGUSR1".into(),
            max_replicas_per_node: 2,
            ..spec()
        };
        let fields = from_api(&good, &REPLICATED, &[], &ClusterState::default()).unwrap();
        assert_eq!(fields.stop_signal, "SIGUSR1");
        assert_eq!(fields.max_replicas_per_node, 2);
        for (bad, mode, needle) in [
            (
                api::ServiceSpec {
                    workdir: "srv".into(),
                    ..spec()
                },
                REPLICATED,
                "the working directory 'srv' is invalid, it needs to be an absolute path",
            ),
            (
                api::ServiceSpec {
                    user: "a:b:c".into(),
                    ..spec()
                },
                REPLICATED,
                "invalid user \"a:b:c\"",
            ),
            (
                api::ServiceSpec {
                    hostname: "a b".into(),
                    ..spec()
                },
                REPLICATED,
                "only [a-zA-Z0-9_.-]",
            ),
            (
                api::ServiceSpec {
                    hostname: "x".repeat(65),
                    ..spec()
                },
                REPLICATED,
                "at most 64 characters",
            ),
            (
                api::ServiceSpec {
                    hostname: "{{.Service.Labels}}".into(),
                    ..spec()
                },
                REPLICATED,
                "unsupported placeholder {{.Service.Labels}}",
            ),
            (
                api::ServiceSpec {
                    stop_signal: "SIGFOO".into(),
                    ..spec()
                },
                REPLICATED,
                "invalid signal: SIGFOO",
            ),
            (
                api::ServiceSpec {
                    max_replicas_per_node: 1,
                    ..spec()
                },
                ServiceMode::Global,
                "replicas-max-per-node can only be used with replicated mode",
            ),
        ] {
            let message = refusal(&bad, mode);
            assert!(message.contains(needle), "{message}");
            assert_eq!(message.lines().count(), 1);
        }
    }

    #[test]
    fn labels_keep_the_last_value_and_are_bounded() {
        let kv = |k: &str, v: &str| api::KeyValue {
            key: k.into(),
            value: v.into(),
        };
        let labels = labels_from_api(
            &[
                kv("a", "1"),
                kv("com.docker.stack.namespace", "web"),
                kv("a", "2"),
            ],
            "service",
        )
        .unwrap();
        assert_eq!(labels.get("a").map(String::as_str), Some("2"));
        assert_eq!(labels_to_api(&labels).len(), 2);
        assert!(labels_from_api(&[kv("", "x")], "network").is_err());
        let many: Vec<_> = (0..=limits::MAX_LABELS)
            .map(|i| kv(&i.to_string(), ""))
            .collect();
        assert!(labels_from_api(&many, "service").is_err());
        let big = [kv("k", &"v".repeat(limits::MAX_LABELS_BYTES))];
        assert!(labels_from_api(&big, "service").is_err());
    }

    #[test]
    fn aliases_resolve_their_network_and_must_be_on_the_service() {
        let mut state = ClusterState::default();
        for (id, name) in [("id-front", "front"), ("id-back", "back")] {
            let network = crate::cluster::network::Network {
                id: id.into(),
                name: name.into(),
                driver: "overlay".into(),
                subnet: "10.0.1.0/24".parse().unwrap(),
                gateway: "10.0.1.1".parse().unwrap(),
                vni: 4097,
                attachable: false,
                internal: false,
                ingress: false,
                created_at_ms: 0,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
            };
            state.networks.insert(id.into(), network);
        }
        let entry = |network: &str, aliases: &[&str]| api::NetworkAliases {
            network: network.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        };
        let networks = ["id-front".to_string()];
        let model = aliases_from_api(
            &[
                entry("front", &["api", "web"]),
                entry("id-front", &["api", "x"]),
            ],
            &networks,
            &state,
        )
        .unwrap();
        assert_eq!(
            model,
            BTreeMap::from([(
                "id-front".to_string(),
                vec!["api".into(), "web".into(), "x".into()]
            )])
        );
        assert_eq!(aliases_to_api(&model)[0].network, "id-front");
        let refused =
            |entries: &[api::NetworkAliases]| match aliases_from_api(entries, &networks, &state) {
                Err(e) => e.to_string(),
                Ok(m) => panic!("{entries:?} accepted: {m:?}"),
            };
        assert!(
            refused(&[entry("back", &["api"])])
                .contains("network back has aliases but the service is not attached to it")
        );
        assert!(refused(&[entry("nowhere", &["api"])]).contains("network nowhere not found"));
        assert!(refused(&[entry("front", &["a b"])]).contains("invalid network alias"));
        let many: Vec<String> = (0..=limits::MAX_ALIASES).map(|i| format!("a{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(refused(&[entry("front", &many)]).contains("too many network aliases"));
    }

    #[test]
    fn aliases_are_dns_names() {
        for good in ["api", "web_api", "api.internal", "a-1"] {
            assert!(check_alias(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", ".api", "api.", "a..b", &"x".repeat(64), "é"] {
            assert!(check_alias(bad).is_err(), "{bad:?}");
        }
    }
}
