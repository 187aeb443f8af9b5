//! `shoal secret | config create | ls | inspect | rm`: Docker's columns, JSON shapes and
//! messages. A secret's data goes to the leader and is never shown again; a config's is shown
//! by `inspect` (base64 in JSON, as Docker's).

use std::{fmt::Write as _, io::Read};

use anyhow::Context as _;
use shoal_control::{
    api::{ConfigSpec, Empty, KeyValue, ObjectRef, SecretSpec},
    clock::now_ms,
    cluster::objects::ObjectKind,
    wire_limits::cluster_client,
};
use tonic::transport::Channel;

use crate::{
    cli::{
        OutputFormat,
        objects::{
            ConfigCommand, ObjectCreateArgs, ObjectFilter, ObjectInspectArgs, ObjectLsArgs,
            SecretCommand,
        },
    },
    client::{status_error, with_agent},
    table,
    time_format::{ago, rfc3339},
};

/// A secret or config as the commands show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shown {
    id: String,
    pub(crate) name: String,
    pub(crate) labels: Vec<KeyValue>,
    version: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    /// A config's data, when inspected; never a secret's (the API has no field for it).
    data: Option<Vec<u8>>,
}

/// The four commands, for either kind.
enum Request {
    Create(ObjectCreateArgs),
    Ls(ObjectLsArgs),
    Inspect(ObjectInspectArgs),
    Rm(Vec<String>),
}

pub fn run_secret(host: &str, command: SecretCommand) -> anyhow::Result<()> {
    let request = match command {
        SecretCommand::Create(args) => Request::Create(args),
        SecretCommand::Ls(args) => Request::Ls(args),
        SecretCommand::Inspect(args) => Request::Inspect(args),
        SecretCommand::Rm(args) => Request::Rm(args.names),
    };
    run(host, ObjectKind::Secret, request)
}

pub fn run_config(host: &str, command: ConfigCommand) -> anyhow::Result<()> {
    let request = match command {
        ConfigCommand::Create(args) => Request::Create(args),
        ConfigCommand::Ls(args) => Request::Ls(args),
        ConfigCommand::Inspect(args) => Request::Inspect(args),
        ConfigCommand::Rm(args) => Request::Rm(args.names),
    };
    run(host, ObjectKind::Config, request)
}

fn run(host: &str, kind: ObjectKind, request: Request) -> anyhow::Result<()> {
    // Read before connecting: a file that cannot be read asks nothing of the cluster.
    let data = match &request {
        Request::Create(args) => Some(read_data(kind, &args.file)?),
        _ => None,
    };
    with_agent(host, async |channel| match request {
        Request::Create(args) => {
            let labels = args
                .labels
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect();
            let id = create(channel, kind, args.name, labels, data.unwrap_or_default()).await?;
            println!("{id}");
            Ok(())
        }
        Request::Ls(args) => {
            let all = list(channel, kind).await?;
            print!("{}", render_list(kind, &all, &args, now_ms()));
            Ok(())
        }
        Request::Inspect(args) => {
            let mut found = Vec::new();
            let mut failures = Vec::new();
            for name in &args.names {
                match inspect(channel.clone(), kind, name).await {
                    Ok(object) => found.push(object),
                    Err(e) => failures.push(e),
                }
            }
            if args.pretty {
                print!("{}", pretty(kind, &found));
            } else if !found.is_empty() || failures.is_empty() {
                let shaped: Vec<serde_json::Value> =
                    found.iter().map(|o| docker_shape(kind, o)).collect();
                println!("{}", serde_json::to_string_pretty(&shaped)?);
            }
            last_of(failures)
        }
        Request::Rm(names) => {
            let mut failures = Vec::new();
            for name in names {
                match remove(channel.clone(), kind, &name).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => failures.push(e),
                }
            }
            last_of(failures)
        }
    })
}

/// The content, from a file or STDIN (`-`). At most the kind's limit is read: longer content
/// is refused by the leader, in Docker's words.
fn read_data(kind: ObjectKind, file: &str) -> anyhow::Result<Vec<u8>> {
    let limit = kind.max_bytes() as u64;
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut data)
            .context("reading STDIN")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .with_context(|| format!("reading {file}"))?;
    }
    Ok(data)
}

