//! Differential test: shoal's reader against Docker's own (`docker stack config`, Docker CLI 28)
//! on the same files: `examples/*.yml` and the cases under `tests/corpus/`.
//!
//! A corpus case is a directory holding `1.yml`, `2.yml`, ... (merged in that order), an
//! optional `env` file (the variables both readers get, one `KEY=VALUE` a line; nothing else
//! of this process's environment is passed) and an optional `.env`.
//!
//! For every case both readers must agree on whether the files are valid; when they are, the
//! models must be equal key by key (shoal's rendered with `Stack::to_docker_value`, Docker's
//! normalized as [`normalize`] describes), and Docker's "Ignoring unsupported options" warning
//! (from `docker stack deploy` against a socket that does not exist, which prints it before it
//! tries to connect) must name only keys shoal's warning names too.
//!
//! Where shoal differs on purpose, the case is listed below with the reason, and the test
//! checks that the difference is still exactly what is listed: never silently.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use yaml_serde::Value;

/// Cases shoal refuses and Docker's `stack config` accepts.
const SHOAL_ONLY_ERRORS: &[(&str, &str)] = &[
    (
        "shoal-image-only",
        "shoal runs programs, not images: a service needs `command` or `entrypoint`",
    ),
    (
        "shoal-undeclared-network",
        "Docker finds an undeclared network only when it deploys; shoal at load time",
    ),
    (
        "interp-required-dash",
        "`${VAR:?must-be-set}` with VAR unset: Docker matches the dash in the message as a \
         `-` default and yields `be-set`; shoal reports the missing variable",
    ),
];

/// Cases both accept with different models: the keys that differ, and why.
const MODEL_DIFFERENCES: &[(&str, &[&str], &str)] = &[
    (
        "merge-ports-protocols",
        &["services.dns.ports"],
        "Docker merges ports by published port alone: 53/tcp and 53/udp collapse into one, and \
         every unpublished port into the last; shoal keys them by published port and protocol \
         (target and protocol when unpublished)",
    ),
    (
        "merge-healthcheck",
        &["services.web.healthcheck.test"],
        "Docker appends the later file's healthcheck test to the earlier argv; shoal replaces it",
    ),
    (
        "interp-unbraced-dash",
        &["services.web.environment.DIR"],
        "Docker reads `$HOME-dir` as `${HOME-dir}` and drops `-dir`; shoal follows the Compose \
         Specification (an unbraced name ends at the first non-name character)",
    ),
];

/// Service keys shoal ignores (with a warning) that Docker uses silently; Docker's own
/// unsupported keys are in both warnings.
fn shoal_extra_warnings() -> BTreeSet<String> {
    let mut extra: BTreeSet<String> = shoal_compose::unsupported::SHOAL_UNSUPPORTED
        .iter()
        .map(|s| s.to_string())
        .collect();
    for nested in [
        "deploy.placement.preferences",
        "deploy.resources.reservations.generic_resources",
        "networks.driver_opts",
        "networks.ipv4_address",
        "networks.ipv6_address",
        "volumes.consistency",
    ] {
        extra.insert(nested.to_string());
    }
    extra
}

struct Case {
    name: String,
    files: Vec<PathBuf>,
    env: HashMap<String, String>,
    dotenv: Option<HashMap<String, String>>,
}

fn read_vars(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim_matches('"');
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases = Vec::new();
    let examples = root.join("../examples");
    let mut example_files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples/ exists")
        .map(|e| e.expect("readable examples/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    example_files.sort();
    for file in example_files {
        cases.push(Case {
            name: format!(
                "examples/{}",
                file.file_name().unwrap_or_default().display()
            ),
            files: vec![file.canonicalize().expect("example path")],
            env: HashMap::new(),
            dotenv: None,
        });
    }
    let corpus = root.join("tests/corpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/corpus exists")
        .map(|e| e.expect("readable corpus").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let dir = dir.canonicalize().expect("corpus path");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("readable case")
            .map(|e| e.expect("readable case").path())
            .filter(|p| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().parse::<u32>().is_ok())
                    && p.extension().is_some_and(|e| e == "yml")
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no 1.yml", dir.display());
        let dotenv = dir.join(".env");
        cases.push(Case {
            name: dir.file_name().unwrap_or_default().to_string_lossy().into(),
            files,
            env: read_vars(&dir.join("env")),
            dotenv: dotenv.is_file().then(|| read_vars(&dotenv)),
        });
    }
    cases
}

/// `docker` on this process's PATH (the child gets no PATH of its own).
fn docker_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("docker"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `docker` on PATH: the differential test needs the Docker CLI (`docker stack \
                 config` works without a daemon; scripts/setup.sh installs it)"
            )
        })
}

