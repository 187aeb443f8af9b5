//! `shoal volume create | ls | inspect | rm`: this node's volumes, with Docker's columns, JSON
//! shape and messages.

use shoal_control::{
    api::{CreateVolumeRequest, Empty, KeyValue, RemoveVolumeRequest, VolumeInfo, VolumeRef},
    wire_limits::agent_client,
};

use crate::{
    cli::{
        OutputFormat,
        volume::{VolumeCommand, VolumeFilter, VolumeLsArgs},
    },
    client::{status_error, with_agent},
    table,
    time_format::rfc3339,
};

pub fn run(host: &str, command: VolumeCommand) -> anyhow::Result<()> {
    with_agent(host, async |channel| {
        let mut agent = agent_client(channel);
        match command {
            VolumeCommand::Create(args) => {
                let request = CreateVolumeRequest {
                    name: args.name.unwrap_or_default(),
                    labels: args
                        .labels
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value })
                        .collect(),
                };
                let volume = agent
                    .create_volume(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                println!("{}", volume.name);
                Ok(())
            }
            VolumeCommand::Ls(args) => {
                let volumes = agent
                    .list_volumes(Empty {})
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .volumes;
                print!("{}", render_list(&volumes, &args));
                Ok(())
            }
            VolumeCommand::Inspect(args) => {
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for name in args.names {
                    match agent.inspect_volume(VolumeRef { name }).await {
                        Ok(volume) => found.push(docker_shape(&volume.into_inner())),
                        Err(status) => failures.push(status_error(status)),
                    }
                }
                if !found.is_empty() || failures.is_empty() {
                    println!("{}", serde_json::to_string_pretty(&found)?);
                }
                last_of(failures)
            }
            VolumeCommand::Rm(args) => {
                let mut failures = Vec::new();
                for name in args.names {
                    let request = RemoveVolumeRequest {
                        name: name.clone(),
                        force: args.force,
                    };
                    match agent.remove_volume(request).await {
                        Ok(_) => println!("{name}"),
                        Err(status) => failures.push(status_error(status)),
                    }
                }
                last_of(failures)
            }
        }
    })
}

/// As Docker, a command over several volumes does what it can and reports each failure on a
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

fn render_list(volumes: &[VolumeInfo], args: &VolumeLsArgs) -> String {
    let mut shown: Vec<&VolumeInfo> = volumes
        .iter()
        .filter(|v| args.filters.iter().all(|f| matches(v, f)))
        .collect();
    shown.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        return shown.iter().map(|v| format!("{}\n", v.name)).collect();
    }
    match args.format {
        OutputFormat::Json => shown.iter().map(|v| format!("{}\n", ls_json(v))).collect(),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|v| vec![v.driver.clone(), v.name.clone()])
                .collect();
            table::render(&["DRIVER", "VOLUME NAME"], &rows)
        }
    }
}

fn matches(v: &VolumeInfo, filter: &VolumeFilter) -> bool {
    match filter {
        VolumeFilter::Dangling(dangling) => v.used_by.is_empty() == *dangling,
        VolumeFilter::Driver(driver) => v.driver == *driver,
        VolumeFilter::Label { key, value } => v
            .labels
            .iter()
            .any(|kv| kv.key == *key && value.as_ref().is_none_or(|value| kv.value == *value)),
        VolumeFilter::Name(part) => v.name.contains(part.as_str()),
    }
}

/// `docker volume ls --format json`: one object per line, labels as `k=v,k=v`.
fn ls_json(v: &VolumeInfo) -> serde_json::Value {
    let labels: Vec<String> = v
        .labels
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    serde_json::json!({
        "Driver": v.driver,
        "Labels": labels.join(","),
        "Links": "N/A",
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Scope": "local",
        "Size": "N/A",
    })
}

/// `docker volume inspect`'s shape.
fn docker_shape(v: &VolumeInfo) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = v
        .labels
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().into()))
        .collect();
    serde_json::json!({
        "CreatedAt": rfc3339(v.created_at_ms / 1000),
        "Driver": v.driver,
        "Labels": labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": {},
        "Scope": "local",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, labels: &[(&str, &str)], used_by: &[&str]) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            driver: "local".into(),
            mountpoint: format!("/var/lib/shoal/volumes/{name}/_data"),
            labels: labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            created_at_ms: 1_795_418_681_000,
            used_by: used_by.iter().map(|s| (*s).into()).collect(),
        }
    }

    fn ls(volumes: &[VolumeInfo], quiet: bool, filters: Vec<VolumeFilter>) -> String {
        let args = VolumeLsArgs {
            quiet,
            filters,
            format: OutputFormat::Table,
        };
        render_list(volumes, &args)
    }

    #[test]
    fn ls_has_dockers_columns_and_filters() {
        let all = [
            volume("web-data", &[("env", "prod")], &["task1"]),
            volume("cache", &[], &[]),
        ];
        assert_eq!(
            ls(&all, false, vec![]),
            "DRIVER   VOLUME NAME\nlocal    cache\nlocal    web-data\n"
        );
        assert_eq!(ls(&all, true, vec![]), "cache\nweb-data\n");
        assert_eq!(
            ls(&all, true, vec![VolumeFilter::Dangling(true)]),
            "cache\n"
        );
        let label = |key: &str, value: Option<&str>| VolumeFilter::Label {
            key: key.into(),
            value: value.map(Into::into),
        };
        assert_eq!(ls(&all, true, vec![label("env", None)]), "web-data\n");
        assert_eq!(ls(&all, true, vec![label("env", Some("dev"))]), "");
        assert_eq!(
            ls(&all, true, vec![VolumeFilter::Name("ach".into())]),
            "cache\n"
        );
        assert_eq!(
            ls(&[], false, vec![]),
            "DRIVER   VOLUME NAME\n",
            "an empty list still has its header"
        );
    }

    #[test]
    fn inspect_and_json_have_dockers_shape() {
        let v = volume("web-data", &[("env", "prod"), ("tier", "db")], &[]);
        assert_eq!(
            docker_shape(&v),
            serde_json::json!({
                "CreatedAt": "2026-11-23T07:24:41Z",
                "Driver": "local",
                "Labels": { "env": "prod", "tier": "db" },
                "Mountpoint": "/var/lib/shoal/volumes/web-data/_data",
                "Name": "web-data",
                "Options": {},
                "Scope": "local",
            })
        );
        assert_eq!(ls_json(&v)["Labels"], "env=prod,tier=db");
    }
}