/// Creates a secret or config; its ID.
pub(crate) async fn create(
    channel: Channel,
    kind: ObjectKind,
    name: String,
    labels: Vec<KeyValue>,
    data: Vec<u8>,
) -> anyhow::Result<String> {
    let mut cluster = cluster_client(channel);
    let id = match kind {
        ObjectKind::Secret => {
            let spec = SecretSpec { name, labels, data };
            cluster
                .create_secret(spec)
                .await
                .map_err(status_error)?
                .into_inner()
                .id
        }
        ObjectKind::Config => {
            let spec = ConfigSpec { name, labels, data };
            cluster
                .create_config(spec)
                .await
                .map_err(status_error)?
                .into_inner()
                .id
        }
    };
    Ok(id)
}

/// Every secret (or config), without data.
pub(crate) async fn list(channel: Channel, kind: ObjectKind) -> anyhow::Result<Vec<Shown>> {
    let mut cluster = cluster_client(channel);
    Ok(match kind {
        ObjectKind::Secret => cluster
            .list_secrets(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
            .secrets
            .into_iter()
            .map(shown_secret)
            .collect(),
        ObjectKind::Config => cluster
            .list_configs(Empty {})
            .await
            .map_err(status_error)?
            .into_inner()
            .configs
            .into_iter()
            .map(shown_config)
            .collect(),
    })
}

async fn inspect(channel: Channel, kind: ObjectKind, reference: &str) -> anyhow::Result<Shown> {
    let mut cluster = cluster_client(channel);
    let request = ObjectRef {
        reference: reference.to_string(),
    };
    Ok(match kind {
        ObjectKind::Secret => shown_secret(
            cluster
                .inspect_secret(request)
                .await
                .map_err(status_error)?
                .into_inner(),
        ),
        ObjectKind::Config => shown_config(
            cluster
                .inspect_config(request)
                .await
                .map_err(status_error)?
                .into_inner(),
        ),
    })
}

/// Removes a secret or config by ID, name or unique ID prefix.
pub(crate) async fn remove(
    channel: Channel,
    kind: ObjectKind,
    reference: &str,
) -> anyhow::Result<()> {
    let mut cluster = cluster_client(channel);
    let request = ObjectRef {
        reference: reference.to_string(),
    };
    match kind {
        ObjectKind::Secret => cluster.remove_secret(request).await,
        ObjectKind::Config => cluster.remove_config(request).await,
    }
    .map_err(status_error)?;
    Ok(())
}

fn shown_secret(s: shoal_control::api::SecretInfo) -> Shown {
    Shown {
        id: s.id,
        name: s.name,
        labels: s.labels,
        version: s.version,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        data: None,
    }
}

fn shown_config(c: shoal_control::api::ConfigInfo) -> Shown {
    Shown {
        id: c.id,
        name: c.name,
        labels: c.labels,
        version: c.version,
        created_at_ms: c.created_at_ms,
        updated_at_ms: c.updated_at_ms,
        data: Some(c.data),
    }
}

/// As Docker, a command over several objects does what it can and reports each failure on a
/// line of its own; the last one is the command's error.
fn last_of(mut failures: Vec<anyhow::Error>) -> anyhow::Result<()> {
    let Some(last) = failures.pop() else {
        return Ok(());
    };
    for failure in failures {
        eprintln!("error: {failure}");
    }
    Err(last)
}

/// Docker's filters: IDs and names by prefix (any of them), labels (all of them).
fn matches(o: &Shown, filters: &[ObjectFilter]) -> bool {
    let mut named = filters
        .iter()
        .filter(|f| matches!(f, ObjectFilter::Id(_) | ObjectFilter::Name(_)))
        .peekable();
    let by_name = named.peek().is_none()
        || named.any(|f| match f {
            ObjectFilter::Id(prefix) => o.id.starts_with(prefix.as_str()),
            ObjectFilter::Name(prefix) => o.name.starts_with(prefix.as_str()),
            ObjectFilter::Label { .. } => false,
        });
    by_name
        && filters.iter().all(|f| match f {
            ObjectFilter::Label { key, value } => o
                .labels
                .iter()
                .any(|kv| kv.key == *key && value.as_ref().is_none_or(|value| kv.value == *value)),
            _ => true,
        })
}

fn render_list(kind: ObjectKind, all: &[Shown], args: &ObjectLsArgs, now_ms: u64) -> String {
    let mut shown: Vec<&Shown> = all.iter().filter(|o| matches(o, &args.filters)).collect();
    shown.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        return shown.iter().map(|o| format!("{}\n", o.id)).collect();
    }
    let secret = kind == ObjectKind::Secret;
    match args.format {
        OutputFormat::Json => shown
            .iter()
            .map(|o| {
                let mut json = serde_json::json!({
                    "CreatedAt": ago(now_ms, o.created_at_ms),
                    "ID": o.id,
                    "Labels": labels_line(&o.labels),
                    "Name": o.name,
                    "UpdatedAt": ago(now_ms, o.updated_at_ms),
                });
                if secret {
                    json["Driver"] = "".into();
                }
                format!("{json}\n")
            })
            .collect(),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|o| {
                    let mut row = vec![o.id.clone(), o.name.clone()];
                    if secret {
                        // Docker's built-in store has no driver name.
                        row.push(String::new());
                    }
                    row.push(ago(now_ms, o.created_at_ms));
                    row.push(ago(now_ms, o.updated_at_ms));
                    row
                })
                .collect();
            if secret {
                table::render(&["ID", "NAME", "DRIVER", "CREATED", "UPDATED"], &rows)
            } else {
                table::render(&["ID", "NAME", "CREATED", "UPDATED"], &rows)
            }
        }
    }
}