/// A `docker` command with exactly `env` (and a throwaway config dir), never a real daemon.
fn docker(env: &HashMap<String, String>, config_dir: &Path) -> Command {
    let mut command = Command::new(docker_binary());
    command
        .env_clear()
        .envs(env)
        .env("DOCKER_CONFIG", config_dir)
        .env("DOCKER_HOST", "unix:///nonexistent/shoal-differential.sock");
    command
}

fn file_args(command: &mut Command, files: &[PathBuf]) {
    for file in files {
        command.arg("-c").arg(file);
    }
}

/// `docker stack config`: Ok(model) or Err(stderr).
fn docker_config(case: &Case, env: &HashMap<String, String>, dir: &Path) -> Result<Value, String> {
    let mut command = docker(env, dir);
    command.args(["stack", "config"]);
    file_args(&mut command, &case.files);
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run `docker` ({e}): the differential test needs the Docker CLI \
             (`docker stack config` works without a daemon; scripts/setup.sh installs it)"
        )
    });
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(yaml_serde::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: docker printed unreadable YAML: {e}\n{text}", case.name)))
}

/// The keys of Docker's "Ignoring unsupported options" warning.
fn docker_unsupported(case: &Case, env: &HashMap<String, String>, dir: &Path) -> BTreeSet<String> {
    let mut command = docker(env, dir);
    command.args(["stack", "deploy", "--detach=true"]);
    file_args(&mut command, &case.files);
    command.arg("shoal-differential-probe");
    let output = command.output().expect("docker runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    warning_keys(&stderr)
}

fn warning_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Ignoring unsupported options: "))
        .flat_map(|l| l.split(", "))
        .map(str::to_string)
        .collect()
}

/// Docker's output brought to what shoal's model can express:
/// - `x-*` extension keys are dropped (shoal ignores extensions);
/// - service keys shoal ignores (and warns about) are dropped, nested ones too;
/// - long-syntax ports get Docker's defaults (`mode: ingress`, `protocol: tcp`), which shoal's
///   model always carries;
/// - a service network written as `{}` is the same as a bare one (`null`);
/// - empty `bind: {}`/`volume: {}`/`tmpfs: {}` mount options are dropped.
fn normalize(value: &mut Value) {
    strip_extensions(value);
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return;
    };
    let ignored = shoal_extra_warnings();
    for (_, service) in services.iter_mut() {
        let Value::Mapping(service) = service else {
            continue;
        };
        service.retain(|key, _| {
            let key = key.as_str().unwrap_or_default();
            !shoal_compose::unsupported::DOCKER_UNSUPPORTED.contains(&key)
                && !ignored.contains(key)
                && !shoal_compose::unsupported::DEPRECATED
                    .iter()
                    .any(|(k, _)| *k == key)
        });
        if let Some(Value::Sequence(ports)) = service.get_mut("ports") {
            for port in ports {
                if let Value::Mapping(port) = port {
                    port.entry("mode".into()).or_insert("ingress".into());
                    port.entry("protocol".into()).or_insert("tcp".into());
                }
            }
        }
        if let Some(Value::Mapping(networks)) = service.get_mut("networks") {
            for (_, network) in networks.iter_mut() {
                if let Value::Mapping(settings) = network {
                    settings.retain(|k, _| k.as_str() == Some("aliases"));
                    if settings.is_empty() {
                        *network = Value::Null;
                    }
                }
            }
        }
        if let Some(Value::Sequence(volumes)) = service.get_mut("volumes") {
            for volume in volumes {
                if let Value::Mapping(volume) = volume {
                    volume.remove("consistency");
                    volume.retain(|_, v| !matches!(v, Value::Mapping(m) if m.is_empty()));
                }
            }
        }
        if let Some(Value::Mapping(deploy)) = service.get_mut("deploy") {
            if let Some(Value::Mapping(placement)) = deploy.get_mut("placement") {
                placement.remove("preferences");
            }
            if let Some(Value::Mapping(resources)) = deploy.get_mut("resources")
                && let Some(Value::Mapping(reservations)) = resources.get_mut("reservations")
            {
                reservations.remove("generic_resources");
            }
            deploy.retain(|_, v| !matches!(v, Value::Mapping(m) if m.is_empty()));
        }
    }
}