fn labels_line(labels: &[KeyValue]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    pairs.join(",")
}

/// `docker secret inspect` / `docker config inspect`: `Spec.Data` (base64) for a config only.
fn docker_shape(kind: ObjectKind, o: &Shown) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = o
        .labels
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().into()))
        .collect();
    let mut spec = serde_json::json!({ "Name": o.name, "Labels": labels });
    if kind == ObjectKind::Config {
        spec["Data"] = base64(o.data.as_deref().unwrap_or_default()).into();
    }
    serde_json::json!({
        "ID": o.id,
        "Version": { "Index": o.version },
        "CreatedAt": rfc3339(o.created_at_ms / 1000),
        "UpdatedAt": rfc3339(o.updated_at_ms / 1000),
        "Spec": spec,
    })
}

/// `--pretty`: Docker's templates (their spacing included); a config's data as it is.
fn pretty(kind: ObjectKind, objects: &[Shown]) -> String {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "ID:              {}", o.id);
        let _ = writeln!(out, "Name:              {}", o.name);
        if !o.labels.is_empty() {
            out.push_str("Labels:\n");
            for kv in &o.labels {
                if kv.value.is_empty() {
                    let _ = writeln!(out, " - {}", kv.key);
                } else {
                    let _ = writeln!(out, " - {}={}", kv.key, kv.value);
                }
            }
        }
        if kind == ObjectKind::Secret {
            out.push_str("Driver:            \n");
        }
        let _ = writeln!(out, "Created at:        {}", go_time(o.created_at_ms));
        let _ = writeln!(out, "Updated at:        {}", go_time(o.updated_at_ms));
        if kind == ObjectKind::Config {
            out.push_str("Data:\n");
            out.push_str(&String::from_utf8_lossy(
                o.data.as_deref().unwrap_or_default(),
            ));
            out.push('\n');
        }
    }
    out
}

/// A time as Go prints a `time.Time` (Docker's pretty output): `2026-11-23 07:24:41.5 +0000 UTC`.
fn go_time(ms: u64) -> String {
    let rfc = rfc3339(ms / 1000);
    let (date, time) = rfc
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or((rfc.as_str(), ""));
    let fraction = match ms % 1000 {
        0 => String::new(),
        f => format!(".{f:03}").trim_end_matches('0').to_string(),
    };
    format!("{date} {time}{fraction} +0000 UTC")
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T07:24:41Z.
    const NOW_MS: u64 = 1_795_418_681_000;

    fn object(id: &str, name: &str, labels: &[(&str, &str)], data: Option<&[u8]>) -> Shown {
        Shown {
            id: id.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            version: 1,
            created_at_ms: NOW_MS - 90_000,
            updated_at_ms: NOW_MS - 5_000,
            data: data.map(<[u8]>::to_vec),
        }
    }

    fn ls(kind: ObjectKind, all: &[Shown], quiet: bool, filters: Vec<ObjectFilter>) -> String {
        let args = ObjectLsArgs {
            quiet,
            filters,
            format: OutputFormat::Table,
        };
        render_list(kind, all, &args, NOW_MS)
    }

    #[test]
    fn ls_has_dockers_columns_and_filters() {
        let all = [
            object(
                "s2aaaaaaaaaaaaaaaaaaaaaaa",
                "web-key",
                &[("env", "prod")],
                None,
            ),
            object("s1bbbbbbbbbbbbbbbbbbbbbbb", "db", &[], None),
        ];
        assert_eq!(
            ls(ObjectKind::Secret, &all, false, vec![]),
            "ID                          NAME      DRIVER   CREATED              UPDATED\n\
             s1bbbbbbbbbbbbbbbbbbbbbbb   db                 About a minute ago   5 seconds ago\n\
             s2aaaaaaaaaaaaaaaaaaaaaaa   web-key            About a minute ago   5 seconds ago\n"
        );
        assert_eq!(
            ls(ObjectKind::Config, &all, false, vec![]).lines().next(),
            Some("ID                          NAME      CREATED              UPDATED")
        );
        let q = |filters| ls(ObjectKind::Secret, &all, true, filters);
        assert_eq!(
            q(vec![]),
            "s1bbbbbbbbbbbbbbbbbbbbbbb\ns2aaaaaaaaaaaaaaaaaaaaaaa\n"
        );
        assert_eq!(
            q(vec![ObjectFilter::Name("web".into())]),
            "s2aaaaaaaaaaaaaaaaaaaaaaa\n"
        );
        assert_eq!(
            q(vec![
                ObjectFilter::Name("web".into()),
                ObjectFilter::Id("s1".into())
            ]),
            "s1bbbbbbbbbbbbbbbbbbbbbbb\ns2aaaaaaaaaaaaaaaaaaaaaaa\n",
            "names and IDs: any"
        );
        assert_eq!(
            q(vec![
                ObjectFilter::Id("s1".into()),
                ObjectFilter::Label {
                    key: "env".into(),
                    value: None
                }
            ]),
            "",
            "labels: all"
        );
    }

    #[test]
    fn inspect_has_dockers_shape_and_a_secret_no_data() {
        let secret = object("s1", "db", &[("env", "prod")], None);
        let shaped = docker_shape(ObjectKind::Secret, &secret);
        assert_eq!(
            shaped,
            serde_json::json!({
                "ID": "s1",
                "Version": { "Index": 1 },
                "CreatedAt": "2026-11-23T07:23:11Z",
                "UpdatedAt": "2026-11-23T07:24:36Z",
                "Spec": { "Name": "db", "Labels": { "env": "prod" } },
            })
        );
        let config = object("c1", "app.conf", &[], Some(b"port=80\n"));
        assert_eq!(
            docker_shape(ObjectKind::Config, &config)["Spec"],
            serde_json::json!({ "Name": "app.conf", "Labels": {}, "Data": "cG9ydD04MAo=" })
        );
        assert_eq!(
            pretty(ObjectKind::Secret, &[secret]),
            "ID:              s1\nName:              db\nLabels:\n - env=prod\n\
             Driver:            \nCreated at:        2026-11-23 07:23:11 +0000 UTC\n\
             Updated at:        2026-11-23 07:24:36 +0000 UTC\n"
        );
        let shown = pretty(ObjectKind::Config, &[config]);
        assert!(shown.ends_with("Data:\nport=80\n\n"), "{shown}");
    }

    #[test]
    fn base64_and_go_times_are_gos() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(
            go_time(1_795_418_681_500),
            "2026-11-23 07:24:41.5 +0000 UTC"
        );
    }
}