fn strip_extensions(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
            for (_, v) in map.iter_mut() {
                strip_extensions(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

/// Numbers compare by value (Docker's YAML and ours may type them differently).
fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Every key path where `docker` and `shoal` differ, with both values.
fn diff(path: &str, docker: &Value, shoal: &Value, out: &mut Vec<(String, String)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (docker, shoal) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            let keys: BTreeSet<String> = d
                .keys()
                .chain(s.keys())
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_string))
                .collect();
            for key in keys {
                match (d.get(key.as_str()), s.get(key.as_str())) {
                    (Some(dv), Some(sv)) => diff(&join(&key), dv, sv, out),
                    (dv, sv) => out.push((join(&key), format!("docker {dv:?}, shoal {sv:?}"))),
                }
            }
        }
        (Value::Sequence(d), Value::Sequence(s)) if d.len() == s.len() => {
            for (i, (dv, sv)) in d.iter().zip(s).enumerate() {
                let before = out.len();
                diff(&format!("{path}[{i}]"), dv, sv, out);
                // Report a list once, at the list.
                if out.len() > before {
                    out.truncate(before);
                    out.push((path.to_string(), format!("docker {d:?}\n    shoal {s:?}")));
                    return;
                }
            }
        }
        _ if same_scalar(docker, shoal) => {}
        _ => out.push((
            path.to_string(),
            format!("docker {docker:?}, shoal {shoal:?}"),
        )),
    }
}

#[test]
fn shoal_and_docker_read_the_same_files_the_same_way() {
    let config_dir = tempfile::tempdir().expect("temp dir");
    let extra = shoal_extra_warnings();
    let mut failures = Vec::new();
    let mut checked = 0;
    let cases = cases();
    let listed = SHOAL_ONLY_ERRORS
        .iter()
        .map(|(n, _)| *n)
        .chain(MODEL_DIFFERENCES.iter().map(|(n, _, _)| *n));
    for name in listed {
        if !cases.iter().any(|c| c.name == name) {
            failures.push(format!("{name}: documented, but there is no such case"));
        }
    }
    for case in cases {
        checked += 1;
        let shoal = shoal_compose::load(&case.files, &case.env);
        // Deliberate: shoal reads `.env`, `docker stack` does not. Docker gets the `.env`
        // variables through its environment (where the case's env lacks them) so that the rest
        // of the model can be compared; and without them its model must differ.
        let mut docker_env = case.env.clone();
        if let Some(dotenv) = &case.dotenv {
            for (k, v) in dotenv {
                docker_env.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let without = docker_config(&case, &case.env, config_dir.path());
            let with = docker_config(&case, &docker_env, config_dir.path());
            if without.is_ok() && without.ok() == with.as_ref().ok().cloned() {
                failures.push(format!(
                    "{}: docker's model does not change without the .env variables: the case \
                     does not show the .env difference",
                    case.name
                ));
            }
        }
        let docker = docker_config(&case, &docker_env, config_dir.path());
        let shoal_only = SHOAL_ONLY_ERRORS.iter().find(|(n, _)| *n == case.name);
        let differences = MODEL_DIFFERENCES.iter().find(|(n, _, _)| *n == case.name);
        match (&shoal, docker) {
            (Err(shoal_error), Err(_)) => {
                eprintln!("{}: both refuse ({shoal_error})", case.name);
            }
            (Err(shoal_error), Ok(_)) => {
                if shoal_only.is_none() {
                    failures.push(format!(
                        "{}: shoal refuses ({shoal_error}), docker accepts",
                        case.name
                    ));
                }
            }
            (Ok(_), Err(docker_error)) => failures.push(format!(
                "{}: docker refuses ({}), shoal accepts",
                case.name,
                docker_error.trim()
            )),
            (Ok(loaded), Ok(mut docker_value)) => {
                if shoal_only.is_some() {
                    failures.push(format!(
                        "{}: listed as refused by shoal only, but shoal accepts",
                        case.name
                    ));
                }
                normalize(&mut docker_value);
                let mut found = Vec::new();
                diff(
                    "",
                    &docker_value,
                    &loaded.stack.to_docker_value(),
                    &mut found,
                );
                let expected: BTreeSet<&str> = differences
                    .map(|(_, keys, _)| keys.iter().copied().collect())
                    .unwrap_or_default();
                let got: BTreeSet<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
                if got != expected {
                    let detail: Vec<String> =
                        found.iter().map(|(k, d)| format!("  {k}: {d}")).collect();
                    failures.push(format!(
                        "{}: models differ at {got:?} (documented: {expected:?})\n{}",
                        case.name,
                        detail.join("\n")
                    ));
                }
                let docker_keys = docker_unsupported(&case, &docker_env, config_dir.path());
                let shoal_keys: BTreeSet<String> = loaded
                    .warnings
                    .iter()
                    .flat_map(|w| warning_keys(w))
                    .collect();
                let missing: Vec<_> = docker_keys.difference(&shoal_keys).collect();
                let unexplained: Vec<_> = shoal_keys
                    .difference(&docker_keys)
                    .filter(|k| !extra.contains(*k))
                    .collect();
                if !missing.is_empty() || !unexplained.is_empty() {
                    failures.push(format!(
                        "{}: warnings differ: docker names {docker_keys:?}, shoal {shoal_keys:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} cases found");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
